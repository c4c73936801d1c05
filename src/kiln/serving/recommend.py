"""Inference Recommender: a model version load-tested on each runtime it can use, at one and more replicas, and
the configuration with the fewest cores that meets a latency goal at the rate asked for.

Each configuration runs as its endpoint would: REPLICAS model servers of the runtime, each its own process (one
core at full load), behind a front (kiln.serving.app) sharing requests equally among them; all on loopback,
started for the test and stopped after it. Its curve is measured with wrk (kiln.serving.loadtest) at a rising
number of connections, one-row requests. With a rate asked for, one more test offers that rate; without one, a
configuration's capacity is the highest throughput whose p99 meets the goal. KServe's request batcher runs in
KServe's agent beside the model server in a cluster, which cannot run here: batching is not among the
configurations tried.
"""

from __future__ import annotations

import base64
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any

from kiln.errors import InputError, KilnError
from kiln.files import write_json_atomic
from kiln.process import free_ports, start_all, stop_all
from kiln.progress import Progress, no_progress
from kiln.registry.versions import get_version
from kiln.serving.bundles import bundle_for, host_target
from kiln.serving.loadtest import LoadResult, load_test, wrk_path
from kiln.serving.local import endpoints_dir, missing_graph, router_service, serving_host, variant_service
from kiln.serving.runtimes import RUNTIMES, get_runtime
from kiln.workspace import Workspace

CONNECTIONS = (1, 2, 4, 8, 16)
RATE_CONNECTIONS = 16  # a rate is offered over up to this many connections, so a slow answer holds back little of it
BASE_PORT = 18900
# wrk pauses each connection between requests to hold a rate, and its timers make it send about 5% less than asked
# of a server that keeps up; one that does not keep up answers far less, with its latency rising
KEPT = 0.9


@dataclass(frozen=True)
class Trial:
    """One configuration and what it did: its curve, the test at the rate asked for, and whether it meets the goal."""

    runtime: str
    replicas: int
    cores: int
    curve: list[LoadResult]
    at_rate: LoadResult | None
    capacity_rps: float  # the highest throughput measured with p99 within the goal and nothing failed (0: none)
    meets: bool
    why: str  # what decided ``meets``

    @property
    def name(self) -> str:
        return f"{self.runtime} x{self.replicas}"


@dataclass(frozen=True)
class Recommendation:
    """`kiln endpoint recommend`: every configuration tried, the one chosen (None when none meets the goal), a
    ready endpoint spec for it, and where the report, plot and spec were written."""

    model: str
    p99_ms: float
    rps: float | None
    trials: list[Trial]
    chosen: Trial | None
    skipped: dict[str, str]  # runtime -> why it was not tried
    spec: dict[str, Any] | None
    outputs: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "p99_ms": self.p99_ms, "rps": self.rps,
                "trials": [{**asdict(t), "name": t.name} for t in self.trials],
                "chosen": self.chosen.name if self.chosen else None, "skipped": self.skipped, "spec": self.spec,
                "outputs": self.outputs}


def recommend(ws: Workspace, model: str, p99_ms: float, rps: float | None = None,
              runtimes: list[str] | None = None, replicas: list[int] | None = None, seconds: float = 3.0,
              connections: tuple[int, ...] = CONNECTIONS, progress: Progress = no_progress) -> Recommendation:
    """Load-test ``model`` (models:/NAME@ALIAS or /VERSION) per runtime and replica count; choose the fewest cores
    meeting ``p99_ms`` at ``rps`` (or at any rate, without one)."""
    if p99_ms <= 0:
        raise InputError(f"--p99-ms {p99_ms}: give a latency goal above 0 ms")
    if rps is not None and rps <= 0:
        raise InputError(f"--rps {rps}: give a rate above 0 requests/s")
    counts = sorted(set(replicas or [1, 2]))
    if not counts or counts[0] < 1 or counts[-1] > 4:
        raise InputError(f"--replicas {counts}: give counts from 1 to 4")
    wrk_path()
    info = get_version(ws, model)
    pinned = f"models:/{info.name}/{info.version}"
    wanted = runtimes or list(RUNTIMES)
    for name in wanted:
        get_runtime(name)
    skipped: dict[str, str] = {}
    artifacts: dict[str, str | None] = {}
    for name in wanted:
        missing = missing_graph(ws, pinned, name)
        why = f"{missing} has no ONNX graph" if missing else None
        if why is None and get_runtime(name).serves_bundle:
            try:
                artifacts[name] = bundle_for(ws, pinned, host_target(), progress)
            except KilnError as exc:
                why = f"cannot be compiled: {exc.message}"
        if why is not None:
            skipped[name] = why
            progress(f"{name}: not tried ({why})")
        else:
            artifacts.setdefault(name, None)
    row = _example_row(ws, pinned)
    trials = []
    for name in artifacts:
        for n in counts:
            trials.append(_trial(ws, info.name, pinned, name, artifacts[name], n, row, p99_ms, rps, seconds,
                                 connections, progress))
    meeting = [t for t in trials if t.meets]
    chosen = min(meeting, key=lambda t: (t.cores, -t.capacity_rps)) if meeting else None
    spec = _spec(info.name, pinned, chosen) if chosen else None
    result = Recommendation(model=pinned, p99_ms=p99_ms, rps=rps, trials=trials, chosen=chosen, skipped=skipped,
                            spec=spec)
    return _written(ws, result)


