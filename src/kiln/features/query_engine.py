"""The DuckDB connection Feast's offline store queries with, able to read an offline store on S3.

Feast's DuckDB offline store reads every FileSource through ibis's default backend. Kiln makes that backend
a DuckDB connection that finds the httpfs extension in the installed `duckdb-ext-httpfs` package (nothing is
downloaded at run time) and, for an s3:// store, holds an S3 secret built from the same credentials boto3
finds (the AWS_* variables, a profile, a pod's web identity) and the store's endpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import duckdb_ext

from kiln.errors import EnvironmentProblem, ServiceError
from kiln.settings import FileOfflineStore
from kiln.storage import is_s3

_configured: tuple[Any, ...] | None = None


def extension_directory() -> Path:
    return Path(next(iter(duckdb_ext.__path__))) / "extensions"


def use_offline_store(offline: FileOfflineStore) -> None:
    """Make ibis's default backend a DuckDB connection that can read ``offline``; kept while nothing changes."""
    global _configured
    import ibis

    secret = _s3_secret(offline) if is_s3(offline.path) else None
    wanted = (offline.path, offline.endpoint_url, secret)
    if _configured == wanted and ibis.options.default_backend is not None:
        return
    con = ibis.duckdb.connect(extension_directory=str(extension_directory()), autoinstall_known_extensions=False)
    if secret is not None:
        try:
            con.load_extension("httpfs")
            con.raw_sql(secret)
        except Exception as exc:  # noqa: BLE001 - the message must not carry the secret's text back to the user
            raise EnvironmentProblem(f"DuckDB cannot open the S3 offline store {offline.path}: "
                                     f"{type(exc).__name__}", hint="check the duckdb and duckdb-ext-httpfs "
                                     "installs; both are pinned to the same DuckDB release") from None
    ibis.options.default_backend = con
    _configured = wanted


def _s3_secret(offline: FileOfflineStore) -> str:
    """CREATE SECRET for the store: boto3's credentials and region, the endpoint of settings or AWS_ENDPOINT_URL_S3."""
    import boto3

    session = boto3.Session()
    credentials = session.get_credentials()
    if credentials is None:
        raise ServiceError(f"no S3 credentials for the offline store {offline.path}",
                           hint="set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or a profile)")
    frozen = credentials.get_frozen_credentials()
    fields = {"TYPE": "s3", "KEY_ID": frozen.access_key, "SECRET": frozen.secret_key,
              "REGION": session.region_name or "us-east-1"}
    if frozen.token:
        fields["SESSION_TOKEN"] = frozen.token
    endpoint = offline.endpoint_url or session.client("s3").meta.endpoint_url
    parts = urlsplit(endpoint)
    if parts.hostname and not parts.hostname.endswith("amazonaws.com"):
        # An S3 API other than AWS (MinIO, SeaweedFS): its host and port, path-style buckets.
        fields.update(ENDPOINT=parts.netloc, URL_STYLE="path", USE_SSL=str(parts.scheme == "https").lower())
    body = ", ".join(f"{k} {v}" if k in ("TYPE", "USE_SSL") else f"{k} '{_quoted(v)}'" for k, v in fields.items())
    return f"CREATE OR REPLACE SECRET kiln_offline_store ({body})"


def _quoted(value: str) -> str:
    return value.replace("'", "''")
