"""`kiln endpoint ...`: endpoints, local (KServe model servers behind Kiln's front) or on a cluster (KServe objects)."""

from __future__ import annotations

import getpass
import json
from pathlib import Path
from typing import Any

import typer
from rich.progress import Progress

from kiln.cli.command import WorkspaceOption, respond, show
from kiln.cli.output import JsonOption, engine_output, err, out, print_json, progress
from kiln.errors import InputError
from kiln.serving import endpoints
from kiln.serving.approval import Override
from kiln.serving.async_client import wait_for
from kiln.serving.async_store import AsyncStore, Outcome, media_type
from kiln.serving.batch import BatchResult
from kiln.serving.batch import batch_transform as run_batch_transform
from kiln.serving.cluster import ClusterDeleted, ClusterDeployment, ClusterStatus
from kiln.serving.compare import ShadowComparison
from kiln.serving.history import HistoryEntry
from kiln.serving.local import Deleted, Deployment, EndpointList, EndpointStatus, compare_shadow, invoke_async
from kiln.serving.local import invoke as invoke_endpoint
from kiln.serving.recommend import Recommendation
from kiln.serving.recommend import recommend as run_recommend
from kiln.serving.render import DEFAULT_CAPTURE, RenderedEndpoint
from kiln.serving.render import render as render_endpoint
from kiln.serving.replay import ReplayReport
from kiln.serving.replay import replay as replay_dataset
from kiln.serving.rollout import RolloutReport
from kiln.serving.runtimes import DEFAULT_RUNTIME
from kiln.serving.spec import EndpointSpec, load_spec, single_model_spec
from kiln.tracking import client
from kiln.workspace import Workspace, open_workspace

app = typer.Typer(help="Endpoints (KServe): deploy, status, list, invoke, update, replay, compare, recommend, render, "
                       "delete.",
                  no_args_is_help=True, rich_markup_mode=None)

OverrideOption = typer.Option(None, "--override-reason", help="Serve a version in production that is not Approved "
                              "or did not pass the gate, saying why (recorded on the version and in the endpoint's "
                              "history).")
HISTORY_SHOWN = 10  # the newest entries `kiln endpoint status` prints; --json holds them all


@app.command("deploy")
def deploy(
    spec_file: Path | None = typer.Argument(None, help="Endpoint spec (YAML): variants, shadow, policy, ..."),
    model: str | None = typer.Option(None, "--model", "-m", help="Instead of a spec: one model, e.g. "
                                        "models:/churn@champion."),
    name: str | None = typer.Option(None, "--name", "-n", help="Endpoint name with --model (default: the "
                                       "model's name)."),
    runtime: str | None = typer.Option(None, "--runtime", "-r", help="With --model: mlflow (default), onnx, or "
                                       "tvm (the version compiled for this machine; compiled now if it never was)."),
    override_reason: str | None = OverrideOption,
    workspace: Path | None = WorkspaceOption,
    as_json: bool = JsonOption,
) -> None:
    """Start an endpoint's variants and its front on loopback, or (serving type kserve) create its objects on the
    cluster; model aliases are pinned to versions. A production variant serves only an Approved version that
    passed the gate (a shadow, any version) unless --override-reason says why it may."""

    spec = _spec(spec_file, model, name, runtime)
    overridden = _override(override_reason)
    respond(workspace, as_json, lambda ws: endpoints.deploy(ws, spec, progress, overridden), _render_deployment)


def _override(reason: str | None) -> Override | None:
    """The override ``--override-reason`` asks for, by the current user (an empty reason is refused)."""
    return None if reason is None else Override(reason, getpass.getuser())


def here(ws: Workspace, command: str) -> Workspace:
    """``ws``, whose endpoints must be served on this machine (the command talks to their front)."""
    if endpoints.on_cluster(ws):
        raise InputError(f"serving type kserve: `kiln endpoint {command}` works on endpoints served on this machine",
                         hint="on the cluster, send requests to the endpoint's URL in the mesh "
                              "(`kiln endpoint status NAME` shows it)")
    return ws


def _spec(spec_file: Path | None, model: str | None, name: str | None, runtime: str | None = None) -> EndpointSpec:
    """The spec file's endpoint, or the one-variant endpoint of ``--model`` (named ``--name``, on ``--runtime``)."""
    if (spec_file is None) == (model is None):
        raise InputError("give an endpoint spec file or --model URI (one of them)")
    if spec_file is not None:
        if runtime is not None:
            raise InputError("--runtime goes with --model; a spec file names each variant's runtime")
        return load_spec(spec_file)
    assert model is not None  # checked above: exactly one of the two was given
    return single_model_spec(name or model.removeprefix("models:/").split("@")[0].split("/")[0], model,
                             runtime or DEFAULT_RUNTIME)


