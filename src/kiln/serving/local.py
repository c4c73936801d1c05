"""Local endpoints: each variant a KServe model server process and one front process, all on loopback.

State lives in WS/.kiln/endpoints/NAME/: the spec as deployed (model versions pinned), ports, router config.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kiln import tracking
from kiln.errors import InputError, ServiceError
from kiln.features.repo import plan_by_service
from kiln.process import ServiceSpec, free_ports, pid_file, start, status, stop
from kiln.registry.versions import get_version
from kiln.serving.compare import compare
from kiln.serving.spec import EndpointSpec, Variant
from kiln.training.families import FAMILIES
from kiln.workspace import Workspace

Progress = Callable[[str], None]


def endpoints_dir(ws: Workspace) -> Path:
    return ws.state_dir / "endpoints"


def _state_path(ws: Workspace, name: str) -> Path:
    return endpoints_dir(ws) / name / "endpoint.json"


def read_state(ws: Workspace, name: str) -> dict[str, Any]:
    path = _state_path(ws, name)
    if not path.is_file():
        known = sorted(p.parent.name for p in endpoints_dir(ws).glob("*/endpoint.json"))
        raise InputError(f"no endpoint '{name}' in this workspace",
                         hint=f"endpoints: {', '.join(known) or 'none (deploy one with `kiln endpoint deploy`)'}")
    return json.loads(path.read_text())


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def pin(ws: Workspace, variant: Variant) -> str:
    """The exact model version a variant serves (an alias moving later does not change a running variant)."""

    info = get_version(ws, variant.model)
    return f"models:/{info.name}/{info.version}"



def check_runtime(ws: Workspace, variant: Variant, where: str) -> None:
    """A runtime the variant's model version can be served by, or an InputError naming the variant."""

    if variant.runtime == "tvm":
        raise InputError(f"{where}.runtime tvm: a local endpoint serves mlflow and onnx variants; compiled TVM "
                         "artifacts are not served yet")
    if variant.runtime == "onnx":
        run_id = get_version(ws, variant.model).run_id
        family = tracking.client(ws).get_run(run_id).data.tags.get("kiln.family") if run_id else None
        if family not in FAMILIES or not FAMILIES[family].exports_onnx:
            raise InputError(f"{where}.runtime onnx: {variant.model} is a {family or 'non-Kiln'} model with no ONNX "
                             "graph; serve it with runtime mlflow")


def variant_service(ws: Workspace, endpoint: str, variant: str, model_uri: str, port: int,
                    runtime: str = "mlflow") -> ServiceSpec:
    host = ws.settings.serving.host
    return ServiceSpec(
        name=f"endpoint-{endpoint}-{variant}",
        command=[sys.executable, "-m", "kiln.serving.server", "--name", endpoint, "--model-uri", model_uri,
                 "--runtime", runtime, "--http-port", str(port), "--host", host],
        host=host, port=port, health_path=f"/v2/models/{endpoint}/ready", setting="serving.base_port",
        env={"MLFLOW_TRACKING_URI": ws.settings.mlflow.tracking_uri},
    )


def router_service(ws: Workspace, endpoint: str, port: int) -> ServiceSpec:
    host = ws.settings.serving.host
    config = endpoints_dir(ws) / endpoint / "router.json"
    return ServiceSpec(name=f"endpoint-{endpoint}", host=host, port=port, health_path="/v2/health/ready",
                       setting="serving.base_port",
                       command=[sys.executable, "-m", "kiln.serving.app", "--config", str(config), "--port", str(port),
                                "--host", host])


def _capture_root(ws: Workspace, spec: EndpointSpec) -> str | None:
    if not spec.capture.enabled:
        return None
    if spec.capture.destination:
        if "://" in spec.capture.destination:
            raise InputError(f"capture.destination {spec.capture.destination}: local endpoints write to a folder; "
                             "an s3:// destination is not supported yet")
        return spec.capture.destination
    store = ws.settings.capture
    if store.type != "local":
        raise InputError("settings capture.type is s3: local endpoints write capture to a folder only (not yet S3)")
    return store.path


