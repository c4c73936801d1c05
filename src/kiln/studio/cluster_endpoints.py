"""The Endpoints pages on a cluster (serving type kserve): each endpoint as the API server holds it (variants, their
weights and readiness, the rollout controller's state, the endpoint's history; read only, nothing settled) and its
traffic from Prometheus, by the same queries the rollout controllers judge by. Prometheus is asked with a short
timeout: when it cannot answer, the figures are left empty and the page says why, rather than failing or waiting."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from kiln.serving import cluster
from kiln.serving.controller import VARIANT_LABEL, promql, server_promql
from kiln.serving.render import PREDICTOR_SUFFIX, isvc_name
from kiln.serving.window import Point
from kiln.settings import KServeServing
from kiln.studio.endpoints import EndpointDetail, EndpointRow, EndpointsPage, VariantView, capture_size
from kiln.workspace import Workspace

if TYPE_CHECKING:
    import httpx

PROMETHEUS_TIMEOUT = 2.0  # seconds Prometheus has to answer a page's queries
LAST_SECONDS = 60  # the figures beside each variant: its last minute, as `kiln endpoint status` reports locally
SERIES_SECONDS = 900  # the charts' span, as a local front keeps
STEP_SECONDS = 30  # one point of the charts
HISTORY_SHOWN = 50


async def cluster_endpoints_page(ws: Workspace) -> EndpointsPage:
    """Every endpoint in the serving namespace, by name."""
    names = await asyncio.to_thread(cluster.list_endpoints, ws)
    statuses = await asyncio.gather(*(asyncio.to_thread(cluster.endpoint_status, ws, n, False) for n in names))
    async with _client() as client:
        lasts = await asyncio.gather(*(_last_minute(client, ws, s) for s in statuses))
    return EndpointsPage([_row(s, stats, problem) for s, (stats, problem) in zip(statuses, lasts)])


async def cluster_endpoint_detail(ws: Workspace, name: str) -> EndpointDetail | None:
    """One endpoint with its traffic over the last 15 minutes; None when the namespace holds no such endpoint."""
    if name not in await asyncio.to_thread(cluster.list_endpoints, ws):
        return None
    status = await asyncio.to_thread(cluster.endpoint_status, ws, name, False)
    async with _client() as client:
        (stats, problem), (series, charted) = await asyncio.gather(_last_minute(client, ws, status),
                                                                   _series(client, ws, status))
    files, size = capture_size(ws, name)
    history = status.rollout.history if status.rollout else []
    return EndpointDetail(_row(status, stats, problem or charted, history=None), series, size, files, history)


def _row(status: cluster.ClusterStatus, stats: dict[str, dict[str, float | None]], problem: str | None,
         history: int | None = HISTORY_SHOWN) -> EndpointRow:
    rollout = status.rollout if status.rollout and not status.rollout.done else None
    candidate = rollout.candidate if rollout else status.requested
    variants = []
    for v in status.variants:
        role = "shadow" if v.role == "shadow" else "candidate" if v.name == candidate else "production"
        s = stats.get(v.name, {})
        variants.append(VariantView(v.name, v.model.removeprefix("models:/"), v.runtime, role,
                                    None if v.weight is None else v.weight / 100, s.get("requests_per_second"),
                                    None if s.get("errors") is None else round(s["errors"] or 0),
                                    s.get("p50_ms"), s.get("p99_ms")))
    unready = [f"{v.name}: {v.reason or 'not ready'}" for v in status.variants if v.ready != "True"]
    problems = [p for p in (problem, "; ".join(unready)) if p]
    text = (f"{rollout.phase}{' (paused)' if rollout.paused else ''}: {rollout.reason}" if rollout else
            f"{candidate} requested, no controller has taken it up yet" if candidate else None)
    entries = list(reversed(status.history))
    return EndpointRow(name=status.endpoint, url=status.url, answering=not unready, variants=variants, rollout=text,
                       history=entries[:history] if history else entries, problem="; ".join(problems) or None,
                       paused=bool(rollout and rollout.paused))


def _serving(ws: Workspace) -> KServeServing:
    serving = ws.settings.serving
    assert isinstance(serving, KServeServing)  # only asked on a cluster
    return serving


def _queries(ws: Workspace, status: cluster.ClusterStatus, window: float) -> tuple[dict[str, str], str,
                                                                                    dict[str, str]]:
    """The queries over ``window`` seconds, the label naming a variant in their answers, and label value -> variant."""
    serving, names = _serving(ws), [v.name for v in status.variants]
    if serving.metrics == "istio":
        keys = {f"{isvc_name(status.endpoint, n)}{PREDICTOR_SUFFIX}": n for n in names}
        return promql(list(keys), status.namespace, window, (50, 99)), "destination_service_name", keys
    return (server_promql(status.endpoint, names, status.namespace, window, (50, 99)), VARIANT_LABEL,
            {n: n for n in names})


async def _last_minute(client: httpx.AsyncClient, ws: Workspace, status: cluster.ClusterStatus
                       ) -> tuple[dict[str, dict[str, float | None]], str | None]:
    """Each variant's requests/s, errors and p50/p99 over the last minute, and why they are missing if they are."""
    queries, label, keys = _queries(ws, status, LAST_SECONDS)
    now = time.time()
    answers = await asyncio.gather(*(_prometheus(client, ws, "query", {"query": q, "time": f"{now:.3f}"})
                                     for q in queries.values()))
    problem = next((a for a in answers if isinstance(a, str)), None)
    if problem is not None:
        return {}, problem
    values: dict[str, dict[str, float]] = {}
    for metric, answer in zip(queries, answers):
        assert not isinstance(answer, str)
        for sample in answer.get("result", []):
            value = float(sample["value"][1])
            if not math.isnan(value):
                values.setdefault(keys.get(sample["metric"].get(label, ""), ""), {})[metric] = value
    out: dict[str, dict[str, float | None]] = {}
    for variant, v in values.items():
        out[variant] = {"requests_per_second": round(v.get("requests", 0.0) / LAST_SECONDS, 2),
                        "errors": v.get("errors", 0.0), "p50_ms": _ms(v.get("p50_ms")), "p99_ms": _ms(v.get("p99_ms"))}
    return out, None


