"""Where Kiln keeps data that several processes share: a folder, or a prefix of an S3 bucket (AWS, or any S3 API:
MinIO, SeaweedFS). Credentials and the endpoint come from the usual AWS variables (AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL_S3 or a settings' endpoint_url), never from a file of Kiln's.

An object is written whole or not at all in both: a folder writes it beside its name and renames it
(kiln.files), S3 makes a PUT visible only once it is complete.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from kiln.errors import InputError, ServiceError
from kiln.files import write_bytes_atomic

S3_URI = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:/(?P<prefix>.*))?$")


def is_s3(location: str | Path) -> bool:
    return str(location).startswith("s3://")


class Store(Protocol):
    """Keys are relative, '/'-separated paths under the store's root."""

    location: str

    def put(self, key: str, data: bytes) -> None: ...

    def get(self, key: str) -> bytes: ...

    def list_keys(self, prefix: str = "") -> list[str]: ...


@dataclass(frozen=True)
class FolderStore:
    root: Path

    @property
    def location(self) -> str:
        return str(self.root)

    def put(self, key: str, data: bytes) -> None:
        write_bytes_atomic(self.root / key, data)

    def get(self, key: str) -> bytes:
        return (self.root / key).read_bytes()

    def list_keys(self, prefix: str = "") -> list[str]:
        base = self.root / prefix if prefix.endswith("/") else self.root
        if not base.is_dir():
            return []
        found = (p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file())
        return sorted(k for k in found if k.startswith(prefix) and not Path(k).name.startswith("."))


class S3Store:
    def __init__(self, uri: str, endpoint_url: str | None = None) -> None:
        m = S3_URI.match(uri)
        if not m:
            raise InputError(f"{uri}: not an S3 location", hint="s3://BUCKET or s3://BUCKET/PREFIX")
        self.location, self.bucket = uri.rstrip("/"), m.group("bucket")
        self.prefix = (m.group("prefix") or "").strip("/")
        self.endpoint_url = endpoint_url
        self._client: Any = None

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3

            self._client = boto3.client("s3", endpoint_url=self.endpoint_url)
        return self._client

    def put(self, key: str, data: bytes) -> None:
        self._call("write", key, lambda: self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data))

    def get(self, key: str) -> bytes:
        body: bytes = self._call("read", key, lambda: self.client.get_object(
            Bucket=self.bucket, Key=self._key(key))["Body"].read())
        return body

    def list_keys(self, prefix: str = "") -> list[str]:
        def listed() -> list[str]:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                          Prefix=self._key(prefix))
            cut = len(self.prefix) + 1 if self.prefix else 0
            return sorted(o["Key"][cut:] for page in pages for o in page.get("Contents", []))

        found: list[str] = self._call("list", prefix, listed)
        return found

    def _call(self, what: str, key: str, action: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return action()
        except (BotoCoreError, ClientError) as exc:
            raise ServiceError(f"S3: cannot {what} {self.location}/{key}: {exc}",
                               hint="check the bucket and the AWS_* variables (AWS_ENDPOINT_URL_S3 for an S3 API "
                                    "other than AWS)") from None


def open_store(location: str | Path, endpoint_url: str | None = None) -> FolderStore | S3Store:
    """The store at ``location``: an s3:// URI, or a folder."""
    return S3Store(str(location), endpoint_url) if is_s3(location) else FolderStore(Path(location))


def read_object(location: str | Path, endpoint_url: str | None = None) -> bytes:
    """The bytes of one file: a path, or s3://BUCKET/KEY."""
    if not is_s3(location):
        return Path(location).read_bytes()
    m = S3_URI.match(str(location))
    if not m or not m.group("prefix"):
        raise InputError(f"{location}: not an S3 object", hint="s3://BUCKET/KEY")
    return S3Store(f"s3://{m.group('bucket')}", endpoint_url).get(m.group("prefix"))