def _example_row(ws: Workspace, pinned: str) -> bytes:
    """One V1 request: a row of the version's input columns, each missing (the encoder fills them as in training)."""
    import mlflow.models

    schema = mlflow.models.get_model_info(pinned).signature
    names = [c.name for c in schema.inputs] if schema is not None else []
    if not names:
        raise InputError(f"{pinned} has no input schema: the recommender cannot make a request for it")
    return json.dumps({"instances": [dict.fromkeys(names)]}).encode()


def _trial(ws: Workspace, name: str, pinned: str, runtime: str, artifact: str | None, replicas: int, row: bytes,
           p99_ms: float, rps: float | None, seconds: float, connections: tuple[int, ...],
           progress: Progress) -> Trial:
    host = serving_host(ws)
    ports = free_ports(host, BASE_PORT, replicas + 1)
    label = f"recommend-{name}"
    servers = [variant_service(ws, label, f"{runtime}-{i + 1}", pinned, p, runtime, artifact)
               for i, p in enumerate(ports[1:])]
    config = endpoints_dir(ws) / label / f"router-{runtime}-{replicas}.json"
    config.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(config, {"endpoint": label, "variants": {s.name: s.url for s in servers},
                               "shares": {s.name: 1.0 for s in servers}})
    front = router_service(ws, label, ports[0], config, name=f"{label}-front")
    url = f"http://{host}:{ports[0]}/v1/models/{label}:predict"
    everything = [*servers, front]
    progress(f"{runtime} x{replicas}: starting {replicas} model server(s) and a front")
    try:
        start_all(ws.state_dir, servers, progress)
        start_all(ws.state_dir, [front], progress)
        curve = []
        for c in connections:
            progress(f"{runtime} x{replicas}: {c} connection(s) for {seconds:g} s")
            curve.append(load_test(url, row, seconds, c, warm_seconds=1.0))
        at_rate = None
        if rps is not None:
            progress(f"{runtime} x{replicas}: {rps:g} requests/s offered for {seconds:g} s")
            # each connection sends at least 40 requests, so the rate is not cut to whole requests per connection
            spread = max(1, min(RATE_CONNECTIONS, int(rps * seconds / 40)))
            at_rate = load_test(url, row, seconds, spread, rate=rps, warm_seconds=1.0,
                                answer_ms=curve[0].p50_ms if curve else 0.0)
    finally:
        stop_all(ws.state_dir, everything)
        config.unlink(missing_ok=True)
    within = [p for p in curve if p.p99_ms <= p99_ms and p.failures == 0]
    capacity = max((p.requests_per_second for p in within), default=0.0)
    if at_rate is not None:
        assert rps is not None
        kept = at_rate.requests_per_second >= KEPT * rps
        meets = kept and at_rate.p99_ms <= p99_ms and at_rate.failures == 0
        why = (f"at {rps:g}/s offered: {at_rate.requests_per_second:.0f}/s answered, p99 {at_rate.p99_ms:.1f} ms, "
               f"{at_rate.failures} failed")
    else:
        meets = capacity > 0
        why = f"up to {capacity:.0f}/s with p99 within {p99_ms:g} ms" if meets else \
            f"p99 over {p99_ms:g} ms at every load tried"
    return Trial(runtime, replicas, replicas, curve, at_rate, round(capacity, 1), meets, why)