async def _series(client: httpx.AsyncClient, ws: Workspace, status: cluster.ClusterStatus
                  ) -> tuple[dict[str, list[dict[str, Any]]], str | None]:
    """Each variant's answers over the last 15 minutes, one point every STEP_SECONDS, oldest first."""
    queries, label, keys = _queries(ws, status, STEP_SECONDS)
    end = time.time()  # the last point now: an endpoint a minute old has a point or two, not none
    params = {"start": f"{end - SERIES_SECONDS:.3f}", "end": f"{end:.3f}", "step": str(STEP_SECONDS)}
    answers = await asyncio.gather(*(_prometheus(client, ws, "query_range", {"query": q, **params})
                                     for q in queries.values()))
    problem = next((a for a in answers if isinstance(a, str)), None)
    if problem is not None:
        return {}, problem
    at: dict[str, dict[float, dict[str, float]]] = {}
    for metric, answer in zip(queries, answers):
        assert not isinstance(answer, str)
        for line in answer.get("result", []):
            variant = keys.get(line["metric"].get(label, ""), "")
            for t, raw in line.get("values", []):
                value = float(raw)
                if not math.isnan(value):
                    at.setdefault(variant, {}).setdefault(float(t), {})[metric] = value
    return {variant: [asdict(Point(round(end - t + STEP_SECONDS, 3), STEP_SECONDS, round(v.get("requests", 0.0)),
                                   round(v.get("errors", 0.0)), _ms(v.get("p50_ms")), _ms(v.get("p99_ms"))))
                      for t, v in sorted(points.items())]
            for variant, points in at.items() if variant}, None


def _ms(value: float | None) -> float | None:
    return None if value is None or math.isinf(value) else round(value, 3)


async def _prometheus(client: httpx.AsyncClient, ws: Workspace, api: str, params: Mapping[str, str]
                      ) -> dict[str, Any] | str:
    """Prometheus' answer's data, or why there is none."""
    import httpx

    url = _serving(ws).prometheus.rstrip("/")
    try:
        res = await client.get(f"{url}/api/v1/{api}", params=dict(params))
        body = res.json()
    except (httpx.HTTPError, ValueError) as exc:
        return f"Prometheus at {url} did not answer: {type(exc).__name__}: {exc}"
    if not isinstance(body, dict) or body.get("status") != "success":
        return f"Prometheus at {url} refused a query: {body.get('error') if isinstance(body, dict) else body}"
    return body.get("data") or {}


def _client() -> httpx.AsyncClient:
    import httpx

    return httpx.AsyncClient(timeout=PROMETHEUS_TIMEOUT, trust_env=False)
