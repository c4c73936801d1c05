"""Endpoints on a cluster (serving type `kserve`): the objects kiln.serving.render writes, created and changed through
the Kubernetes API.

An endpoint is its spec ConfigMap, an InferenceService per variant, the VirtualService and the endpoint's Service, all
labelled `kiln.dev/endpoint=<name>`. Deploying applies them (server-side apply: the same spec twice changes nothing)
after the API server accepted every one in a dry run, so a refused object leaves the endpoint as it was; objects of
variants the spec no longer has are deleted. A variant's model server reads the registered version's files, or, on
runtime tvm, its bundle compiled for the nodes (`serving.tvm_target`), from the object store. A rollout adds the candidate as a variant of weight 0 and asks the
endpoint's rollout controller (kiln.serving.controller, in the cluster) to move the weights; when it has ended, the
variant serves the winner and the candidate's objects go. Model aliases are pinned to versions, as locally.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from kiln.compile.targets import resolve_target
from kiln.errors import InputError, ServiceError
from kiln.progress import Progress, no_progress
from kiln.registry.versions import list_versions
from kiln.serving.approval import Override, clear_for_production, cleared, record_overrides
from kiln.serving.bundles import bundle_location
from kiln.serving.controller import ANNOTATION, VirtualServiceRoutes, dump_rollout, load_rollout, read_spec
from kiln.serving.history import (
    HistoryEntry,
    deployed,
    dump_history,
    ended,
    entry,
    extend,
    load_history,
    overrides,
)
from kiln.serving.kube import Conflict, Kube, applied_by_kiln, connect
from kiln.serving.local import pin, replaced_variant
from kiln.serving.render import WEIGHTED_ROUTE, config_map_name, endpoint_host, isvc_name, objects, weights_for
from kiln.serving.rollout import Rollout, RolloutReport, force, hold, start
from kiln.serving.runtimes import DEFAULT_RUNTIME, get_runtime
from kiln.serving.spec import EndpointSpec, Variant, no_rollout, served_name
from kiln.settings import KServeServing
from kiln.tracking import client
from kiln.workspace import Workspace

CANDIDATE_SUFFIX = "-next"
HISTORY = "kiln.dev/history"  # the endpoint's history (kiln.serving.history), on its spec ConfigMap
# The kinds of an endpoint's objects, in the order they are deleted (what routes to a model server first); with
# serving.controller_image, also its rollout controller's, before the spec it reads.
ROUTES_AND_SERVERS = ("VirtualService", "Service", "InferenceService", "TrainedModel")
CONTROLLER = ("Deployment", "RoleBinding", "Role", "ServiceAccount")


def _kinds(ws: Workspace) -> tuple[str, ...]:
    return (*ROUTES_AND_SERVERS, *(CONTROLLER if _serving(ws).controller_image else ()), "ConfigMap")


# The schemes KServe's storage initializer reads a model from.
REMOTE_SCHEMES = ("s3://", "gs://", "https://", "http://", "pvc://", "hdfs://", "webhdfs://", "oci://")


@dataclass(frozen=True)
class Change:
    """What applying or deleting did to one object."""

    kind: str
    name: str
    action: str  # created, configured, unchanged, deleted


@dataclass(frozen=True)
class ClusterDeployment:
    """An endpoint applied to a cluster (`kiln endpoint deploy` with serving type kserve)."""

    endpoint: str
    namespace: str
    url: str  # where callers in the mesh send requests
    models: dict[str, str]  # variant -> the pinned models:/NAME/VERSION it serves
    changes: list[Change]
    storage: dict[str, str] = field(default_factory=dict)  # variant -> where its model server reads its model

    def to_dict(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "namespace": self.namespace, "url": self.url, "models": self.models,
                "storage": self.storage, "changes": [vars(c) for c in self.changes]}


@dataclass(frozen=True)
class VariantStatus:
    name: str
    role: str  # production or shadow
    model: str
    weight: int | None  # its share of the VirtualService's weighted route, in percent; None for the shadow
    ready: str  # the InferenceService's Ready condition: True, False, or Unknown (not reconciled yet)
    reason: str = ""
    runtime: str = DEFAULT_RUNTIME


@dataclass(frozen=True)
class ClusterStatus:
    endpoint: str
    namespace: str
    url: str
    variants: list[VariantStatus]
    rollout: RolloutReport | None = None  # the rollout controller's state of the last or current rollout
    requested: str | None = None  # a candidate whose rollout no controller has taken up yet
    history: list[HistoryEntry] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "namespace": self.namespace, "url": self.url,
                "variants": [vars(v) for v in self.variants],
                "rollout": self.rollout.to_dict() if self.rollout else None, "requested": self.requested,
                "history": [h.model_dump() for h in self.history]}


@dataclass(frozen=True)
class ClusterDeleted:
    endpoint: str
    namespace: str
    changes: list[Change] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "namespace": self.namespace, "changes": [vars(c) for c in self.changes]}


def _serving(ws: Workspace) -> KServeServing:
    serving = ws.settings.serving
    if not isinstance(serving, KServeServing):
        raise InputError(f"serving type '{serving.type}': not a cluster", hint="set serving.type: kserve in kiln.yaml")
    return serving


def namespace(ws: Workspace) -> str:
    """The namespace the workspace's endpoints live in."""
    return _serving(ws).namespace


