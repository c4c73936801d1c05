"""Endpoint specs: production variants with weights, an optional shadow, rollout policy, guardrails, capture, auth.

Read from YAML (or built from flags); unknown keys and bad values are errors that name the field.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kiln.errors import InputError
from kiln.serving.runtimes import DEFAULT_RUNTIME, get_runtime
from kiln.serving.schema import MAX_INSTANCES

NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"  # a DNS label: it becomes a KServe InferenceService name


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Variant(_Spec):
    name: str = Field(pattern=NAME, max_length=40)
    model: str = Field(description="models:/NAME@ALIAS or models:/NAME/VERSION")
    runtime: str = Field(DEFAULT_RUNTIME, description="A serving runtime of kiln.serving.runtimes.RUNTIMES.")
    weight: float = Field(1.0, ge=0.0, description="Share of traffic: this weight over the sum of weights.")
    min_replicas: int = Field(1, ge=0, le=100, description="0: scale to zero. Its server stops after idle_seconds "
                                                            "without a request and the next request starts it (and "
                                                            "waits); on a cluster, KServe's minReplicas.")
    idle_seconds: float = Field(300.0, gt=0.0, description="With min_replicas 0: how long without a request before "
                                                           "the server stops.")

    @field_validator("runtime")
    @classmethod
    def _known_runtime(cls, value: str) -> str:
        try:
            return get_runtime(value).name
        except InputError as exc:
            raise ValueError(exc.message) from None

    @field_validator("model")
    @classmethod
    def _model_uri(cls, value: str) -> str:
        if not re.match(r"^models:/[A-Za-z0-9][A-Za-z0-9_.-]*(@[A-Za-z0-9_-]+|/\d+)$", value):
            raise ValueError("expected models:/NAME@ALIAS or models:/NAME/VERSION")
        return value


class Shadow(Variant):
    sample_percent: float = Field(100.0, gt=0.0, le=100.0, description="Share of live requests copied to it.")


class Policy(_Spec):
    type: Literal["all-at-once", "canary", "linear"] = "canary"
    step_percent: float = Field(10.0, gt=0.0, le=100.0, description="Canary size, or the linear step.")
    bake_seconds: float = Field(60.0, ge=0.0, description="Watch time after the last shift before promotion.")
    interval_seconds: float = Field(30.0, gt=0.0, description="Linear: time between steps.")


class Guardrails(_Spec):
    max_error_rate: float = Field(0.05, ge=0.0, le=1.0, description="Share of 5xx answers that rolls back.")
    max_p99_ms: float | None = Field(None, gt=0.0, description="Absolute p99 latency limit.")
    max_p99_increase_ms: float | None = Field(25.0, gt=0.0,
                                              description="p99 above the stable variant's that rolls back.")
    min_requests: int = Field(20, ge=1, description="Requests a variant needs before it is judged.")
    custom_metric: str | None = Field(None, description="A per-variant metric name (from /metrics) to watch.")
    custom_max: float | None = None

    @model_validator(mode="after")
    def _custom_pair(self) -> "Guardrails":
        if (self.custom_metric is None) != (self.custom_max is None):
            raise ValueError("custom_metric and custom_max go together")
        return self


class Capture(_Spec):
    enabled: bool = True
    sample_percent: float = Field(100.0, ge=0.0, le=100.0)
    destination: str | None = Field(None, description="Folder or s3:// prefix; default: the workspace's capture store.")
    flush_seconds: float = Field(2.0, gt=0.0, le=300.0)


class Auth(_Spec):
    bearer_token_env: str = Field(pattern=r"^[A-Z_][A-Z0-9_]*$",
                                  description="Environment variable holding the token (the token is never stored).")


class Notify(_Spec):
    """Webhooks an asynchronous endpoint POSTs each outcome to (as SageMaker notifies through SNS topics)."""

    success_url: str | None = Field(None, pattern=r"^https?://", description="POSTed to when a result is written.")
    error_url: str | None = Field(None, pattern=r"^https?://", description="POSTed to when a request failed.")


class Workers(_Spec):
    """How many workers an asynchronous endpoint runs: as many as its backlog asks for, between the bounds."""

    min: int = Field(0, ge=0, le=64, description="Workers kept when the queue is empty (0: none, scale to zero).")
    max: int = Field(2, ge=1, le=64, description="The most workers.")
    backlog_per_worker: int = Field(10, ge=1, description="Queued requests per worker: the backlog over this is "
                                                          "how many workers run.")
    idle_seconds: float = Field(60.0, ge=0.0, description="An empty queue this long stops the workers above min.")

    @model_validator(mode="after")
    def _bounds(self) -> "Workers":
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        return self


class AsyncConfig(_Spec):
    """`mode: async`: each request is stored, queued on the broker and answered at once with an inference id; workers
    write its result (or error) to the async store."""

    max_payload_mb: float = Field(1024.0, gt=0.0, le=1024.0, description="The largest request body, in MiB.")
    chunk_rows: int = Field(MAX_INSTANCES, ge=1, le=MAX_INSTANCES, description="Rows scored at a time.")
    max_deliveries: int = Field(3, ge=1, le=100, description="Deliveries of a request to workers (each one a worker "
                                                             "stopped on it) before it is failed.")
    notify: Notify = Notify()
    workers: Workers = Workers()


class MultiModel(_Spec):
    """`mode: multi-model`: one model server holding many registered versions, each loaded on its first request and
    unloaded least recently used past the memory budget; a request names its version (X-Kiln-Target-Model on V1,
    the model name NAME-vVERSION on V2), else it goes to the variant's model."""

    models: list[str] = Field(default_factory=list, description="Registered model names whose versions it serves "
                                                                "(default: the variant's model's name).")
    budget_mb: float = Field(2048.0, gt=0.0, description="Memory the loaded versions may take, in MiB.")