def feature_lookup(ws: Workspace, model: str) -> dict[str, str] | None:
    """Where the front reads features for id-only requests: the service the model was trained on, if known."""

    run_id = get_version(ws, model).run_id
    service = tracking.client(ws).get_run(run_id).data.tags.get("kiln.feature_service") if run_id else None
    if not service:
        return None
    try:
        plan, _ = plan_by_service(ws, service)
    except InputError:
        return None  # trained on a table with no feature service: requests must carry the features
    fs = ws.settings.services.feature_server
    return {"url": f"http://{fs.host}:{fs.port}", "service": service, "join_key": plan.join_key}


def router_config(ws: Workspace, spec: EndpointSpec, state: dict[str, Any]) -> dict[str, Any]:
    host = ws.settings.serving.host
    urls = {n: f"http://{host}:{v['port']}" for n, v in state["variants"].items()}
    capture = _capture_root(ws, spec)
    return {
        "endpoint": spec.name,
        "variants": {v.name: urls[v.name] for v in spec.variants},
        "shares": spec.shares(),
        "shadow": {"name": spec.shadow.name, "url": urls[spec.shadow.name]} if spec.shadow else None,
        "shadow_percent": spec.shadow.sample_percent if spec.shadow else 0.0,
        "max_body_bytes": spec.max_body_bytes,
        "token_env": spec.auth.bearer_token_env if spec.auth else None,
        "capture": {"root": capture, "sample_percent": spec.capture.sample_percent,
                    "flush_seconds": spec.capture.flush_seconds} if capture else None,
        "policy": spec.policy.model_dump(), "guardrails": spec.guardrails.model_dump(),
        "rollout_state": str(endpoints_dir(ws) / spec.name / "rollout.json"),
        "features": feature_lookup(ws, state["variants"][spec.variants[0].name]["model"]),
    }


def deploy(ws: Workspace, spec: EndpointSpec, progress: Progress = lambda _: None) -> dict[str, Any]:
    """Start every variant and the front; on any failure stop what was started and leave nothing behind."""

    if _state_path(ws, spec.name).is_file():
        raise InputError(f"endpoint '{spec.name}' is already deployed",
                         hint="`kiln endpoint update` rolls out a new model; `kiln endpoint delete` removes it")
    if spec.auth and not os.environ.get(spec.auth.bearer_token_env):
        raise InputError(f"auth.bearer_token_env: variable {spec.auth.bearer_token_env} is not set")
    variants = [*spec.variants, *([spec.shadow] if spec.shadow else [])]
    for i, v in enumerate(spec.variants):
        check_runtime(ws, v, f"variants[{i}]")
    if spec.shadow:
        check_runtime(ws, spec.shadow, "shadow")
    pinned = {v.name: pin(ws, v) for v in variants}
    host = ws.settings.serving.host
    ports = free_ports(host, ws.settings.serving.base_port, len(variants) + 1, _ports_in_use(ws))
    state = {"name": spec.name, "spec": spec.model_dump(mode="json"), "router_port": ports[0],
             "variants": {v.name: {"model": pinned[v.name], "requested": v.model, "port": p,
                                   "runtime": v.runtime, "role": "shadow" if spec.shadow is v else "production"}
                          for v, p in zip(variants, ports[1:])}}
    folder = endpoints_dir(ws) / spec.name
    started: list[ServiceSpec] = []
    try:
        for v in variants:
            service = variant_service(ws, spec.name, v.name, pinned[v.name], state["variants"][v.name]["port"],
                                      v.runtime)
            progress(f"variant {v.name}: {pinned[v.name]} on port {service.port}")
            start(ws.state_dir, service, progress)
            started.append(service)
        _write_json(folder / "router.json", router_config(ws, spec, state))
        front = router_service(ws, spec.name, ports[0])
        start(ws.state_dir, front, progress)
        started.append(front)
    except BaseException:
        for service in reversed(started):
            stop(ws.state_dir, service)
        shutil.rmtree(folder, ignore_errors=True)
        raise
    _write_json(folder / "endpoint.json", state)
    return {**state, "url": front.url}


def _ports_in_use(ws: Workspace) -> set[int]:
    used = set()
    for path in endpoints_dir(ws).glob("*/endpoint.json"):
        state = json.loads(path.read_text())
        used.add(state["router_port"])
        used.update(v["port"] for v in state["variants"].values())
    return used


