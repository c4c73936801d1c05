"""Replays a dataset through an endpoint as live traffic, one instance per request at a steady rate.

Rows come from a feature table (every model input is a column), or are built from a dataset's labels with the
feature service's point-in-time retrieval, so each request carries the features the service would have served
at that label's time. A log of what was sent (inference id, entity id, label) lets ground truth be joined to
the captured predictions later.
"""

from __future__ import annotations

import asyncio
import math
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln import tracking
from kiln.errors import InputError
from kiln.features.training import build_training_set
from kiln.progress import Progress, no_progress
from kiln.serving.local import _front, endpoints_dir, feature_lookup, read_state
from kiln.workspace import Workspace

if TYPE_CHECKING:
    import pandas as pd

CONCURRENCY = 32  # requests in flight at most; a slow endpoint makes the replay fall behind, not pile up


@dataclass(frozen=True)
class ReplayReport:
    """A dataset sent through an endpoint (`kiln endpoint replay`): what came back, and the log of what was sent."""

    endpoint: str
    replay: str  # the run's name; each request's inference id starts with it
    rows: int
    seconds: float
    requests_per_s: float | None
    statuses: dict[str, int]  # HTTP status (0: no answer) -> requests
    variants: dict[str, int]  # variant -> requests it answered with 200
    p50_ms: float | None  # over the requests answered with 200; None when there were none
    p99_ms: float | None
    log: Path  # the sent-requests log (parquet): inference id, status, variant, latency and the non-input columns

    def to_dict(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "replay": self.replay, "rows": self.rows, "seconds": self.seconds,
                "requests_per_s": self.requests_per_s, "statuses": self.statuses, "variants": self.variants,
                "p50_ms": self.p50_ms, "p99_ms": self.p99_ms, "log": str(self.log)}


def model_inputs(ws: Workspace, model: str) -> list[str]:
    from mlflow.models import get_model_info

    tracking.client(ws)
    signature = get_model_info(model).signature
    if signature is None or signature.inputs is None:
        raise InputError(f"{model} has no input signature; replay needs the model's feature names")
    return list(signature.inputs.input_names())


def feature_rows(ws: Workspace, model: str, data: Path, inputs: list[str]) -> "pd.DataFrame":
    """The rows to send: a feature table as it is, or a dataset's labels joined with point-in-time features."""
    import pandas as pd

    if not data.exists():
        raise InputError(f"--data {data}: no such file or folder")
    columns: list[str] = []
    if data.is_file() and data.suffix in (".parquet", ".csv"):
        try:
            frame = pd.read_csv(data) if data.suffix == ".csv" else pd.read_parquet(data)
        except Exception as exc:  # noqa: BLE001 - any reader failure means an unreadable file
            raise InputError(f"--data {data}: unreadable: {exc}") from None
        if set(inputs) <= set(frame.columns):
            return frame
        columns = list(frame.columns)
    lookup = feature_lookup(ws, model)
    if lookup is None:
        raise InputError(f"--data {data}: not a feature table (missing column(s) "
                         f"{', '.join(sorted(set(inputs) - set(columns))) or 'all'}), and {model} was not trained "
                         "on a feature service that could build them")

    with tempfile.TemporaryDirectory(prefix="kiln-replay-") as tmp:
        built = build_training_set(ws, data, lookup.service, Path(tmp) / "features.parquet")
        frame = pd.read_parquet(built.path)
    missing = sorted(set(inputs) - set(frame.columns))
    if missing:
        raise InputError(f"feature service {lookup.service} lacks the model input(s) {', '.join(missing)}")
    return frame


def _plain(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value.item() if hasattr(value, "item") else value


async def _send(url: str, bodies: list[dict[str, Any]], ids: list[str], rps: float,
                progress: Progress) -> list[tuple[int, str, float]]:
    import httpx

    results: list[tuple[int, str, float]] = [(0, "", 0.0)] * len(bodies)
    gate = asyncio.Semaphore(CONCURRENCY)
    start = time.perf_counter()
    step = max(1, len(bodies) // 10)

    async def one(client: httpx.AsyncClient, i: int) -> None:
        await asyncio.sleep(max(0.0, start + i / rps - time.perf_counter()))
        async with gate:
            t0 = time.perf_counter()
            try:
                res = await client.post(url, json=bodies[i], headers={"x-kiln-inference-id": ids[i]})
                results[i] = (res.status_code, res.headers.get("x-kiln-variant", ""),
                              (time.perf_counter() - t0) * 1000)
            except httpx.HTTPError:
                results[i] = (0, "", (time.perf_counter() - t0) * 1000)
        if (i + 1) % step == 0:
            progress(f"sent {i + 1}/{len(bodies)}")

    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        await asyncio.gather(*(one(client, i) for i in range(len(bodies))))
    return results


def replay(ws: Workspace, name: str, data: Path, limit: int | None = None, rps: float = 50.0,
           progress: Progress = no_progress) -> ReplayReport:
    import numpy as np
    import pandas as pd

    if rps <= 0:
        raise InputError(f"--rps {rps}: the rate must be above 0")
    if limit is not None and limit < 1:
        raise InputError(f"--limit {limit}: at least one row")
    state = read_state(ws, name)
    model = state.primary.model
    inputs = model_inputs(ws, model)
    frame = feature_rows(ws, model, data, inputs)
    if limit is not None:
        frame = frame.head(limit)
    if frame.empty:
        raise InputError(f"--data {data}: no rows to replay")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    run = f"replay-{stamp}-{uuid.uuid4().hex[:6]}"
    ids = [f"{run}-{i:06d}" for i in range(len(frame))]
    bodies = [{"instances": [{c: _plain(v) for c, v in zip(inputs, row)}]}
              for row in frame[inputs].itertuples(index=False, name=None)]
    url = f"{_front(ws, state)}/v1/models/{name}:predict"
    progress(f"replaying {len(bodies)} rows from {data} through {name} at {rps:g} requests/s")
    started = time.perf_counter()
    results = asyncio.run(_send(url, bodies, ids, rps, progress))
    seconds = time.perf_counter() - started
    log = pd.DataFrame({"inference_id": ids, "status": [r[0] for r in results],
                        "variant": [r[1] for r in results], "latency_ms": [round(r[2], 3) for r in results]})
    for column in [c for c in frame.columns if c not in inputs]:  # entity id, label time, label: for joins later
        log[column] = frame[column].to_numpy()
    folder = endpoints_dir(ws) / name / "replays"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{run}.parquet"
    log.to_parquet(path, index=False)
    answered = log[log["status"] == 200]
    latency = answered["latency_ms"].to_numpy()
    return ReplayReport(
        endpoint=name, replay=run, rows=len(log), seconds=round(seconds, 2),
        requests_per_s=round(len(log) / seconds, 1) if seconds else None,
        statuses={str(k): int(v) for k, v in log["status"].value_counts().sort_index().items()},
        variants={str(k): int(v) for k, v in answered["variant"].value_counts().items()},
        p50_ms=round(float(np.percentile(latency, 50)), 2) if len(latency) else None,
        p99_ms=round(float(np.percentile(latency, 99)), 2) if len(latency) else None,
        log=path,
    )
