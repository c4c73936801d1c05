"""`kiln doctor`: is every engine importable, every configured service reachable, the disk roomy?"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from kiln.connections import parse_redis, redis_client
from kiln.settings import Settings, load_settings

# (what it stands in for, distribution, module to import)
ENGINES: list[tuple[str, str, str]] = [
    ("Pipelines", "kfp", "kfp"),
    ("Endpoints", "kserve", "kserve"),
    ("Experiments, Model Registry", "mlflow", "mlflow"),
    ("Feature Store", "feast", "feast"),
    ("Model Monitor", "evidently", "evidently"),
    ("Automatic Model Tuning", "ray", "ray.tune"),
    ("ONNX runtime", "onnxruntime", "onnxruntime"),
    ("Neo compiler", "apache-tvm", "tvm"),
    ("Clarify explanations", "shap", "shap"),
    ("Clarify bias (cross-check)", "fairlearn", "fairlearn"),
    ("training", "scikit-learn", "sklearn"),
    ("training", "lightgbm", "lightgbm"),
    ("ONNX export", "onnx", "onnx"),
    ("Bayesian search", "optuna", "optuna"),
    ("data validation", "pandera", "pandera.pandas"),
]
MIN_FREE_GB = 5.0
IMPORT_TIMEOUT = 180.0


@dataclass
class Check:
    """One line of the doctor's report."""

    kind: str  # engine | service | disk | workspace
    name: str
    ok: bool
    detail: str
    version: str | None = None


_IMPORTER = """
import importlib, json, sys, warnings
warnings.simplefilter("ignore")
for module in sys.argv[1:]:
    print(json.dumps({"start": module}), flush=True)
    try:
        importlib.import_module(module)
    except BaseException as exc:
        print(json.dumps({"module": module, "error": f"{type(exc).__name__}: {exc}"}), flush=True)
    else:
        print(json.dumps({"module": module}), flush=True)
"""


def _import_in_child(modules: list[str]) -> dict[str, str | None]:
    """Import ``modules`` in order in fresh interpreters: {module: None if it imported, else why not}.

    Modules share one interpreter (so common dependencies load once); one that kills the
    interpreter is reported and the rest go on in a new one.
    """

    results: dict[str, str | None] = {}
    todo = list(modules)
    while todo:
        code: int | str
        try:
            proc = subprocess.run([sys.executable, "-c", _IMPORTER, *todo], capture_output=True, text=True,
                                  timeout=IMPORT_TIMEOUT)
            lines, code = proc.stdout.splitlines(), proc.returncode
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            lines, code = out.splitlines(), f"timeout after {IMPORT_TIMEOUT:.0f}s"
        current = None
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if "start" in record:
                current = record["start"]
            else:
                results[record["module"]] = record.get("error")
                current = None
        if current is not None:  # the interpreter died (or hung) importing this one
            results[current] = f"the interpreter died importing it ({code})"
        elif len(results) < len(modules) and code not in (0, None):
            results.update({m: f"not reached (exit {code})" for m in todo if m not in results})
        todo = [m for m in todo if m not in results]
    return results


def check_engines(progress: Callable[[Check], None] = lambda _: None) -> list[Check]:
    """Each engine: installed (with its version) and importable."""

    versions: dict[str, str | None] = {}
    for _, dist, _ in ENGINES:
        try:
            versions[dist] = version(dist)
        except PackageNotFoundError:
            versions[dist] = None
    modules = [module for _, dist, module in ENGINES if versions[dist]]
    groups = max(1, min(2, os.cpu_count() or 1))
    with ThreadPoolExecutor(groups) as pool:
        outcomes: dict[str, str | None] = {}
        for part in pool.map(_import_in_child, [modules[i::groups] for i in range(groups)]):
            outcomes.update(part)
    results = []
    for _, dist, module in ENGINES:
        if versions[dist] is None:
            check = Check("engine", dist, False, "not installed (run the README's set-up: `make setup`)")
        elif outcomes.get(module):
            check = Check("engine", dist, False, f"import {module} failed: {outcomes[module]}", versions[dist])
        else:
            check = Check("engine", dist, True, f"import {module} ok", versions[dist])
        progress(check)
        results.append(check)
    return results


def check_disk(path: Path) -> Check:
    while not path.exists():
        path = path.parent
    free = shutil.disk_usage(path).free / 1e9
    ok = free >= MIN_FREE_GB
    detail = f"{free:.1f} GB free at {path}" + ("" if ok else f"; Kiln needs at least {MIN_FREE_GB:.0f} GB: free some space")
    return Check("disk", "free disk", ok, detail)