def _kube(ws: Workspace) -> tuple[Kube, str]:
    serving = _serving(ws)
    return connect(serving.kubeconfig, serving.context), serving.namespace


def url_of(endpoint: str, namespace: str) -> str:
    return f"http://{endpoint_host(endpoint, namespace)}/v1/models/{endpoint}:predict"


def proxied_location(uri: str, destination: str | None) -> str:
    """An artifact URI of an MLflow server that proxies artifacts (mlflow-artifacts:/PATH) as the object-store
    location it keeps them at (DESTINATION/PATH); any other URI as it is."""
    match = re.match(r"^mlflow-artifacts:(//[^/]*)?/+(.*)$", uri)
    if match is None or destination is None:
        return uri
    return f"{destination.rstrip('/')}/{match.group(2)}"


def storage_uri(ws: Workspace, model: str, runtime: str = DEFAULT_RUNTIME, progress: Progress = no_progress) -> str:
    """Where a pinned version's model files are, as KServe's storage initializer reads them; for a runtime that
    serves a compiled bundle, that bundle's folder in the artifacts store (compiled for the nodes now if the version
    has none)."""
    if get_runtime(runtime).serves_bundle:
        serving = _serving(ws)
        if serving.tvm_cpu is not None:
            _check_cpu(serving.tvm_target, serving.tvm_cpu)
        return bundle_location(ws, model, serving.tvm_target, serving.tvm_cpu, progress)
    name, _, version = model.removeprefix("models:/").partition("/")
    uri = proxied_location(client(ws).get_model_version_download_uri(name, version),
                           _serving(ws).artifacts_destination)
    if not uri.startswith(REMOTE_SCHEMES):
        raise InputError(f"model {model}: its files are at {uri}, which a cluster's model servers cannot read",
                         hint="keep the registry's artifacts in an object store (mlflow.artifact_root: s3://BUCKET/...)"
                              "; behind an MLflow server that proxies them, set serving.artifacts_destination")
    return uri


def _check_cpu(target: str, cpu: str) -> None:
    try:
        resolve_target(target, cpu)
    except InputError as exc:
        raise InputError(f"serving.tvm_cpu '{cpu}' is not a CPU LLVM knows for {target}", hint=exc.hint) from None


def _pinned(ws: Workspace, spec: EndpointSpec) -> EndpointSpec:
    """The spec with every model alias replaced by the version it names now."""
    data = spec.model_dump()
    for v in data["variants"] + ([data["shadow"]] if data["shadow"] else []):
        v["model"] = pin(ws, Variant(name=v["name"], model=v["model"]))
    return EndpointSpec.model_validate(data)