def _render_deployment(deployed: Deployment | ClusterDeployment) -> None:
    if isinstance(deployed, ClusterDeployment):
        out.print(f"endpoint {deployed.endpoint} in namespace {deployed.namespace}: {deployed.url}", markup=False)
        for variant, model in deployed.models.items():
            out.print(f"  {variant:<12} {model:<24} from {deployed.storage.get(variant, '?')}", markup=False)
        for c in deployed.changes:
            out.print(f"  {c.kind.lower()}/{c.name} {c.action}", markup=False)
        return
    name = deployed.state.name
    out.print(f"endpoint {name}: {deployed.url}/v1/models/{name}:predict", markup=False)
    for variant, info in deployed.state.variants.items():
        served = f"  runtime {info.runtime}" + (f", bundle {info.artifact}" if info.artifact else "")
        out.print(f"  {variant:<12} {info.role:<10} {info.model:<24} port {info.port}{served}", markup=False)
    for h in deployed.state.history:
        if h.event == "override":
            out.print(f"  override: {h.variant} serves {h.model} ({h.reason})", markup=False)


@app.command("recommend")
def recommend(
    model: str = typer.Argument(..., help="The model version: NAME@ALIAS or NAME/VERSION (models:/ optional)."),
    p99_ms: float = typer.Option(..., "--p99-ms", help="The latency goal: p99 in milliseconds."),
    rps: float | None = typer.Option(None, "--rps", help="The rate to meet it at, requests/s (default: report each "
                                     "configuration's capacity within the goal)."),
    runtimes: str | None = typer.Option(None, "--runtimes", help="Runtimes to try, comma-separated (default: every "
                                        "one the model can use)."),
    replicas: str = typer.Option("1,2", "--replicas", help="Model server counts to try, comma-separated."),
    seconds: float = typer.Option(3.0, "--seconds", min=1.0, help="Length of each load test."),
    workspace: Path | None = WorkspaceOption,
    as_json: bool = JsonOption,
) -> None:
    """Load-test the model on each runtime it can use at each replica count (wrk, loopback only) and recommend the
    configuration with the fewest cores that meets the p99 goal at the rate: a table, a latency-against-throughput
    plot (PNG and HTML) and a ready endpoint spec."""
    counts = _integers(replicas, "--replicas")
    names = [r.strip() for r in runtimes.split(",") if r.strip()] if runtimes else None
    ref = model if model.startswith("models:/") else f"models:/{model}"
    respond(workspace, as_json, lambda ws: run_recommend(ws, ref, p99_ms, rps, names, counts, seconds,
                                                         progress=progress), _render_recommendation)


def _integers(text: str, option: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"{option} {text!r}: expected whole numbers separated by commas") from None


def _render_recommendation(result: Recommendation) -> None:
    goal = f"p99 within {result.p99_ms:g} ms" + (f" at {result.rps:g} requests/s" if result.rps else "")
    out.print(f"{result.model}: {goal}", markup=False)
    out.print(f"  {'configuration':<14} {'cores':>5} {'capacity/s':>11}  meets  measured", markup=False)
    for t in result.trials:
        mark = "*" if t is result.chosen else " "
        out.print(f"{mark} {t.name:<14} {t.cores:>5} {t.capacity_rps:>11.0f}  {'yes' if t.meets else 'no ':<5}  "
                  f"{t.why}", markup=False)
    for runtime, why in result.skipped.items():
        out.print(f"  {runtime}: not tried ({why})", markup=False)
    if result.chosen is None:
        out.print("no configuration tried meets the goal", markup=False)
    else:
        out.print(f"recommended: {result.chosen.name} ({result.chosen.cores} core(s)); deploy it with "
                  f"`kiln endpoint deploy {result.outputs['spec']}`", markup=False)
    out.print(f"report: {result.outputs['html']}\nplot: {result.outputs['png']}", markup=False)


@app.command("status")
def status(name: str = typer.Argument(..., help="Endpoint name."), workspace: Path | None = WorkspaceOption,
           as_json: bool = JsonOption) -> None:
    """Variants, shares, per-variant requests/s, error rate and p50/p99 over the last minute; on a cluster, each
    variant's live weight and readiness and the rollout's state."""

    respond(workspace, as_json, lambda ws: endpoints.status(ws, name), _render_status, engines=False)