def check_services(settings: Settings) -> list[Check]:
    """Each store and service the settings point at, reached the way Kiln will reach it."""
    s = settings
    checks = [_uri_check("MLflow tracking", s.mlflow.tracking_uri, health_path="/health")]
    online = s.features.online_store
    if online.type == "redis":
        checks.append(_redis_check("Feast online store (Redis)", online.connection_string))
    else:
        checks.append(_folder_check("Feast online store (SQLite)", Path(online.path).parent))
    registry = s.features.registry
    checks.append(_uri_check("Feast registry (SQL)", registry.path) if registry.type == "sql"
                  else _folder_check("Feast registry (file)", Path(registry.path).parent))
    for label, store in (("artifact store", s.artifacts), ("capture store", s.capture)):
        if store.type == "s3":
            checks.append(_uri_check(label + " (S3)", store.endpoint_url) if store.endpoint_url
                          else Check("service", label, True, f"{store.uri} on AWS S3 (not probed)"))
        else:
            checks.append(_folder_check(label, Path(store.path)))
    if s.ray.address != "local":
        checks.append(_uri_check("Ray cluster", s.ray.address))
    return checks


def _uri_check(name: str, uri: str, health_path: str = "") -> Check:
    parsed = urlparse(uri)
    scheme = parsed.scheme.split("+")[0]
    if scheme == "sqlite":
        # sqlite:///rel.db -> "rel.db"; sqlite:////abs.db -> "/abs.db"
        return _folder_check(name, Path(parsed.path[1:]).parent)
    if scheme in ("http", "https"):
        return _http_check(name, uri.rstrip("/") + health_path)
    if scheme in ("postgresql", "postgres"):
        return _postgres_check(name, uri)
    if parsed.hostname and parsed.port:
        return _tcp_check(name, parsed.hostname, parsed.port)
    return Check("service", name, False, f"cannot tell how to reach '{uri}'")


def _http_check(name: str, url: str) -> Check:
    import httpx

    try:
        resp = httpx.get(url, timeout=3.0)
    except httpx.HTTPError as exc:
        return Check("service", name, False, f"{url} unreachable: {exc}; start it (`kiln up` for local) or fix the URI")
    return Check("service", name, resp.status_code < 500, f"{url} answered {resp.status_code}")


def _tcp_check(name: str, host: str, port: int) -> Check:
    try:
        with socket.create_connection((host, port), timeout=3.0):
            pass
    except OSError as exc:
        return Check("service", name, False, f"{host}:{port} unreachable: {exc}")
    return Check("service", name, True, f"{host}:{port} accepts connections")


def _postgres_check(name: str, uri: str) -> Check:
    import psycopg2

    parsed = urlparse(uri)
    dsn = parsed._replace(scheme="postgresql").geturl()
    try:
        conn = psycopg2.connect(dsn, connect_timeout=3)
    except psycopg2.Error as exc:
        return Check("service", name, False, f"{parsed.hostname}:{parsed.port or 5432}: {str(exc).strip()}")
    with conn:
        version = conn.server_version
    conn.close()
    return Check("service", name, True, f"{parsed.hostname}:{parsed.port or 5432} database '{parsed.path.lstrip('/')}' "
                 f"(PostgreSQL {version // 10000}.{version % 100})")


def _redis_check(name: str, connection_string: str) -> Check:
    import redis

    where = "{host}:{port}".format(**parse_redis(connection_string))
    try:
        client = redis_client(connection_string)
        client.ping()
        version = client.info("server").get("redis_version", "?")
    except (redis.RedisError, ValueError) as exc:
        return Check("service", name, False, f"{where}: {exc}")
    return Check("service", name, True, f"{where} answers PING (Redis {version})")


def _folder_check(name: str, folder: Path) -> Check:
    probe = folder
    while not probe.exists():
        probe = probe.parent
    if os.access(probe, os.W_OK):
        return Check("service", name, True, f"{folder} (embedded, writable)")
    return Check("service", name, False, f"{folder} is not writable: fix its permissions or the path in kiln.yaml")


@dataclass
class Diagnosis:
    """Every check `kiln doctor` made; ``ok`` when none failed."""

    ok: bool
    checks: list[Check]

    @property
    def problems(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]


def diagnose(root: Path | None, progress: Callable[[Check], None] = lambda _: None,
             engines: Callable[[], Any] = contextlib.nullcontext) -> Diagnosis:
    """Engines, then the services the workspace at ``root`` configures (the local defaults where there is none), then
    free disk; ``progress`` hears of each check as it is made, ``engines`` wraps the slow engine imports."""
    with engines():
        checks = check_engines(progress)
    if root is None:
        settings = load_settings(Path.cwd())
        note = Check("workspace", "workspace", True, "none found; checking the local profile's defaults here")
    else:
        settings = load_settings(root)
        note = Check("workspace", "workspace", True, f"{root} (profile {settings.profile})")
    progress(note)
    rest = [*check_services(settings), check_disk(settings.workspace)]
    for check in rest:
        progress(check)
    everything = [note, *checks, *rest]
    return Diagnosis(all(c.ok for c in everything), everything)
