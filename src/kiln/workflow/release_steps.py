"""Release steps of a pipeline: compile for a target, publish for devices, deploy by canary, baseline, monitor."""

from __future__ import annotations

import shutil
from pathlib import Path

from kiln.compile.compiler import CompileOptions, compile_version
from kiln.compile.store import publish_artifact
from kiln.errors import ServiceError
from kiln.monitoring.baseline import create_baseline
from kiln.monitoring.run import run_monitor
from kiln.monitoring.window import parse_time
from kiln.registry.versions import CHAMPION, get_version, promote
from kiln.serving import endpoints
from kiln.serving.approval import Override, cleared
from kiln.serving.spec import parse_spec
from kiln.workflow.result import StepResult, say, step
from kiln.workspace import open_workspace


@step
def compile_step(workspace: str, version: str, target: str, bundle_out: str) -> StepResult:
    """Compile ``version`` for one target (TVM) into a signed bundle; the value is the bundle's artifact id."""

    result = compile_version(open_workspace(Path(workspace)), version, CompileOptions(target=target), say)
    shutil.copytree(result.path, bundle_out, dirs_exist_ok=True)
    metrics = {"seconds": result.seconds}
    if result.parity:
        metrics["parity_max_abs_diff"] = result.parity.max_abs_diff
    say(f"{target}: artifact {result.id}" + (f", parity {result.parity.max_abs_diff:.1e}" if result.parity else
                                              " (not run here: parity unchecked)"))
    return StepResult(value=result.id, metrics=metrics,
                      metadata={"artifact_id": result.id, "target": target, "model": result.model,
                                "notes": result.notes})


@step
def publish_step(workspace: str, artifact_id: str) -> StepResult:
    """Verify the signed bundle and make it its target's latest at the edge distribution point."""

    published = publish_artifact(open_workspace(Path(workspace)), artifact_id)
    kept = "" if published.latest else f" (a newer {published.newer_latest} stays latest)"
    say(f"published {artifact_id} for {published.target}{kept}")
    return StepResult(value=published.location, metadata=published.to_dict())


@step
def deploy_step(workspace: str, endpoint: str, version: str, canary_percent: float, bake_seconds: float,
                promote_champion: bool, override_reason: str = "") -> StepResult:
    """Deploy ``version``: a new endpoint serves it; an existing one rolls it out on its primary variant (the first,
    the one the monitors watch) by the endpoint's policy. Only an Approved version that passed the gate serves,
    unless ``override_reason`` says why another may (recorded on the version and the endpoint).

    When the version ends up serving (and ``promote_champion``), it becomes the registry's champion.
    """

    ws = open_workspace(Path(workspace))
    model = f"models:/{version}"
    override = Override(override_reason, f"deploy step of endpoint {endpoint}") if override_reason else None
    if endpoint in endpoints.names(ws):
        primary = endpoints.read_spec(ws, endpoint).variants[0].name
        say(f"rolling {version} out on {endpoint}'s variant {primary} by its policy")
        rollout = endpoints.update(ws, endpoint, model, variant=primary, progress=say, override=override)
        phase: str = rollout.phase if rollout else "requested"
        if phase != "promoted":
            raise ServiceError(f"endpoint {endpoint}: the rollout of {version} ended {phase}: "
                               f"{rollout.reason if rollout else ''}",
                               hint=f"`kiln endpoint status {endpoint}` shows what the guardrails saw")
    else:
        spec = parse_spec({"name": endpoint, "variants": [{"name": "primary", "model": model}],
                           "policy": {"type": "canary", "step_percent": canary_percent,
                                      "bake_seconds": bake_seconds}}, "deploy step")
        say(f"new endpoint {endpoint} serving {version}")
        endpoints.deploy(ws, spec, say, override)
        phase = "deployed"
    info = get_version(ws, version)
    if promote_champion and CHAMPION not in info.aliases:
        if cleared(info):
            promote(ws, version, by=f"deploy step of endpoint {endpoint}")
            say(f"{version} is now the champion")
        else:
            say(f"{version} serves by override but stays {info.approval} (gate {info.gate}): only an approved "
                "version that passed the gate becomes champion")
    url = endpoints.url(ws, endpoint)
    return StepResult(value=url, metadata={"endpoint": endpoint, "version": version, "phase": phase, "url": url})


@step
def baseline_step(workspace: str, version: str) -> StepResult:
    """The monitor's baseline of ``version`` (statistics, quality, bias, attribution), made unless it exists."""

    baseline, made = create_baseline(open_workspace(Path(workspace)), version, progress=say)
    say(("made" if made else "kept") + f" the baseline of {version}: {baseline.folder}")
    quality = baseline.data.get("model_quality", {})
    metrics = {"features": len(baseline.features),
               **{f"baseline_{k}": v for k, v in quality.items() if isinstance(v, (int, float))}}
    return StepResult(value=str(baseline.folder), metrics=metrics,
                      metadata={"baseline": str(baseline.folder), "made": made})


@step
def monitor_step(workspace: str, endpoint: str, since: str) -> StepResult:
    """Every monitor over the endpoint's capture since ``since`` (a duration back or an ISO time).

    The value is the number of violations.
    """

    result = run_monitor(open_workspace(Path(workspace)), endpoint, since=parse_time(since or None, "since"),
                         progress=say)
    violations = result.violations
    say(f"{result.records} requests, {len(violations)} violations" +
        "".join(f"\n  {v.monitor}: {v.feature} {v.metric}" for v in violations))
    monitors = result.monitors  # None: no traffic in the window
    quality = (monitors.model_quality.observed if monitors else None) or {}
    drifted = (monitors.data_drift.drifted if monitors else None) or []
    metrics = {"requests": result.records, "violations": len(violations), "drifted_features": len(drifted),
               **{f"live_{k}": v for k, v in quality.items() if isinstance(v, (int, float))}}
    return StepResult(value=len(violations), metrics=metrics, html=result.report,
                      metadata={"run": result.run, "status": result.status, "model": result.model,
                                "report": result.report, "violations_file": result.violations_file})