def _render_status(doc: EndpointStatus | ClusterStatus) -> None:
    if isinstance(doc, ClusterStatus):
        _render_cluster_status(doc)
        return
    out.print(f"endpoint {doc.name}: {doc.url}", markup=False)
    live = doc.live
    shares = live.get("shares", {})
    rows: dict[str, tuple[str, str]] = {variant: (info.model, info.role) for variant, info in doc.variants.items()}
    if doc.rollout is not None:
        rows[doc.rollout.candidate] = (doc.rollout.model, "candidate")
    for variant, (model, role) in rows.items():
        s = live.get("variants", {}).get(variant, {})
        share = f"{shares[variant]:.0%}" if variant in shares else ("shadow" if role == "shadow" else "-")
        p50 = f"{s['p50_ms']:.1f}" if s.get("p50_ms") is not None else "-"
        p99 = f"{s['p99_ms']:.1f}" if s.get("p99_ms") is not None else "-"
        errors = f"{s['errors'] / s['requests']:.1%}" if s.get("requests") else "-"
        proc = doc.processes.get(f"endpoint-{doc.name}-{variant}", "?")
        out.print(f"  {variant:<12} {share:>7}  {model:<22} {proc:<9} {s.get('requests_per_second', 0):7.1f} "
                  f"req/s  errors {errors:>6}  p50 {p50} ms  p99 {p99} ms", markup=False)
    if live.get("rollout") and not live["rollout"]["done"]:
        r = live["rollout"]
        out.print(f"  rollout: {r['phase']}, candidate {r['candidate']} at {r['share']:.0%} of {r['stable']}'s "
                  f"traffic ({r['reason']})", markup=False)
    if "error" in live:
        out.print(f"  {live['error']}", markup=False)
    _render_history(doc.history)


def _render_history(history: list[HistoryEntry]) -> None:
    if not history:
        return
    earlier = len(history) - HISTORY_SHOWN
    out.print("history" + (f" (the newest {HISTORY_SHOWN}; {earlier} earlier in --json):" if earlier > 0 else ":"),
              markup=False)
    for h in history[-HISTORY_SHOWN:]:
        out.print("  ".join(filter(None, [f"  {h.at}", f"{h.event:<19}", f"{h.variant:<12}", h.model,
                                          f"by {h.by}" if h.by else "", h.reason])), markup=False)


def _render_cluster_status(doc: ClusterStatus) -> None:
    out.print(f"endpoint {doc.endpoint} in namespace {doc.namespace}: {doc.url}", markup=False)
    for v in doc.variants:
        share = "shadow" if v.weight is None else f"{v.weight}%"
        out.print(f"  {v.name:<12} {share:>7}  {v.model:<22} ready {v.ready}{f' ({v.reason})' if v.reason else ''}",
                  markup=False)
    r = doc.rollout
    if r is not None:
        out.print(f"  rollout: {r.phase}, candidate {r.candidate} at {r.share:.0%} of {r.stable}'s traffic "
                  f"({r.reason})", markup=False)
    elif doc.requested:
        out.print(f"  rollout of {doc.requested} requested, not taken up by a controller yet", markup=False)
    _render_history(doc.history)


@app.command("list")
def list_(workspace: Path | None = WorkspaceOption, as_json: bool = JsonOption) -> None:
    """Endpoints deployed in this workspace, or in the cluster's serving namespace."""

    respond(workspace, as_json, lambda ws: EndpointList(endpoints.names(ws)), _render_list, engines=False)


def _render_list(listed: EndpointList) -> None:
    out.print("\n".join(listed.endpoints) if listed.endpoints else
              "no endpoints (deploy one with `kiln endpoint deploy`)", markup=False)


