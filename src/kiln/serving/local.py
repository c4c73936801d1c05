"""Local endpoints: each variant a KServe model server process and one front process, all on loopback.

State lives in WS/.kiln/endpoints/NAME/: endpoint.json (EndpointState: the spec as deployed, model versions pinned,
ports, a rollout under way), router.json (the front's config) and rollout.json (the front's last rollout report).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kiln import tracking
from kiln.compile.keys import public_key_path
from kiln.errors import InputError, ServiceError, WorkspaceError
from kiln.features.repo import plan_by_service
from kiln.files import write_json_atomic
from kiln.process import ServiceSpec, free_ports, pid_file, start, start_all, status, stop, stop_all
from kiln.progress import Progress, no_progress
from kiln.registry.versions import get_version
from kiln.serving import local_async
from kiln.serving.approval import Override, clear_for_production, record_overrides
from kiln.serving.async_client import submit
from kiln.serving.async_store import Outcome
from kiln.serving.bundles import bundle_for, bundle_path, host_target
from kiln.serving.compare import ShadowComparison, compare
from kiln.serving.history import HistoryEntry, deployed, ended, entry, extend, overrides
from kiln.serving.inline import INLINE_SCHEME
from kiln.serving.rollout import RolloutReport
from kiln.serving.router import FeatureLookup, Route
from kiln.serving.runtimes import DEFAULT_RUNTIME, PUBLIC_KEY_ENV, get_runtime, local_runtimes
from kiln.serving.sleep import SleeperConfig
from kiln.serving.spec import EndpointSpec, Guardrails, Policy, Variant, no_rollout, served_name
from kiln.settings import LocalServing
from kiln.storage import is_s3
from kiln.training.families import FAMILIES
from kiln.workspace import Workspace


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VariantRecord(_Record):
    """One variant's model server as deployed."""

    model: str  # the pinned models:/NAME/VERSION it serves
    requested: str  # the model URI as given (an alias, perhaps)
    port: int
    runtime: str = DEFAULT_RUNTIME
    role: Literal["production", "shadow"]
    artifact: str | None = None  # runtime tvm: the compiled bundle it serves
    inline: bool = False  # served in the front's process (its port is the front's): the spec's inline


class PendingRollout(_Record):
    """A rollout under way: the candidate's model server beside the production variant it may replace."""

    variant: str
    candidate: str
    model: str
    requested: str
    port: int
    runtime: str = DEFAULT_RUNTIME
    artifact: str | None = None  # runtime tvm: the candidate's compiled bundle


class EndpointState(_Record):
    """A deployed local endpoint, as WS/.kiln/endpoints/NAME/endpoint.json holds it."""

    name: str
    spec: EndpointSpec
    router_port: int
    variants: dict[str, VariantRecord]
    history: list[HistoryEntry] = Field(default_factory=list)  # deploys, rollouts, overrides; none in older files
    rollout: PendingRollout | None = None

    @property
    def primary(self) -> VariantRecord:
        """The first production variant: the one monitors watch and the pipelines roll out on."""
        return self.variants[self.spec.variants[0].name]

    def to_dict(self) -> dict[str, Any]:
        """The state as JSON values; ``rollout`` only while one is under way."""
        data = self.model_dump(mode="json")
        # Not exclude_none: that would also drop the spec's null fields, which the file has always held.
        if self.rollout is None:
            del data["rollout"]
        return data


@dataclass(frozen=True)
class Deployment:
    """A deployed endpoint's state and its front's URL (`kiln endpoint deploy`)."""

    state: EndpointState
    url: str

    def to_dict(self) -> dict[str, Any]:
        # By hand, not dataclasses.asdict: asdict copies the pydantic state instead of dumping it.
        return {**self.state.to_dict(), "url": self.url}


@dataclass(frozen=True)
class EndpointStatus:
    """`kiln endpoint status`: the processes, the variants as deployed, and what the front reports live."""

    name: str
    url: str
    processes: dict[str, str]  # service name -> running, stopped, ...
    variants: dict[str, VariantRecord]
    live: dict[str, Any]  # the front's /kiln/status answer, or {"error": ...} when it does not answer
    rollout: PendingRollout | None
    history: list[HistoryEntry]

    def to_dict(self) -> dict[str, Any]:
        # By hand, not dataclasses.asdict: asdict copies the pydantic records instead of dumping them.
        return {"name": self.name, "url": self.url, "processes": self.processes,
                "variants": {n: v.model_dump(mode="json") for n, v in self.variants.items()}, "live": self.live,
                "rollout": self.rollout.model_dump(mode="json") if self.rollout else None,
                "history": [h.model_dump() for h in self.history]}


