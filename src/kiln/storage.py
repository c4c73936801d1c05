"""Where Kiln keeps data that several processes share: a folder, or a prefix of an S3 bucket (AWS, or any S3 API:
MinIO, SeaweedFS). Credentials and the endpoint come from the usual AWS variables (AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL_S3 or a settings' endpoint_url), never from a file of Kiln's.

An object is written whole or not at all in both: a folder writes it beside its name and renames it
(kiln.files), S3 makes a PUT visible only once it is complete.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
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

    @property
    def location(self) -> str: ...

    def put(self, key: str, data: bytes) -> None: ...

    def get(self, key: str) -> bytes: ...

    def list_keys(self, prefix: str = "") -> list[str]: ...

    def exists(self, key: str) -> bool: ...

    def copy(self, source: str, target: str) -> None:
        """Replace ``target`` with ``source``'s content in one step; ``source`` stays."""

    def move(self, source: str, target: str) -> None:
        """Replace ``target`` with ``source`` in one step; ``source`` is gone afterwards."""

    def delete(self, key: str) -> None:
        """Remove one object; one that is not there is not an error."""

    def delete_prefix(self, prefix: str) -> None:
        """Remove every object under ``prefix`` (ending in '/')."""

    def put_file(self, key: str, path: Path, once: bool = False, move: bool = False) -> bool:
        """Store the file at ``path`` as ``key`` in one step (a large one without reading it into memory); with
        ``once``, only if ``key`` is not there yet; with ``move``, ``path`` is gone afterwards. Whether it was
        stored."""

    def get_file(self, key: str, path: Path) -> None:
        """Write object ``key`` to ``path`` (a large one without holding it in memory)."""


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

    def exists(self, key: str) -> bool:
        return (self.root / key).is_file()

    def copy(self, source: str, target: str) -> None:
        src, dst = self.root / source, self.root / target
        dst.parent.mkdir(parents=True, exist_ok=True)
        stage = dst.with_name(f".{dst.name}.tmp-{uuid.uuid4().hex[:8]}")
        try:
            try:
                os.link(src, stage)  # objects are only ever replaced, never changed in place: a link is a copy
            except OSError:
                shutil.copy2(src, stage)
            os.replace(stage, dst)
        finally:
            stage.unlink(missing_ok=True)

    def move(self, source: str, target: str) -> None:
        dst = self.root / target
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.root / source, dst)
        self._prune((self.root / source).parent)

    def delete(self, key: str) -> None:
        (self.root / key).unlink(missing_ok=True)
        self._prune((self.root / key).parent)

    def delete_prefix(self, prefix: str) -> None:
        shutil.rmtree(self.root / prefix, ignore_errors=True)
        self._prune((self.root / prefix).parent)

    def put_file(self, key: str, path: Path, once: bool = False, move: bool = False) -> bool:
        dst = self.root / key
        dst.parent.mkdir(parents=True, exist_ok=True)
        stage = dst.with_name(f".{dst.name}.tmp-{uuid.uuid4().hex[:8]}")
        try:
            try:
                if not move:
                    raise OSError
                os.replace(path, stage)  # on the store's own file system: no copy of a large file
            except OSError:
                shutil.copyfile(path, stage)
                if move:
                    path.unlink()
            if not once:
                os.replace(stage, dst)
                return True
            try:
                os.link(stage, dst)  # fails when the key exists: the first writer wins, whole
            except FileExistsError:
                return False
            return True
        finally:
            stage.unlink(missing_ok=True)

    def get_file(self, key: str, path: Path) -> None:
        shutil.copyfile(self.root / key, path)

    def _prune(self, folder: Path) -> None:
        """Remove ``folder`` and its parents while they are empty, up to the root: a store has no empty folders."""
        while folder != self.root and folder.is_relative_to(self.root):
            try:
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent


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

    def exists(self, key: str) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise self._error("read", key, exc) from None
        except BotoCoreError as exc:  # no answer at all
            raise self._error("read", key, exc) from None

    def copy(self, source: str, target: str) -> None:
        # A server-side copy: the new object appears whole, as a PUT does.
        self._call("copy", source, lambda: self.client.copy_object(
            Bucket=self.bucket, Key=self._key(target), CopySource={"Bucket": self.bucket, "Key": self._key(source)}))

    def move(self, source: str, target: str) -> None:
        self.copy(source, target)
        self.delete(source)

    def delete(self, key: str) -> None:
        self._call("delete", key, lambda: self.client.delete_object(Bucket=self.bucket, Key=self._key(key)))

    def delete_prefix(self, prefix: str) -> None:
        keys = self.list_keys(prefix)
        for i in range(0, len(keys), 1000):  # DeleteObjects takes at most 1,000 keys
            batch = [{"Key": self._key(k)} for k in keys[i:i + 1000]]
            self._call("delete", prefix, lambda b=batch: self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": b, "Quiet": True}))

    def put_file(self, key: str, path: Path, once: bool = False, move: bool = False) -> bool:
        # once: S3 objects appear whole, and a key written is not written again (checked first: a writer that finds
        # it there leaves it; two writers at the same moment would both write, which callers avoid)
        if once and self.exists(key):
            return False
        self._call("write", key, lambda: self.client.upload_file(str(path), self.bucket, self._key(key)))
        if move:
            path.unlink()
        return True

    def get_file(self, key: str, path: Path) -> None:
        self._call("read", key, lambda: self.client.download_file(self.bucket, self._key(key), str(path)))

    def _call(self, what: str, key: str, action: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return action()
        except (BotoCoreError, ClientError) as exc:
            raise self._error(what, key, exc) from None

    def _error(self, what: str, key: str, exc: Exception) -> ServiceError:
        return ServiceError(f"S3: cannot {what} {self.location}/{key}: {exc}",
                            hint="check the bucket and the AWS_* variables (AWS_ENDPOINT_URL_S3 for an S3 API "
                                 "other than AWS)")


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