@app.command("invoke")
def invoke(
    name: str = typer.Argument(..., help="Endpoint name."),
    data: str = typer.Option(..., "--data", "-d", help='JSON: {"instances": [...]} (V1), or @FILE.'),
    variant: str | None = typer.Option(None, "--variant", help="Target one production variant."),
    asynchronous: bool = typer.Option(False, "--async", help="Queue it on an asynchronous endpoint: prints the "
                                      "inference id and where its result will be (`kiln endpoint result ID`)."),
    content_type: str | None = typer.Option(None, "--content-type", help="With --async: application/json, text/csv "
                                            "or application/x-ndjson (default: by the file's extension)."),
    workspace: Path | None = WorkspaceOption,
    as_json: bool = JsonOption,  # the answer is JSON either way; accepted like every command's --json
) -> None:
    """Send one request through the endpoint's front and print the answer (JSON); with --async, queue it (a file of
    up to the endpoint's async_inference.max_payload_mb) and print where its result will be."""

    if asynchronous:
        body, kind = _async_body(data, content_type)
        respond(workspace, as_json, lambda ws: invoke_async(here(ws, "invoke"), name, body, kind), print_json,
                local=True, engines=False)
        return
    body = _request_body(data)
    answered = respond(workspace, as_json, lambda ws: invoke_endpoint(here(ws, "invoke"), name, body, variant), print_json,
                       local=True, engines=False)
    if answered.status >= 400:
        raise typer.Exit(1 if answered.status < 500 else 2)


def _async_body(data: str, content_type: str | None) -> tuple[Path | bytes, str]:
    """``--data`` for an asynchronous request: @FILE (streamed) or inline text, and its media type."""
    if not data.startswith("@"):
        return data.encode(), media_type(content_type or "application/json")
    path = Path(data[1:])
    if not path.is_file():
        raise InputError(f"--data {data}: no such file")
    guessed = {".csv": "text/csv", ".jsonl": "application/x-ndjson", ".ndjson": "application/x-ndjson"}
    return path, media_type(content_type or guessed.get(path.suffix.lower(), "application/json"))


@app.command("result")
def result(
    inference_id: str = typer.Argument(..., help="What `kiln endpoint invoke --async` printed."),
    wait: float = typer.Option(0.0, "--wait", min=0.0, help="Seconds to wait for it to be done or failed."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write the result here once it is done."),
    workspace: Path | None = WorkspaceOption,
    as_json: bool = JsonOption,
) -> None:
    """An asynchronous request's outcome (pending, done or failed, with where its result or error is); exits 1
    while it is pending or when it failed."""

    def fetch(ws: Workspace) -> Outcome:
        store = AsyncStore.of(ws)
        found = wait_for(store, inference_id, wait)
        if found.status == "done" and output is not None:
            store.result_file(inference_id, output)
        return found

    found = respond(workspace, as_json, fetch, _render_outcome, engines=False)
    if found.status != "done":
        raise typer.Exit(1)


def _render_outcome(o: Outcome) -> None:
    out.print(f"{o.inference_id} ({o.endpoint}): {o.status}", markup=False)
    if o.status == "done":
        out.print(f"result: {o.output_location}", markup=False)
    elif o.status == "failed":
        out.print(f"error: {o.error}\n(at {o.failure_location})", markup=False)
    else:
        out.print(f"the result will be at {o.output_location}", markup=False)


def _request_body(data: str) -> Any:
    """``--data``: JSON, or @FILE holding it."""
    text = Path(data[1:]).read_text() if data.startswith("@") else data
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"--data is not valid JSON: {exc}") from None


@app.command("delete")
def delete(name: str = typer.Argument(..., help="Endpoint name."), workspace: Path | None = WorkspaceOption,
           as_json: bool = JsonOption) -> None:
    """Stop the endpoint's processes and forget it, or delete its objects on the cluster (captured data stays)."""

    respond(workspace, as_json, lambda ws: endpoints.delete(ws, name), _render_deleted, engines=False)


def _render_deleted(deleted: Deleted | ClusterDeleted) -> None:
    if isinstance(deleted, ClusterDeleted):
        out.print(f"deleted endpoint {deleted.endpoint} from namespace {deleted.namespace}: "
                  f"{', '.join(f'{c.kind.lower()}/{c.name}' for c in deleted.changes) or 'no objects left'}",
                  markup=False)
        return
    out.print(f"deleted endpoint {deleted.endpoint}; stopped "
              f"{', '.join(deleted.stopped) or 'nothing (no process was running)'}", markup=False)


@app.command("update")
def update(
    name: str = typer.Argument(..., help="Endpoint name."),
    model: str = typer.Option(..., "--model", "-m", help="The new model, e.g. models:/churn@challenger."),
    variant: str | None = typer.Option(None, "--variant", help="The production variant it replaces."),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Follow the rollout until it is promoted or rolled "
                              "back."),
    override_reason: str | None = OverrideOption,
    workspace: Path | None = WorkspaceOption,
    as_json: bool = JsonOption,
) -> None:
    """Roll a new model out by the endpoint's policy (canary, linear or all at once) with its guardrails; on a
    cluster, by the endpoint's rollout controller. The new model must be Approved and have passed the gate unless
    --override-reason says why it may serve."""

    overridden = _override(override_reason)
    respond(workspace, as_json, lambda ws: endpoints.update(ws, name, model, variant, wait, progress, overridden),
            lambda rollout: _render_rollout(name, rollout))