@dataclass(frozen=True)
class CaptureConfig:
    """What the front captures, and where: a folder or an s3:// prefix (with its S3 API's URL, when not AWS's)."""

    root: str
    sample_percent: float
    flush_seconds: float
    endpoint_url: str | None = None


@dataclass(frozen=True)
class RouterConfig:
    """The front's ROUTER.json, which kiln.serving.app reads: its variants, traffic policy, capture and limits."""

    endpoint: str
    variants: dict[str, str]  # production variant -> its model server's URL
    shares: dict[str, float]
    shadow: Route | None
    shadow_percent: float
    max_body_bytes: int
    token_env: str | None  # the variable holding the bearer token the front requires
    capture: CaptureConfig | None
    policy: Policy
    guardrails: Guardrails
    rollout_state: Path  # where the front keeps its last rollout report
    features: FeatureLookup | None
    sleepers: dict[str, SleeperConfig] = field(default_factory=dict)  # variants that scale to zero
    multi_default: str | None = None  # a multi-model endpoint's version for requests that name none
    inline: dict[str, InlineVariant] = field(default_factory=dict)  # production variants served in the front
    tap: bool = False  # capture and the shadow's copies in a process of their own (kiln.serving.tap)

    def to_dict(self) -> dict[str, Any]:
        """The file's JSON document, keys in field order."""
        # By hand, not dataclasses.asdict: asdict copies the pydantic policy and guardrails instead of dumping them.
        return {"endpoint": self.endpoint, "variants": self.variants, "shares": self.shares,
                "shadow": asdict(self.shadow) if self.shadow else None, "shadow_percent": self.shadow_percent,
                "max_body_bytes": self.max_body_bytes, "token_env": self.token_env,
                "capture": asdict(self.capture) if self.capture else None,
                "policy": self.policy.model_dump(), "guardrails": self.guardrails.model_dump(),
                "rollout_state": str(self.rollout_state), "features": asdict(self.features) if self.features else None,
                "sleepers": {n: c.to_dict() for n, c in self.sleepers.items()}, "multi_default": self.multi_default,
                "inline": {n: asdict(v) for n, v in self.inline.items()}, "tap": self.tap}


@dataclass(frozen=True)
class InlineVariant:
    """What the front loads for a production variant it serves itself (kiln.serving.inline)."""

    model_uri: str  # the model, or runtime tvm's bundle folder
    runtime: str


@dataclass(frozen=True)
class EndpointList:
    """The endpoints deployed in a workspace (`kiln endpoint list`)."""

    endpoints: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"endpoints": self.endpoints}


@dataclass(frozen=True)
class Deleted:
    """An endpoint forgotten (`kiln endpoint delete`) and the processes of it that were running and are stopped."""

    endpoint: str
    stopped: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "stopped": self.stopped}


@dataclass(frozen=True)
class Invocation:
    """One request through an endpoint's front and what it answered (`kiln endpoint invoke`)."""

    status: int
    variant: str | None  # the variant that answered, as the front names it (x-kiln-variant)
    inference_id: str | None  # the id its capture records carry (x-kiln-inference-id)
    answer: Any  # the answer's JSON body

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "variant": self.variant, "inference_id": self.inference_id,
                "answer": self.answer}


def endpoints_dir(ws: Workspace) -> Path:
    return ws.state_dir / "endpoints"


def _state_path(ws: Workspace, name: str) -> Path:
    return endpoints_dir(ws) / name / "endpoint.json"


def read_state(ws: Workspace, name: str) -> EndpointState:
    """The deployed endpoint ``name``; InputError naming the deployed ones when there is none."""
    path = _state_path(ws, name)
    if not path.is_file():
        known = sorted(p.parent.name for p in endpoints_dir(ws).glob("*/endpoint.json"))
        raise InputError(f"no endpoint '{name}' in this workspace",
                         hint=f"endpoints: {', '.join(known) or 'none (deploy one with `kiln endpoint deploy`)'}")
    try:
        return EndpointState.model_validate_json(path.read_text())
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}" for e in exc.errors()[:5])
        raise WorkspaceError(f"{path}: not an endpoint state this Kiln reads: {problems}",
                             hint=f"`kiln endpoint delete {name}`, then deploy it again") from None