SERVED = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]*)-v(?P<version>\d+)$")


def served_name(model_uri: str) -> str:
    """models:/NAME/VERSION as the name a multi-model server serves it under."""
    name, _, version = model_uri.removeprefix("models:/").partition("/")
    return f"{name}-v{version}"


def model_uri(served: str) -> str | None:
    """The registered version a served name stands for; None for a name that is not NAME-vVERSION."""
    m = SERVED.match(served)
    return f"models:/{m.group('name')}/{m.group('version')}" if m else None


class EndpointSpec(_Spec):
    name: str = Field(pattern=NAME, max_length=40)
    mode: Literal["realtime", "async", "multi-model"] = Field(
        "realtime", description="async: requests are queued and answered later (see async_inference); multi-model: "
                                "many versions behind one server (see multi_model)")
    variants: list[Variant] = Field(min_length=1)
    shadow: Shadow | None = None
    policy: Policy = Policy()
    guardrails: Guardrails = Guardrails()
    capture: Capture = Capture()
    auth: Auth | None = None
    max_body_bytes: int = Field(1_000_000, ge=1024)
    async_inference: AsyncConfig = AsyncConfig()
    multi_model: MultiModel = MultiModel()
    inline: bool = Field(False, description="Serve the production variants inside the front's own process (a local "
                                            "endpoint; a cluster serves each variant in its own pods): no hop and "
                                            "no process per variant, the fastest endpoint, but a model that stalls "
                                            "stalls the endpoint, and a variant cannot be stopped on its own. The "
                                            "shadow and a rollout's candidate keep their own processes.")

    @model_validator(mode="after")
    def _variants(self) -> "EndpointSpec":
        names = [v.name for v in self.variants] + ([self.shadow.name] if self.shadow else [])
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"variant names must be unique; repeated: {', '.join(duplicated)}")
        if sum(v.weight for v in self.variants) <= 0:
            raise ValueError("at least one production variant needs a weight above 0")
        if self.mode != "realtime" and (len(self.variants) != 1 or self.shadow is not None):
            raise ValueError(f"mode {self.mode}: exactly one production variant and no shadow")
        if self.inline and self.mode != "realtime":
            raise ValueError(f"inline: a {self.mode} endpoint's variant runs in its own process; inline is for "
                             "realtime endpoints")
        asleep = [f"variants[{i}]" for i, v in enumerate(self.variants) if v.min_replicas == 0]
        if self.inline and asleep:
            raise ValueError(f"inline: {', '.join(asleep)}.min_replicas is 0, but an inline variant lives in the "
                             "front's process and cannot scale to zero")
        if self.mode == "multi-model" and get_runtime(self.variants[0].runtime).serves_bundle:
            raise ValueError("mode multi-model: runtime tvm serves one compiled bundle; use mlflow or onnx")
        return self

    def served_models(self) -> list[str]:
        """A multi-model endpoint's registered model names."""
        default = self.variants[0].model.removeprefix("models:/").split("/")[0].split("@")[0]
        return self.multi_model.models or [default]

    def shares(self) -> dict[str, float]:
        """Each production variant's share of traffic (its weight over the sum), as SageMaker computes it."""
        total = sum(v.weight for v in self.variants)
        return {v.name: v.weight / total for v in self.variants}


def no_rollout(spec: EndpointSpec) -> None:
    """InputError for an endpoint that has no rollout: a multi-model one serves every version side by side."""
    if spec.mode == "multi-model":
        raise InputError(f"endpoint {spec.name} is multi-model: it has no rollout; every version it serves is "
                         "reachable by name", hint="requests that name none get the variant's model: change it in "
                                                   "the spec and deploy again (a local endpoint: delete it first)")


def load_spec(path: Path) -> EndpointSpec:
    """An EndpointSpec from a YAML file; every problem is an InputError naming the file and the field."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise InputError(f"{path}: cannot read the endpoint spec: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML: {exc}") from None
    return parse_spec(data, str(path))


def parse_spec(data: object, where: str = "endpoint spec") -> EndpointSpec:
    try:
        return EndpointSpec.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}" for e in exc.errors())
        raise InputError(f"{where}: {problems}") from None


def single_model_spec(name: str, model: str, runtime: str = DEFAULT_RUNTIME) -> EndpointSpec:
    """The spec `kiln endpoint deploy --model URI [--runtime R]` builds: one variant taking all traffic."""
    return parse_spec({"name": name, "variants": [{"name": "primary", "model": model, "runtime": runtime}]},
                      "--model")