def services(ws: Workspace, name: str) -> list[ServiceSpec]:
    state = read_state(ws, name)
    return [router_service(ws, name, state["router_port"]),
            *(variant_service(ws, name, v, info["model"], info["port"], info.get("runtime", "mlflow"))
              for v, info in state["variants"].items())]


def start_deployed(ws: Workspace, progress: Progress = lambda _: None) -> list[Any]:
    """Start the processes of every deployed endpoint that is not running (`kiln up`); returns their states."""

    states = []
    for name in list_endpoints(ws):
        for service in reversed(services(ws, name)):  # variants first, then the front
            states.append(start(ws.state_dir, service, progress)[0])
    return states


def endpoint_status(ws: Workspace, name: str) -> dict[str, Any]:
    """Processes, shares, per-variant requests/s, error rate and p50/p99 (last minute) from the front."""
    import httpx


    if "rollout" in read_state(ws, name):
        finalize(ws, name)  # a rollout that ended while nobody was following it is settled here
    state = read_state(ws, name)
    specs = services(ws, name)
    if "rollout" in state:
        pending = state["rollout"]
        specs.append(variant_service(ws, name, pending["candidate"], pending["model"], pending["port"],
                                     pending.get("runtime", "mlflow")))
    procs = {s.name: status(ws.state_dir, s).state for s in specs}
    front = specs[0]
    live: dict[str, Any] = {}
    try:
        live = httpx.get(f"{front.url}/kiln/status", timeout=5).json()
    except httpx.HTTPError as exc:
        live = {"error": f"front not answering: {exc}"}
    return {"name": name, "url": front.url, "processes": procs, "variants": state["variants"], "live": live,
            "rollout": state.get("rollout")}


def delete(ws: Workspace, name: str) -> list[str]:
    stopped = [s.name for s in services(ws, name) if stop(ws.state_dir, s)]
    shutil.rmtree(endpoints_dir(ws) / name, ignore_errors=True)
    return stopped


def all_services(ws: Workspace) -> list[ServiceSpec]:
    """The processes of every deployed endpoint (front first)."""
    return [s for name in list_endpoints(ws) for s in services(ws, name)]


def list_endpoints(ws: Workspace) -> list[str]:
    return sorted(p.parent.name for p in endpoints_dir(ws).glob("*/endpoint.json"))


def invoke(ws: Workspace, name: str, body: Any, variant: str | None = None) -> tuple[int, Any, dict[str, str]]:
    import httpx

    state = read_state(ws, name)
    url = f"http://{ws.settings.serving.host}:{state['router_port']}/v1/models/{name}:predict"
    headers = {"x-kiln-target-variant": variant} if variant else {}
    try:
        res = httpx.post(url, json=body, headers=headers, timeout=30)
    except httpx.HTTPError as exc:
        raise ServiceError(f"endpoint {name} at {url}: {exc}", hint=f"`kiln endpoint status {name}`") from None
    return res.status_code, res.json(), dict(res.headers)


def _front(ws: Workspace, state: dict[str, Any]) -> str:
    return f"http://{ws.settings.serving.host}:{state['router_port']}"