def write_state(ws: Workspace, state: EndpointState) -> None:
    """Record ``state`` as its endpoint's endpoint.json (atomically)."""
    write_json_atomic(_state_path(ws, state.name), state.to_dict())


def pin(ws: Workspace, variant: Variant) -> str:
    """The exact model version a variant serves (an alias moving later does not change a running variant)."""

    info = get_version(ws, variant.model)
    return f"models:/{info.name}/{info.version}"



def replaced_variant(endpoint: str, production: list[str], variant: str | None) -> str:
    """The production variant a new model replaces: ``variant``, or the only one there is."""
    if variant is None:
        if len(production) != 1:
            raise InputError(f"endpoint {endpoint} has production variants {', '.join(production)}; "
                             "say which one the new model replaces with --variant")
        return production[0]
    if variant not in production:
        raise InputError(f"--variant {variant}: endpoint {endpoint} has production variants {', '.join(production)}")
    return variant


def check_runtime(ws: Workspace, variant: Variant, where: str) -> None:
    """A runtime the variant's model version can be served by, or an InputError naming the variant."""

    runtime = get_runtime(variant.runtime)
    if not runtime.local:
        served = local_runtimes()
        names = f"{', '.join(served[:-1])} and {served[-1]}" if len(served) > 1 else served[0]
        raise InputError(f"{where}.runtime {runtime.name}: a local endpoint serves {names} variants; "
                         f"{runtime.not_local}")
    missing = missing_graph(ws, variant.model, runtime.name)
    if missing is not None:
        raise InputError(f"{where}.runtime {runtime.name}: {variant.model} is {missing} with no ONNX graph; serve it "
                         f"with runtime {DEFAULT_RUNTIME}")


def missing_graph(ws: Workspace, model: str, runtime: str) -> str | None:
    """The kind of model (``a lgbm model``) whose version ``runtime`` cannot serve for want of an ONNX graph; None
    when it can."""
    if not get_runtime(runtime).needs_onnx_graph:
        return None
    run_id = get_version(ws, model).run_id
    family = tracking.client(ws).get_run(run_id).data.tags.get("kiln.family") if run_id else None
    if family in FAMILIES and FAMILIES[family].exports_onnx:
        return None
    return f"a {family or 'non-Kiln'} model"


def _local_serving(ws: Workspace) -> LocalServing:
    serving = ws.settings.serving
    if serving.type != "local":
        raise InputError(f"settings serving.type is '{serving.type}': endpoints run on this machine with serving "
                         "type local only",
                         hint="serve on a cluster with `kiln endpoint render` and `kubectl apply -f` (README: Cluster)")
    return serving


def serving_host(ws: Workspace) -> str:
    """The address local model servers and fronts listen on (loopback unless settings say otherwise)."""
    return _local_serving(ws).host


def variant_service(ws: Workspace, endpoint: str, variant: str, model_uri: str, port: int,
                    runtime: str = DEFAULT_RUNTIME, artifact: str | None = None,
                    models: tuple[list[str], float] | None = None, shadow: bool = False) -> ServiceSpec:
    """A variant's model server; runtime tvm serves the compiled bundle ``artifact`` of ``model_uri``. With
    ``models`` (registered model names and a budget in MiB), the multi-model server for their versions. A
    ``shadow``'s runs at a lower CPU priority: it answers no one, so the cores go to the callers' requests first."""
    host = _local_serving(ws).host
    served, env = _served(ws, endpoint, variant, model_uri, runtime, artifact)
    if models is not None:  # a multi-model endpoint's one server
        return ServiceSpec(
            name=f"endpoint-{endpoint}-{variant}", host=host, port=port, health_path="/v2/health/ready",
            setting="serving.base_port", env=env,
            command=[sys.executable, "-m", "kiln.serving.multi_model", "--endpoint", endpoint, "--models",
                     ",".join(models[0]), "--budget-mb", f"{models[1]:g}", "--runtime", runtime,
                     "--http-port", str(port), "--host", host])
    return ServiceSpec(
        name=f"endpoint-{endpoint}-{variant}",
        command=[sys.executable, "-m", "kiln.serving.server", "--name", endpoint, "--model-uri", served,
                 "--runtime", runtime, "--http-port", str(port), "--host", host, *(["--nice", "10"] if shadow else [])],
        host=host, port=port, health_path=f"/v2/models/{endpoint}/ready", setting="serving.base_port", env=env,
    )