def _spec(name: str, pinned: str, chosen: Trial) -> dict[str, Any]:
    """The endpoint spec serving ``pinned`` as chosen: one production variant per replica, shares equal."""
    variants = [{"name": "primary" if i == 0 else f"primary-{i + 1}", "model": pinned, "runtime": chosen.runtime,
                 "weight": 1} for i in range(chosen.replicas)]
    return {"name": name, "variants": variants}


def _written(ws: Workspace, result: Recommendation) -> Recommendation:
    """The table and plot (PNG, and an HTML page holding both), the spec (YAML) and the result (JSON), under the
    workspace's reports folder."""
    import yaml

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    folder = ws.folder("reports") / "recommend" / f"{result.model.removeprefix('models:/').replace('/', '-v')}-{stamp}"
    folder.mkdir(parents=True, exist_ok=True)
    outputs = {"png": str(folder / "latency.png"), "html": str(folder / "report.html"),
               "json": str(folder / "recommendation.json")}
    _plot(result, Path(outputs["png"]))
    Path(outputs["html"]).write_text(_html(result, Path(outputs["png"])))
    if result.spec is not None:
        outputs["spec"] = str(folder / "endpoint.yaml")
        Path(outputs["spec"]).write_text(yaml.safe_dump(result.spec, sort_keys=False))
    done = Recommendation(**{**result.__dict__, "outputs": outputs})
    write_json_atomic(Path(outputs["json"]), done.to_dict())
    return done


def _plot(result: Recommendation, path: Path) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for t in result.trials:
        ax.plot([p.requests_per_second for p in t.curve], [p.p99_ms for p in t.curve], marker="o",
                linewidth=2.5 if t is result.chosen else 1.2, label=t.name + ("  (chosen)" if t is result.chosen else ""))
    ax.axhline(result.p99_ms, color="crimson", linestyle="--", label=f"p99 goal {result.p99_ms:g} ms")
    if result.rps is not None:
        ax.axvline(result.rps, color="grey", linestyle=":", label=f"rate asked {result.rps:g}/s")
    ax.set_xlabel("requests per second answered")
    ax.set_ylabel("p99 latency (ms)")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_title(f"{result.model}: latency against throughput, one-row requests")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _html(result: Recommendation, png: Path) -> str:
    rows = "".join(
        f"<tr{' class=chosen' if t is result.chosen else ''}><td>{escape(t.name)}</td><td>{t.cores}</td>"
        f"<td>{t.capacity_rps:.0f}</td><td>{'yes' if t.meets else 'no'}</td><td>{escape(t.why)}</td></tr>"
        for t in result.trials)
    chosen = f"<p>Recommended: <b>{escape(result.chosen.name)}</b> ({result.chosen.cores} core(s)).</p>" \
        if result.chosen else "<p>No configuration tried meets the goal.</p>"
    skipped = "".join(f"<li>{escape(k)}: {escape(v)}</li>" for k, v in result.skipped.items())
    image = base64.b64encode(png.read_bytes()).decode()
    goal = f"p99 within {result.p99_ms:g} ms" + (f" at {result.rps:g} requests/s" if result.rps else "")
    return (f"<!doctype html><html><head><meta charset=utf-8><title>Inference Recommender: {escape(result.model)}"
            "</title><style>body{font-family:sans-serif;margin:2em}td,th{padding:4px 10px;border-bottom:1px solid #ddd}"
            ".chosen{background:#e6f4ea}</style></head><body>"
            f"<h1>Inference Recommender: {escape(result.model)}</h1><p>Goal: {goal}.</p>{chosen}"
            "<table><tr><th>configuration</th><th>cores</th><th>capacity within goal (req/s)</th><th>meets</th>"
            f"<th>measured</th></tr>{rows}</table>{'<p>Not tried:</p><ul>' + skipped + '</ul>' if skipped else ''}"
            f"<p><img alt='p99 against throughput' src='data:image/png;base64,{image}'></p></body></html>")