def _rollout_state(kube: Kube, endpoint: str, namespace: str) -> dict[str, Any] | None:
    vs = kube.get("VirtualService", namespace, endpoint)
    raw = ((vs or {}).get("metadata", {}).get("annotations") or {}).get(ANNOTATION)
    if not raw:
        return None
    try:
        state = json.loads(raw)
    except ValueError:
        raise InputError(f"annotation {ANNOTATION} on VirtualService {namespace}/{endpoint} is not JSON") from None
    return state if isinstance(state, dict) else None


def _under_way(state: dict[str, Any] | None) -> bool:
    return state is not None and ("phase" not in state or not load_rollout(state).done)


def _apply(ws: Workspace, kube: Kube, spec: EndpointSpec, namespace: str,
           progress: Progress) -> tuple[list[Change], dict[str, str]]:
    """Apply the spec's objects (after a dry run of all of them) and delete the endpoint's objects it lacks; the
    changes, and where each variant's model server reads its model."""
    serving = _serving(ws)
    every = [*spec.variants, *([spec.shadow] if spec.shadow else [])]
    uris = {v.name: storage_uri(ws, v.model, v.runtime, progress) for v in every}
    if spec.mode == "multi-model":
        uris.update(_cleared_versions(ws, spec, progress))
    objs = objects(spec, namespace=namespace, storage_uris=uris, capture_url=serving.capture_url,
                   image=serving.controller_image, prometheus=serving.prometheus, metrics=serving.metrics,
                   interval=serving.controller_interval_seconds)
    for obj in objs:  # the API server's own checks (schemas, admission, RBAC) on every object, changing nothing
        kube.apply(obj, dry_run=True)
    changes = []
    for obj in objs:
        kind, name = obj["kind"], obj["metadata"]["name"]
        before = kube.get(kind, namespace, name)
        after = kube.apply(obj)
        action = "created" if before is None else \
            "unchanged" if before["metadata"]["resourceVersion"] == after["metadata"]["resourceVersion"] else "configured"
        changes.append(Change(kind, name, action))
        progress(f"{kind.lower()} {name} {action}")
    keep = {(o["kind"], o["metadata"]["name"]) for o in objs}
    for kind in _kinds(ws):
        for found in kube.list(kind, namespace, f"kiln.dev/endpoint={spec.name}"):
            name = found["metadata"]["name"]
            if (kind, name) not in keep and applied_by_kiln(found) and kube.delete(kind, namespace, name):
                changes.append(Change(kind, name, "deleted"))
                progress(f"{kind.lower()} {name} deleted")
    return changes, uris


def _cleared_versions(ws: Workspace, spec: EndpointSpec, progress: Progress) -> dict[str, str]:
    """A multi-model endpoint's versions on a cluster (NAME-vVERSION): every version of its models cleared for
    production, with where its files are (its TrainedModels; a version cleared later comes with the next deploy)."""
    found = {}
    for name in spec.served_models():
        for info in list_versions(ws, name):
            if cleared(info):
                uri = f"models:/{name}/{info.version}"
                found[served_name(uri)] = storage_uri(ws, uri, spec.variants[0].runtime, progress)
    progress(f"{spec.name}: {len(found)} versions cleared for production: {', '.join(sorted(found)) or 'none'}")
    return found