def _served(ws: Workspace, endpoint: str, variant: str, model_uri: str, runtime: str, artifact: str | None
            ) -> tuple[str, dict[str, str]]:
    """What a variant's model process loads (the model, or runtime tvm's bundle folder) and its environment."""
    # both: MLflow keeps the last URIs a process set in its environment, and children inherit them
    env = dict.fromkeys(("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"), ws.settings.mlflow.tracking_uri)
    if not get_runtime(runtime).serves_bundle:
        return model_uri, env
    if artifact is None:
        raise WorkspaceError(f"endpoint {endpoint}: variant {variant} (runtime {runtime}) names no bundle",
                             hint=f"`kiln endpoint delete {endpoint}`, then deploy it again")
    env[PUBLIC_KEY_ENV] = str(public_key_path(ws))
    return str(bundle_path(ws, artifact)), env


def bundles(ws: Workspace, variants: list[Variant], pinned: dict[str, str], progress: Progress) -> dict[str, str]:
    """The compiled bundle each runtime-tvm variant serves, by variant name (compiled now where none exists)."""
    served = [v for v in variants if get_runtime(v.runtime).serves_bundle]
    return {v.name: bundle_for(ws, pinned[v.name], host_target(), progress) for v in served}


def router_service(ws: Workspace, endpoint: str, port: int, config: Path | None = None,
                   name: str | None = None, env: dict[str, str] | None = None) -> ServiceSpec:
    """An endpoint's front (``config``: its ROUTER.json, by default the deployed endpoint's; ``env``: what its
    inline variants' models need)."""
    host = _local_serving(ws).host
    config = config or endpoints_dir(ws) / endpoint / "router.json"
    # live, not ready: the front starts beside its variants and is ready once one of them is
    return ServiceSpec(name=name or f"endpoint-{endpoint}", host=host, port=port, health_path="/v2/health/live",
                       setting="serving.base_port", env=env or {},
                       command=[sys.executable, "-m", "kiln.serving.app", "--config", str(config), "--port", str(port),
                                "--host", host])


def front_service(ws: Workspace, state: EndpointState) -> ServiceSpec:
    """A deployed endpoint's front, with the environment its inline variants' models load in."""
    env: dict[str, str] = {}
    for variant, record in state.variants.items():
        if record.inline:
            env.update(_served(ws, state.name, variant, record.model, record.runtime, record.artifact)[1])
    return router_service(ws, state.name, state.router_port, env=env)


def _capture_root(ws: Workspace, spec: EndpointSpec) -> str | None:
    """Where the endpoint's capture goes: its spec's destination, else the workspace's capture store (a folder or an
    s3:// prefix)."""
    if not spec.capture.enabled:
        return None
    if spec.capture.destination:
        if "://" in spec.capture.destination and not is_s3(spec.capture.destination):
            raise InputError(f"capture.destination {spec.capture.destination}: expected a folder or s3://BUCKET/PREFIX")
        return spec.capture.destination
    store = ws.settings.capture
    return store.uri if store.type == "s3" else store.path


def capture_endpoint_url(ws: Workspace) -> str | None:
    """The S3 API the capture store's settings name (None: AWS, or AWS_ENDPOINT_URL_S3)."""
    store = ws.settings.capture
    return store.endpoint_url if store.type == "s3" else None


def feature_lookup(ws: Workspace, model: str) -> FeatureLookup | None:
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
    return FeatureLookup(url=f"http://{fs.host}:{fs.port}", service=service, join_key=plan.join_key)