def _render_rollout(name: str, rollout: RolloutReport | None) -> None:
    if rollout is None:
        out.print(f"endpoint {name}: rollout requested; its controller has not taken it up yet", markup=False)
        return
    out.print(f"endpoint {name}: {rollout.phase}{' (paused)' if rollout.paused else ''} ({rollout.reason})",
              markup=False)


def _decide(name: str, action: str, reason: str, workspace: Path | None, as_json: bool) -> None:
    respond(workspace, as_json, lambda ws: endpoints.decide(ws, name, action, reason, getpass.getuser()),
            lambda rollout: _render_rollout(name, rollout), engines=False)


@app.command("promote")
def promote(name: str = typer.Argument(..., help="Endpoint name."),
            reason: str = typer.Option("promoted by hand", "--reason"),
            workspace: Path | None = WorkspaceOption, as_json: bool = JsonOption) -> None:
    """Give the rollout's candidate all of its variant's traffic now."""
    _decide(name, "promote", reason, workspace, as_json)


@app.command("rollback")
def rollback(name: str = typer.Argument(..., help="Endpoint name."),
             reason: str = typer.Option("rolled back by hand", "--reason"),
             workspace: Path | None = WorkspaceOption, as_json: bool = JsonOption) -> None:
    """Send the rollout's traffic back to the stable model now."""
    _decide(name, "rollback", reason, workspace, as_json)


@app.command("pause")
def pause(name: str = typer.Argument(..., help="Endpoint name."),
          reason: str = typer.Option("paused by hand", "--reason"),
          workspace: Path | None = WorkspaceOption, as_json: bool = JsonOption) -> None:
    """Hold the rollout where it is: no step and no promotion until it is resumed (its guardrails still roll it
    back)."""
    _decide(name, "pause", reason, workspace, as_json)


@app.command("resume")
def resume(name: str = typer.Argument(..., help="Endpoint name."),
           reason: str = typer.Option("resumed by hand", "--reason"),
           workspace: Path | None = WorkspaceOption, as_json: bool = JsonOption) -> None:
    """Let a paused rollout go on; its step interval or bake starts again now."""
    _decide(name, "resume", reason, workspace, as_json)


def batch_transform(
    model: str = typer.Option(..., "--model", "-m", help="models:/NAME@ALIAS or models:/NAME/VERSION."),
    input_path: str = typer.Option(..., "--input", "-i", help="Parquet or CSV of feature rows: a path or "
                                   "s3://BUCKET/KEY."),
    output: str = typer.Option(..., "--output", "-o", help="Folder or s3://BUCKET/PREFIX for the scored parts "
                               "(resumable)."),
    batch_size: int = typer.Option(1000, "--batch-size", help="Rows per mini-batch."),
    id_column: str | None = typer.Option(None, "--id-column", help="Column each output row keeps (default: "
                                            "the row number)."),
    workspace: Path | None = WorkspaceOption,
    as_json: bool = JsonOption,
) -> None:
    """Score a whole file in mini-batches; rerun the same command to resume after an interruption."""

    client(open_workspace(workspace))  # the workspace's registry resolves models:/ URIs
    with engine_output(), Progress(console=err, transient=True) as bar:
        task = bar.add_task("scoring", total=None)
        result = run_batch_transform(model, input_path, output, batch_size, id_column,
                     lambda done, total: bar.update(task, completed=done, total=total))
    show(result, as_json, _render_batch)


def _render_batch(result: BatchResult) -> None:
    out.print(f"scored {result.rows} rows with {result.model} into {result.output} ({result.parts} parts"
              + (f", {result.skipped_parts} already done" if result.skipped_parts else "") + ")", markup=False)


@app.command("compare")
def compare(name: str = typer.Argument(..., help="Endpoint name."), workspace: Path | None = WorkspaceOption,
            as_json: bool = JsonOption) -> None:
    """Shadow test: production against shadow on the same captured requests (agreement, scores, latency)."""

    respond(workspace, as_json, lambda ws: compare_shadow(here(ws, "compare"), name), _render_comparison, local=True, engines=False)