def deploy(ws: Workspace, spec: EndpointSpec, progress: Progress = no_progress,
           override: Override | None = None) -> ClusterDeployment:
    """Create the endpoint, or bring an existing one to ``spec``; refused while a rollout is under way, and when a
    production variant's version is not cleared for production (``override`` lets it in, recorded)."""
    if spec.mode == "async":
        raise InputError(f"endpoint {spec.name} is asynchronous: `kiln endpoint deploy` does not create those on a "
                         "cluster yet", hint="`kiln endpoint render SPEC -o DIR --image IMAGE --storage main=URI`, "
                                             "then `kubectl apply -f DIR` (KEDA and a Secret kiln-broker needed)")
    kube, namespace = _kube(ws)
    if _under_way(_rollout_state(kube, spec.name, namespace)):
        raise InputError(f"endpoint {spec.name}: a rollout is under way in {namespace}",
                         hint=f"`kiln endpoint promote {spec.name}` or `kiln endpoint rollback {spec.name}` first")
    pinned = _pinned(ws, spec)
    clearances = [clear_for_production(ws, v.name, v.model, override, progress) for v in pinned.variants]
    changes, storage = _apply(ws, kube, pinned, namespace, progress)
    models = {v.name: v.model for v in [*pinned.variants, *([pinned.shadow] if pinned.shadow else [])]}
    if any(c.action != "unchanged" for c in changes):
        _remember(kube, namespace, spec.name, deployed(spec, models, clearances))
        record_overrides(ws, spec.name, clearances)
    return ClusterDeployment(spec.name, namespace, url_of(spec.name, namespace), models, changes, storage)


def _history_of(kube: Kube, namespace: str, name: str) -> tuple[list[HistoryEntry], str]:
    """The endpoint's history from its spec ConfigMap, and the ConfigMap's resourceVersion."""
    cm = kube.get("ConfigMap", namespace, config_map_name(name))
    if cm is None:
        raise InputError(f"no endpoint '{name}' in namespace {namespace}")
    raw = (cm["metadata"].get("annotations") or {}).get(HISTORY)
    where = f"annotation {HISTORY} on ConfigMap {namespace}/{config_map_name(name)}"
    return load_history(raw, where), cm["metadata"]["resourceVersion"]


def _remember(kube: Kube, namespace: str, name: str, entries: list[HistoryEntry]) -> None:
    """Add ``entries`` to the endpoint's history (read again and retried if the ConfigMap changed meanwhile)."""
    for attempt in range(3):
        known, version = _history_of(kube, namespace, name)
        body = {"metadata": {"resourceVersion": version,
                             "annotations": {HISTORY: dump_history(extend(known, entries))}}}
        try:
            kube.patch("ConfigMap", namespace, config_map_name(name), body)
            return
        except Conflict:
            if attempt == 2:
                raise


def read_endpoint(ws: Workspace, name: str) -> tuple[Kube, str, EndpointSpec]:
    """The API, the namespace and the deployed spec of endpoint ``name``."""
    kube, namespace = _kube(ws)
    if kube.get("ConfigMap", namespace, config_map_name(name)) is None:
        raise InputError(f"no endpoint '{name}' in namespace {namespace}",
                         hint="`kiln endpoint list` shows the deployed ones")
    return kube, namespace, read_spec(kube, name, namespace)


def list_endpoints(ws: Workspace) -> list[str]:
    kube, namespace = _kube(ws)
    found = kube.list("ConfigMap", namespace, "app.kubernetes.io/part-of=kiln,kiln.dev/endpoint")
    return sorted(cm["metadata"]["labels"]["kiln.dev/endpoint"] for cm in found)