def router_config(ws: Workspace, spec: EndpointSpec, state: EndpointState) -> RouterConfig:
    """The front's ROUTER.json for ``spec`` as deployed in ``state`` (see kiln.serving.app)."""
    host = _local_serving(ws).host
    urls = {n: f"{INLINE_SCHEME}{n}" if v.inline else f"http://{host}:{v.port}" for n, v in state.variants.items()}
    capture = _capture_root(ws, spec)
    return RouterConfig(
        endpoint=spec.name,
        variants={v.name: urls[v.name] for v in spec.variants},
        shares=spec.shares(),
        shadow=Route(spec.shadow.name, urls[spec.shadow.name]) if spec.shadow else None,
        shadow_percent=spec.shadow.sample_percent if spec.shadow else 0.0,
        max_body_bytes=spec.max_body_bytes,
        token_env=spec.auth.bearer_token_env if spec.auth else None,
        capture=CaptureConfig(capture, spec.capture.sample_percent, spec.capture.flush_seconds,
                              capture_endpoint_url(ws)) if capture else None,
        policy=spec.policy, guardrails=spec.guardrails,
        rollout_state=endpoints_dir(ws) / spec.name / "rollout.json",
        features=feature_lookup(ws, state.variants[spec.variants[0].name].model),
        sleepers=_sleepers(ws, spec, state),
        multi_default=served_name(state.primary.model) if spec.mode == "multi-model" else None,
        inline={n: InlineVariant(_served(ws, spec.name, n, v.model, v.runtime, v.artifact)[0], v.runtime)
                for n, v in state.variants.items() if v.inline},
        # An inline front's one thread also runs its models: what capture and the shadow cost there, callers wait for
        tap=spec.inline and (capture is not None or spec.shadow is not None)
        and not (spec.shadow is not None and spec.shadow.min_replicas == 0),
    )


def _models_of(spec: EndpointSpec) -> tuple[list[str], float] | None:
    """A multi-model endpoint's registered model names and budget (MiB); None for any other."""
    return (spec.served_models(), spec.multi_model.budget_mb) if spec.mode == "multi-model" else None


def _sleepers(ws: Workspace, spec: EndpointSpec, state: EndpointState) -> dict[str, SleeperConfig]:
    """The variants that scale to zero (min_replicas 0), with how the front starts each again."""
    out = {}
    for v in [*spec.variants, *([spec.shadow] if spec.shadow else [])]:
        if v.min_replicas == 0:
            record = state.variants[v.name]
            s = variant_service(ws, spec.name, v.name, record.model, record.port, record.runtime, record.artifact,
                                _models_of(spec), record.role == "shadow")
            out[v.name] = SleeperConfig(v.idle_seconds, str(ws.state_dir), s.name, s.command, s.host, s.port,
                                        s.health_path, s.env)
    return out


def deploy(ws: Workspace, spec: EndpointSpec, progress: Progress = no_progress,
           override: Override | None = None) -> Deployment:
    """Start every variant and the front; on any failure stop what was started and leave nothing behind.

    Production variants serve only versions cleared for production (``override`` lets others in, recorded).
    """

    if _state_path(ws, spec.name).is_file():
        raise InputError(f"endpoint '{spec.name}' is already deployed",
                         hint="`kiln endpoint update` rolls out a new model; `kiln endpoint delete` removes it")
    if spec.auth and not os.environ.get(spec.auth.bearer_token_env):
        raise InputError(f"auth.bearer_token_env: variable {spec.auth.bearer_token_env} is not set")
    if spec.mode == "async":
        return _deploy_async(ws, spec, progress, override)
    variants = [*spec.variants, *([spec.shadow] if spec.shadow else [])]
    for i, v in enumerate(spec.variants):
        check_runtime(ws, v, f"variants[{i}]")
    if spec.shadow:
        check_runtime(ws, spec.shadow, "shadow")
    pinned = {v.name: pin(ws, v) for v in variants}
    clearances = [clear_for_production(ws, v.name, pinned[v.name], override, progress) for v in spec.variants]
    artifacts = bundles(ws, variants, pinned, progress)
    host = _local_serving(ws).host
    ports = free_ports(host, _local_serving(ws).base_port, len(variants) + 1, _ports_in_use(ws))
    state = EndpointState(
        name=spec.name, spec=spec, router_port=ports[0],
        variants={v.name: VariantRecord(model=pinned[v.name], requested=v.model, port=p, runtime=v.runtime,
                                        role="shadow" if spec.shadow is v else "production",
                                        artifact=artifacts.get(v.name), inline=spec.inline and spec.shadow is not v)
                  for v, p in zip(variants, ports[1:])},
        history=deployed(spec, pinned, clearances))
    for record in state.variants.values():
        if record.inline:
            record.port = ports[0]
    folder = endpoints_dir(ws) / spec.name
    front = front_service(ws, state)
    processes = [front]
    for v in variants:
        if state.variants[v.name].inline:
            progress(f"variant {v.name}: {pinned[v.name]} in the front's process (inline)")
            continue
        processes.append(variant_service(ws, spec.name, v.name, pinned[v.name], state.variants[v.name].port,
                                         v.runtime, artifacts.get(v.name), _models_of(spec), v is spec.shadow))
        progress(f"variant {v.name}: {pinned[v.name]} on port {processes[-1].port}")
    try:
        write_json_atomic(folder / "router.json", router_config(ws, spec, state).to_dict())
        start_all(ws.state_dir, processes, progress)  # the front needs no variant to start
    except BaseException:
        stop_all(ws.state_dir, processes)
        shutil.rmtree(folder, ignore_errors=True)
        raise
    write_state(ws, state)
    record_overrides(ws, spec.name, clearances)
    return Deployment(state, front.url)