def update(ws: Workspace, name: str, model: str, variant: str | None = None, wait: bool = True,
           progress: Progress = lambda _: None, poll_seconds: float = 1.0) -> dict[str, Any]:
    """Start the new model beside the variant it replaces and roll it out by the endpoint's policy."""
    import httpx


    if "rollout" in read_state(ws, name):
        finalize(ws, name)  # settles one that has ended; one still running stays
    state = read_state(ws, name)
    if "rollout" in state:
        raise InputError(f"endpoint {name}: a rollout of {state['rollout']['model']} is under way",
                         hint=f"`kiln endpoint promote {name}` or `kiln endpoint rollback {name}` first")
    production = [v for v, info in state["variants"].items() if info["role"] == "production"]
    if variant is None:
        if len(production) != 1:
            raise InputError(f"endpoint {name} has production variants {', '.join(production)}; "
                             "say which one the new model replaces with --variant")
        variant = production[0]
    if variant not in production:
        raise InputError(f"--variant {variant}: endpoint {name} has production variants {', '.join(production)}")
    runtime = state["variants"][variant].get("runtime", "mlflow")
    check_runtime(ws, Variant(name=variant, model=model, runtime=runtime), "--model")
    pinned = pin(ws, Variant(name=variant, model=model))
    if pinned == state["variants"][variant]["model"]:
        raise InputError(f"variant {variant} of {name} already serves {pinned}")
    candidate = f"{variant}-next"
    [port] = free_ports(ws.settings.serving.host, ws.settings.serving.base_port, 1, _ports_in_use(ws))
    service = variant_service(ws, name, candidate, pinned, port, runtime)
    progress(f"candidate {candidate}: {pinned} on port {port}")
    start(ws.state_dir, service, progress)
    try:
        res = httpx.put(f"{_front(ws, state)}/kiln/rollout", timeout=10,
                        json={"variant": variant, "candidate": candidate, "url": service.url})
        if res.status_code != 200:
            raise ServiceError(f"endpoint {name} refused the rollout: {res.json().get('error', res.text)}")
    except (httpx.HTTPError, ServiceError):
        stop(ws.state_dir, service)
        raise
    state["rollout"] = {"variant": variant, "candidate": candidate, "model": pinned, "requested": model, "port": port,
                        "runtime": runtime}
    _write_json(_state_path(ws, name), state)
    rollout = res.json()
    progress(f"rollout: {rollout['reason']}")
    seen = rollout["reason"]
    while wait:
        time.sleep(poll_seconds)
        rollout = httpx.get(f"{_front(ws, state)}/kiln/status", timeout=10).json()["rollout"]
        if rollout["reason"] != seen:
            seen = rollout["reason"]
            progress(f"rollout: {seen}")
        if rollout["done"]:
            finalize(ws, name)
            break
    return rollout


def finalize(ws: Workspace, name: str) -> dict[str, Any] | None:
    """After a rollout ends: keep the process that won, stop the other, record it; None while still running."""
    import httpx


    state = read_state(ws, name)
    pending = state.get("rollout")
    if pending is None:
        return {}
    rollout = httpx.get(f"{_front(ws, state)}/kiln/status", timeout=10).json().get("rollout")
    if rollout is None or not rollout["done"]:
        return None
    variant, candidate = pending["variant"], pending["candidate"]
    runtime = state["variants"][variant].get("runtime", "mlflow")
    old = variant_service(ws, name, variant, state["variants"][variant]["model"], state["variants"][variant]["port"],
                          runtime)
    new = variant_service(ws, name, candidate, pending["model"], pending["port"], runtime)
    if rollout["phase"] == "promoted":
        stop(ws.state_dir, old)
        # The candidate's process now is the variant: its pid record moves to the variant's name.
        pid_file(ws.state_dir, new.name).replace(pid_file(ws.state_dir, old.name))
        state["variants"][variant].update(model=pending["model"], requested=pending["requested"],
                                          port=pending["port"])
    else:
        stop(ws.state_dir, new)
    del state["rollout"]
    spec = EndpointSpec.model_validate(state["spec"])
    for v in [*spec.variants, *([spec.shadow] if spec.shadow else [])]:
        if v.name == variant:
            v.model = state["variants"][variant]["model"]
    state["spec"] = spec.model_dump(mode="json")
    _write_json(endpoints_dir(ws) / name / "router.json", router_config(ws, spec, state))
    _write_json(_state_path(ws, name), state)
    return rollout


def decide(ws: Workspace, name: str, action: str, reason: str) -> dict[str, Any]:
    """Promote or roll back the rollout under way now, then settle the processes."""
    import httpx

    state = read_state(ws, name)
    if "rollout" not in state:
        raise InputError(f"endpoint {name} has no rollout under way", hint=f"`kiln endpoint update {name} --model URI`")
    res = httpx.post(f"{_front(ws, state)}/kiln/rollout/{action}", json={"reason": reason}, timeout=10)
    if res.status_code != 200:
        raise InputError(f"endpoint {name}: {res.json().get('error', res.text)}")
    finalize(ws, name)
    return res.json()


def compare_shadow(ws: Workspace, name: str) -> dict[str, Any]:
    """`kiln endpoint compare`: the endpoint's captured production and shadow answers, side by side."""

    state = read_state(ws, name)
    root = _capture_root(ws, EndpointSpec.model_validate(state["spec"]))
    if root is None:
        raise InputError(f"endpoint {name} captures nothing (capture.enabled is false): there is nothing to compare")
    return compare(Path(root), name)