def _ready(isvc: dict[str, Any] | None) -> tuple[str, str]:
    if isvc is None:
        return "False", "InferenceService missing"
    for cond in (isvc.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return str(cond.get("status")), str(cond.get("message") or cond.get("reason") or "")
    return "Unknown", "not reconciled by KServe yet"


def endpoint_status(ws: Workspace, name: str, settle: bool = True) -> ClusterStatus:
    """Each variant's model, live weight and readiness, and the rollout controller's state (with ``settle``, a
    rollout that has ended is settled first; without, nothing is written)."""
    if settle:
        finalize(ws, name)
    kube, namespace, spec = read_endpoint(ws, name)
    vs = kube.get("VirtualService", namespace, name) or {}
    routes = (vs.get("spec") or {}).get("http", [])
    weighted: dict[str, Any] = next((r for r in routes if r.get("name") == WEIGHTED_ROUTE), {})
    live = {d["destination"]["host"].split(".")[0]: d.get("weight", 0) for d in weighted.get("route", [])}
    if spec.mode == "multi-model":  # one variant, no weighted route: it takes every request
        live = {f"{isvc_name(name, spec.variants[0].name)}-predictor": 100}
    variants = []
    for v in [*spec.variants, *([spec.shadow] if spec.shadow else [])]:
        shadow = v is spec.shadow
        isvc = isvc_name(name, v.name)
        ready, why = _ready(kube.get("InferenceService", namespace, isvc))
        variants.append(VariantStatus(v.name, "shadow" if shadow else "production", v.model,
                                      None if shadow else live.get(f"{isvc}-predictor", 0), ready, why,
                                      v.runtime))
    state = _rollout_state(kube, name, namespace) or {}
    url = url_of(name, namespace)
    known, _ = _history_of(kube, namespace, name)
    if "phase" in state:
        return ClusterStatus(name, namespace, url, variants, rollout=_report(load_rollout(state), url),
                             history=known)
    return ClusterStatus(name, namespace, url, variants, requested=state.get("candidate"), history=known)


def delete(ws: Workspace, name: str) -> ClusterDeleted:
    """Delete every object of the endpoint (routes first, the spec last)."""
    kube, namespace, _ = read_endpoint(ws, name)
    changes = []
    for kind in _kinds(ws):
        for found in kube.list(kind, namespace, f"kiln.dev/endpoint={name}"):
            if applied_by_kiln(found) and kube.delete(kind, namespace, found["metadata"]["name"]):
                changes.append(Change(kind, found["metadata"]["name"], "deleted"))
    return ClusterDeleted(name, namespace, changes)


def _report(r: Rollout, candidate_url: str) -> RolloutReport:
    return RolloutReport(stable=r.stable, candidate=r.candidate, candidate_url=candidate_url, phase=r.phase,
                         share=r.share, reason=r.reason, policy=r.policy, history=[dict(h) for h in r.history],
                         done=r.done, updated=time.time(), paused=r.paused)


def update(ws: Workspace, name: str, model: str, variant: str | None = None, wait: bool = True,
           progress: Progress = no_progress, poll_seconds: float = 2.0,
           override: Override | None = None) -> RolloutReport | None:
    """Add the new model beside the variant it replaces and ask the endpoint's rollout controller to roll it out by
    the endpoint's policy; with ``wait``, follow it to its end and settle the objects. None when not waited for and
    the controller has not taken it up yet. The new model must be cleared for production (``override`` lets another
    in, recorded)."""
    finalize(ws, name)  # a rollout that ended while nobody followed it is settled first
    kube, namespace, spec = read_endpoint(ws, name)
    no_rollout(spec)
    if _under_way(_rollout_state(kube, name, namespace)):
        raise InputError(f"endpoint {name}: a rollout is under way",
                         hint=f"`kiln endpoint promote {name}` or `kiln endpoint rollback {name}` first")
    production = [v.name for v in spec.variants]
    variant = replaced_variant(name, production, variant)
    stable = next(v for v in spec.variants if v.name == variant)
    pinned = pin(ws, Variant(name=variant, model=model))
    if pinned == stable.model:
        raise InputError(f"variant {variant} of {name} already serves {pinned}")
    clearance = clear_for_production(ws, variant, pinned, override, progress)
    candidate = f"{variant}{CANDIDATE_SUFFIX}"
    data = spec.model_dump()
    data["variants"].append({"name": candidate, "model": pinned, "runtime": stable.runtime, "weight": 0.0})
    _apply(ws, kube, EndpointSpec.model_validate(data), namespace, progress)
    vs = kube.get("VirtualService", namespace, name)
    assert vs is not None  # just applied
    kube.patch("VirtualService", namespace, name, {"metadata": {
        "resourceVersion": vs["metadata"]["resourceVersion"],
        "annotations": {ANNOTATION: json.dumps({"stable": variant, "candidate": candidate})}}})
    _remember(kube, namespace, name, [
        entry("rollout started", variant, pinned, f"{spec.policy.type} by the endpoint's rollout controller, "
                      f"candidate {candidate}"), *overrides([clearance])])
    record_overrides(ws, name, [clearance])
    progress(f"candidate {candidate}: {pinned}; rollout requested from the endpoint's controller")
    asked, seen = time.monotonic(), ""
    while True:
        state = _rollout_state(kube, name, namespace)
        if state is not None and "phase" in state:
            rollout = load_rollout(state)
            if rollout.reason != seen:
                seen = rollout.reason
                progress(f"rollout: {seen}")
            if rollout.done:
                finalize(ws, name)
            if rollout.done or not wait:
                return _report(rollout, url_of(name, namespace))
        elif time.monotonic() - asked > _serving(ws).controller_wait_seconds:
            raise ServiceError(f"endpoint {name}: no rollout controller took the rollout up in "
                               f"{_serving(ws).controller_wait_seconds:.0f} s; {candidate} serves no traffic",
                               hint=f"the chart runs one per endpoint listed in rolloutController.endpoints; "
                                    f"`kiln endpoint rollback {name}` removes the candidate")
        elif not wait:
            return None
        time.sleep(poll_seconds)


def finalize(ws: Workspace, name: str, by: str = "") -> RolloutReport | None:
    """After a rollout ended: the variant serves the winner, the candidate's objects go. The ended rollout, or None
    when none has ended unsettled. ``by``: who ended it, for the endpoint's history."""
    kube, namespace, spec = read_endpoint(ws, name)
    state = _rollout_state(kube, name, namespace)
    if state is None or "phase" not in state:
        return None
    r = load_rollout(state)
    names = [v.name for v in spec.variants]
    if not r.done or r.candidate not in names:
        return None
    data = spec.model_dump()
    won = next(v for v in data["variants"] if v["name"] == r.candidate)
    data["variants"] = [v for v in data["variants"] if v["name"] != r.candidate]
    if r.phase == "promoted":
        next(v for v in data["variants"] if v["name"] == r.stable)["model"] = won["model"]
    _apply(ws, kube, EndpointSpec.model_validate(data), namespace, no_progress)
    report = _report(r, url_of(name, namespace))
    _remember(kube, namespace, name, [ended(r.stable, won["model"], report, by)])
    return report


def decide(ws: Workspace, name: str, action: str, reason: str, by: str = "") -> RolloutReport:
    """Promote or roll back the rollout under way now (as the controller would at its end), then settle; or pause
    it where it is, or resume it (the controller holds a paused rollout's weights)."""
    kube, namespace, spec = read_endpoint(ws, name)
    state = _rollout_state(kube, name, namespace)
    if not _under_way(state):
        raise InputError(f"endpoint {name} has no rollout under way", hint=f"`kiln endpoint update {name} --model URI`")
    assert state is not None
    if "phase" in state:
        current = load_rollout(state)
    else:  # requested, not yet taken up by a controller: settled as if it had begun
        current = start(state["stable"], state["candidate"], spec.policy, spec.guardrails, time.time())
    if action in ("pause", "resume"):
        if current.paused == (action == "pause"):
            raise InputError(f"endpoint {name}: the rollout is {'already paused' if current.paused else 'not paused'}")
        ended = hold(current, action == "pause", reason, time.time())
    else:
        ended = force(current, action, reason, time.time())
    routes = VirtualServiceRoutes(kube, spec, namespace)
    for attempt in range(3):
        routes.state()
        try:
            routes.patch(weights_for(ended, {v.name: v.weight for v in spec.variants}), dump_rollout(ended))
            break
        except Conflict:  # the controller patched it meanwhile: read it again
            if attempt == 2:
                raise
    if action in ("pause", "resume"):
        model = next((v.model for v in spec.variants if v.name == ended.candidate), "")
        _remember(kube, namespace, name, [entry("rollout paused" if action == "pause" else "rollout resumed",
                                                ended.stable, model, reason, by)])
    finalize(ws, name, by)
    return _report(ended, url_of(name, namespace))