def _deploy_async(ws: Workspace, spec: EndpointSpec, progress: Progress, override: Override | None) -> Deployment:
    """An asynchronous endpoint: its front (which runs the workers its queue's backlog asks for) and the files it and
    the workers read; nothing is left behind when the front does not start (the broker does not answer, say)."""
    [v] = spec.variants
    check_runtime(ws, v, "variants[0]")
    pinned = pin(ws, v)
    clearance = clear_for_production(ws, v.name, pinned, override, progress)
    artifact = bundles(ws, [v], {v.name: pinned}, progress).get(v.name)
    host = _local_serving(ws).host
    [port] = free_ports(host, _local_serving(ws).base_port, 1, _ports_in_use(ws))
    state = EndpointState(name=spec.name, spec=spec, router_port=port, history=deployed(spec, {v.name: pinned},
                                                                                       [clearance]),
                          variants={v.name: VariantRecord(model=pinned, requested=v.model, port=0, runtime=v.runtime,
                                                          role="production", artifact=artifact)})
    folder = endpoints_dir(ws) / spec.name
    served, env = _served(ws, spec.name, v.name, pinned, v.runtime, artifact)
    capture = _capture_root(ws, spec)
    front_config, worker_config = local_async.configs(
        ws, spec, folder, host, served, v.runtime, env, (capture, capture_endpoint_url(ws)) if capture else None)
    front = local_async.front_service(spec.name, folder, host, port)
    try:
        local_async.write_configs(folder, front_config, worker_config)
        start_all(ws.state_dir, [front], progress)
    except BaseException:
        stop_all(ws.state_dir, [front])
        shutil.rmtree(folder, ignore_errors=True)
        raise
    progress(f"variant {v.name}: {pinned}, served by workers started as requests queue "
             f"({spec.async_inference.workers.min} to {spec.async_inference.workers.max})")
    write_state(ws, state)
    record_overrides(ws, spec.name, [clearance])
    return Deployment(state, front.url)


def _ports_in_use(ws: Workspace) -> set[int]:
    used = set()
    for name in list_endpoints(ws):
        state = read_state(ws, name)
        used.add(state.router_port)
        used.update(v.port for v in state.variants.values())
    return used


def services(ws: Workspace, name: str) -> list[ServiceSpec]:
    """The endpoint's processes: its front first, then each variant's model server (an asynchronous endpoint's:
    the workers that run now)."""
    state = read_state(ws, name)
    if state.spec.mode == "async":
        folder = endpoints_dir(ws) / name
        return [local_async.front_service(name, folder, _local_serving(ws).host, state.router_port),
                *local_async.worker_services(ws, name, folder)]
    return [front_service(ws, state),
            *(variant_service(ws, name, v, info.model, info.port, info.runtime, info.artifact, _models_of(state.spec),
                              info.role == "shadow")
              for v, info in state.variants.items() if not info.inline)]


def endpoint_status(ws: Workspace, name: str) -> EndpointStatus:
    """Processes, shares, per-variant requests/s, error rate and p50/p99 (last minute) from the front."""
    import httpx

    if read_state(ws, name).rollout is not None:
        finalize(ws, name)  # a rollout that ended while nobody was following it is settled here
    state = read_state(ws, name)
    specs = services(ws, name)
    pending = state.rollout
    if pending is not None:
        specs.append(variant_service(ws, name, pending.candidate, pending.model, pending.port, pending.runtime,
                                     pending.artifact))
    procs = {s.name: status(ws.state_dir, s).state for s in specs}
    front = specs[0]
    live: dict[str, Any] = {}
    try:
        live = httpx.get(f"{front.url}/kiln/status", timeout=5).json()
    except httpx.HTTPError as exc:
        live = {"error": f"front not answering: {exc}"}
    return EndpointStatus(name=name, url=front.url, processes=procs, variants=state.variants, live=live,
                          rollout=state.rollout, history=state.history)