def _render_comparison(c: ShadowComparison) -> None:
    agreement = "-" if c.label_agreement is None else f"{c.label_agreement:.1%}"
    diff = "-" if c.score_mean_abs_diff is None else f"{c.score_mean_abs_diff:.4f}"
    out.print(f"endpoint {c.endpoint}: {c.requests} requests ({c.rows} rows) answered by "
              f"{', '.join(c.production_variants)} and shadow {c.shadow_variant}", markup=False)
    out.print(f"  predicted classes agree on {agreement}; mean |difference| of probability or value {diff}", markup=False)
    for side, lat in c.latency.items():
        out.print(f"  {side:<10} p50 {lat.p50_ms:.1f} ms  p99 {lat.p99_ms:.1f} ms  "
                  f"server errors {c.server_errors[side]}", markup=False)


@app.command("replay")
def replay(
    name: str = typer.Argument(..., help="Endpoint name."),
    data: Path = typer.Option(..., "--data", "-d", help="A feature table (parquet/CSV with every model input), or "
                              "a dataset folder / labels file whose features the feature service builds."),
    limit: int | None = typer.Option(None, "--limit", "-n", help="Replay only the first N rows."),
    rps: float = typer.Option(50.0, "--rps", help="Requests per second (one row per request)."),
    workspace: Path | None = WorkspaceOption,
    as_json: bool = JsonOption,
) -> None:
    """Send a dataset through the endpoint as live traffic; a log of what was sent is kept for ground truth."""

    respond(workspace, as_json, lambda ws: replay_dataset(here(ws, "replay"), name, data, limit, rps, progress), _render_replay,
            local=True)


def _render_replay(r: ReplayReport) -> None:
    statuses = ", ".join(f"{k}: {v}" for k, v in r.statuses.items())
    out.print(f"replayed {r.rows} rows through {r.endpoint} in {r.seconds} s ({r.requests_per_s} "
              f"requests/s); statuses {statuses}", markup=False)
    if r.p50_ms is not None:
        out.print(f"  p50 {r.p50_ms} ms  p99 {r.p99_ms} ms; answered by "
                  + ", ".join(f"{k} {v}" for k, v in r.variants.items()), markup=False)
    out.print(f"  sent-requests log: {r.log}", markup=False)


@app.command("render")
def render(
    spec_file: Path = typer.Argument(..., help="Endpoint spec (YAML)."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="A new (or empty) folder for the YAML files."),
    namespace: str = typer.Option("kiln", "--namespace", help="Namespace the objects go to."),
    storage: list[str] = typer.Option([], "--storage", help="VARIANT=URI: where a variant's model files are "
                                      "(s3://...); default: a placeholder derived from the model URI. A multi-model "
                                      "endpoint also takes NAME-vVERSION=URI for each further version it serves."),
    image: str | None = typer.Option(None, "--image", help="Kiln image: also write the rollout controller "
                                        "(Deployment, ServiceAccount, Role)."),
    kserve_canary: bool = typer.Option(False, "--kserve-canary", help="Two variants as one InferenceService with "
                                       "KServe's canaryTrafficPercent instead of Istio weights."),
    capture_url: str = typer.Option(DEFAULT_CAPTURE, "--capture-url", help="The chart's capture collector, where "
                                    "KServe's payload logger posts (its Service in the chart's namespace)."),
    as_json: bool = JsonOption,
) -> None:
    """Write the cluster objects: an InferenceService per variant, Istio routing with mirroring, the controller."""

    uris = _storage_uris(storage)
    spec = load_spec(spec_file)
    unknown = sorted(set(uris) - {v.name for v in spec.variants} - ({spec.shadow.name} if spec.shadow else set()))
    if unknown and spec.mode != "multi-model":  # whose versions render checks
        raise InputError(f"--storage: no variant {', '.join(unknown)} in {spec_file}")
    show(render_endpoint(spec, out_dir, namespace=namespace, storage_uris=uris or None, image=image,
                         kserve_canary=kserve_canary, capture_url=capture_url), as_json, _render_rendered)


def _storage_uris(items: list[str]) -> dict[str, str]:
    """``--storage VARIANT=URI`` options as URIs by variant."""
    uris = {}
    for item in items:
        variant, sep, uri = item.partition("=")
        if not sep or not variant or not uri:
            raise InputError(f"--storage {item!r}: expected VARIANT=URI")
        uris[variant] = uri
    return uris


def _render_rendered(rendered: RenderedEndpoint) -> None:
    out.print(f"wrote {len(rendered.files)} objects for endpoint {rendered.endpoint} to {rendered.folder} "
              "(validated):", markup=False)
    for path in rendered.files:
        out.print(f"  {path}", markup=False)