def delete(ws: Workspace, name: str) -> Deleted:
    """Stop the endpoint's processes and forget it (its captured data, and an asynchronous endpoint's results,
    stay; its queue goes)."""
    processes = services(ws, name)
    stopped = stop_all(ws.state_dir, processes[:1])  # the front first: an async front starts workers
    stopped += stop_all(ws.state_dir, services(ws, name)[1:])
    if read_state(ws, name).spec.mode == "async":
        local_async.forget_queue(endpoints_dir(ws) / name)
    shutil.rmtree(endpoints_dir(ws) / name, ignore_errors=True)
    return Deleted(name, stopped)


def all_services(ws: Workspace, endpoints: Iterable[str] | None = None) -> list[ServiceSpec]:
    """The processes of every deployed endpoint (or of ``endpoints``), each front first."""
    return [s for name in (list_endpoints(ws) if endpoints is None else endpoints) for s in services(ws, name)]


def list_endpoints(ws: Workspace) -> list[str]:
    return sorted(p.parent.name for p in endpoints_dir(ws).glob("*/endpoint.json"))


def invoke(ws: Workspace, name: str, body: Any, variant: str | None = None) -> Invocation:
    """Send ``body`` through the endpoint's front (to ``variant`` only, if given)."""
    import httpx

    url = f"{_front(ws, read_state(ws, name))}/v1/models/{name}:predict"
    headers = {"x-kiln-target-variant": variant} if variant else {}
    try:
        res = httpx.post(url, json=body, headers=headers, timeout=30)
    except httpx.HTTPError as exc:
        raise ServiceError(f"endpoint {name} at {url}: {exc}", hint=f"`kiln endpoint status {name}`") from None
    return Invocation(res.status_code, res.headers.get("x-kiln-variant"), res.headers.get("x-kiln-inference-id"),
                      res.json())


def invoke_async(ws: Workspace, name: str, body: Path | bytes, content_type: str) -> Outcome:
    """Queue ``body`` (a file, or bytes) on the asynchronous endpoint ``name``; where its result will be."""
    state = read_state(ws, name)
    if state.spec.mode != "async":
        raise InputError(f"endpoint {name} is not asynchronous (mode {state.spec.mode})",
                         hint="send it the request without --async")
    token = os.environ.get(state.spec.auth.bearer_token_env) if state.spec.auth else None
    return submit(predict_url(ws, name), body, content_type, token)


def predict_url(ws: Workspace, name: str) -> str:
    """Where the endpoint's front takes V1 predictions."""
    return f"{_front(ws, read_state(ws, name))}/v1/models/{name}:predict"


def _front(ws: Workspace, state: EndpointState) -> str:
    return f"http://{_local_serving(ws).host}:{state.router_port}"


def update(ws: Workspace, name: str, model: str, variant: str | None = None, wait: bool = True,
           progress: Progress = no_progress, poll_seconds: float = 1.0,
           override: Override | None = None) -> RolloutReport:
    """Start the new model beside the variant it replaces and roll it out by the endpoint's policy; the new model
    must be cleared for production (``override`` lets another in, recorded)."""
    import httpx

    if read_state(ws, name).rollout is not None:
        finalize(ws, name)  # settles one that has ended; one still running stays
    state = read_state(ws, name)
    if state.spec.mode == "async":
        raise InputError(f"endpoint {name} is asynchronous: it has no rollout",
                         hint=f"`kiln endpoint delete {name}`, then deploy the new model (queued results stay)")
    no_rollout(state.spec)
    if state.rollout is not None:
        raise InputError(f"endpoint {name}: a rollout of {state.rollout.model} is under way",
                         hint=f"`kiln endpoint promote {name}` or `kiln endpoint rollback {name}` first")
    production = [v for v, info in state.variants.items() if info.role == "production"]
    variant = replaced_variant(name, production, variant)
    runtime = state.variants[variant].runtime
    check_runtime(ws, Variant(name=variant, model=model, runtime=runtime), "--model")
    pinned = pin(ws, Variant(name=variant, model=model))
    if pinned == state.variants[variant].model:
        raise InputError(f"variant {variant} of {name} already serves {pinned}")
    clearance = clear_for_production(ws, variant, pinned, override, progress)
    candidate = f"{variant}-next"
    artifact = bundles(ws, [Variant(name=candidate, model=pinned, runtime=runtime)], {candidate: pinned},
                       progress).get(candidate)
    [port] = free_ports(_local_serving(ws).host, _local_serving(ws).base_port, 1, _ports_in_use(ws))
    service = variant_service(ws, name, candidate, pinned, port, runtime, artifact)
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
    state.rollout = PendingRollout(variant=variant, candidate=candidate, model=pinned, requested=model, port=port,
                                   runtime=runtime, artifact=artifact)
    state.history = extend(state.history, [entry("rollout started", variant, pinned, f"{state.spec.policy.type} "
                                                 f"by the endpoint's policy, candidate {candidate}"),
                                           *overrides([clearance])])
    write_state(ws, state)
    record_overrides(ws, name, [clearance])
    rollout = RolloutReport.from_dict(res.json())
    progress(f"rollout: {rollout.reason}")
    seen = rollout.reason
    while wait:
        time.sleep(poll_seconds)
        rollout = RolloutReport.from_dict(httpx.get(f"{_front(ws, state)}/kiln/status", timeout=10).json()["rollout"])
        if rollout.reason != seen:
            seen = rollout.reason
            progress(f"rollout: {seen}")
        if rollout.done:
            finalize(ws, name)
            break
    return rollout


def finalize(ws: Workspace, name: str, by: str = "") -> RolloutReport | None:
    """After a rollout ends: keep the process that won, stop the other, record it (``by`` who ended it, if a person
    did); the front's report of the rollout settled, or None when none is under way or it is still running."""
    import httpx

    state = read_state(ws, name)
    pending = state.rollout
    if pending is None:
        return None
    live = httpx.get(f"{_front(ws, state)}/kiln/status", timeout=10).json().get("rollout")
    if live is None or not live["done"]:
        return None
    rollout = RolloutReport.from_dict(live)
    variant, candidate = pending.variant, pending.candidate
    serving = state.variants[variant]
    old = variant_service(ws, name, variant, serving.model, serving.port, serving.runtime, serving.artifact)
    new = variant_service(ws, name, candidate, pending.model, pending.port, serving.runtime, pending.artifact)
    if rollout.phase == "promoted":
        stop(ws.state_dir, old)
        # The candidate's process now is the variant: its pid record moves to the variant's name.
        pid_file(ws.state_dir, new.name).replace(pid_file(ws.state_dir, old.name))
        serving.model, serving.requested, serving.port = pending.model, pending.requested, pending.port
        serving.artifact, serving.inline = pending.artifact, False  # an inline variant's successor keeps its process
    else:
        stop(ws.state_dir, new)
    state.rollout = None
    state.history = extend(state.history, [ended(variant, pending.model, rollout, by)])
    for v in [*state.spec.variants, *([state.spec.shadow] if state.spec.shadow else [])]:
        if v.name == variant:
            v.model = serving.model
    write_json_atomic(endpoints_dir(ws) / name / "router.json", router_config(ws, state.spec, state).to_dict())
    write_state(ws, state)
    return rollout


def decide(ws: Workspace, name: str, action: str, reason: str, by: str = "") -> RolloutReport:
    """Promote or roll back the rollout under way now, then settle the processes; or pause or resume it."""
    import httpx

    state = read_state(ws, name)
    if state.rollout is None:
        raise InputError(f"endpoint {name} has no rollout under way", hint=f"`kiln endpoint update {name} --model URI`")
    res = httpx.post(f"{_front(ws, state)}/kiln/rollout/{action}", json={"reason": reason}, timeout=10)
    if res.status_code != 200:
        raise InputError(f"endpoint {name}: {res.json().get('error', res.text)}")
    if action in ("pause", "resume"):
        state.history = extend(state.history, [entry("rollout paused" if action == "pause" else "rollout resumed",
                                                     state.rollout.variant, state.rollout.model, reason, by)])
        write_state(ws, state)
    finalize(ws, name, by)
    return RolloutReport.from_dict(res.json())


def compare_shadow(ws: Workspace, name: str, since: datetime | None = None,
                   spec: EndpointSpec | None = None) -> ShadowComparison:
    """`kiln endpoint compare`: the endpoint's captured production and shadow answers (since ``since``, else all of
    them), side by side. ``spec`` is the endpoint's where it is not a local one (a cluster's collector captures into
    the same store, the same way)."""
    root = _capture_root(ws, spec or read_state(ws, name).spec)
    if root is None:
        raise InputError(f"endpoint {name} captures nothing (capture.enabled is false): there is nothing to compare")
    return compare(root if is_s3(root) else Path(root), name, since=since, endpoint_url=capture_endpoint_url(ws))
