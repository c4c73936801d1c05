"""A multi-model endpoint's cluster objects (`kiln endpoint render` of a spec in mode multi-model), on KServe's
multi-model serving:

- one InferenceService `<endpoint>-<variant>` on the chart's `kiln-multi-model` ServingRuntime (a ServingRuntime with
  multiModel: true, so KServe gives its pods the model agent and no model of their own): Kiln's multi-model server
  (kiln.serving.multi_model --model-dir /mnt/models) with the variant's runtime and the spec's memory budget;
- a TrainedModel per version it serves, named NAME-vVERSION: KServe's model agent downloads its storageUri into
  /mnt/models/NAME-vVERSION and asks the server to load it; the server unloads the least recently used past the
  budget and loads one again when a request names it;
- an Istio VirtualService on the endpoint's name: a V1 request to the endpoint's own path goes to the version its
  X-Kiln-Target-Model header names (NAME-vVERSION or NAME/VERSION), else to the variant's version, by rewriting the
  path; V2 requests name their version in the path and go straight through; a V2 request to the endpoint's own name
  goes to the variant's version;
- the endpoint's Service and its spec's ConfigMap, like every endpoint.

TrainedModel names are a namespace's: two multi-model endpoints in one namespace cannot serve the same version.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from kiln.errors import InputError
from kiln.serving.router import MODEL_HEADER
from kiln.serving.runtimes import get_runtime
from kiln.serving.spec import EndpointSpec, model_uri, served_name

RUNTIME = "kiln-multi-model"  # the chart's ServingRuntime (servingRuntimes.multiModel)
TRAINED_MODEL = "serving.kserve.io/v1alpha1"
OVERHEAD_MB = 1024  # the server's own memory beside the loaded versions (Python, KServe, MLflow, the runtime's libraries)
DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def served_versions(spec: EndpointSpec, storage_uris: Mapping[str, str],
                    placeholder: Callable[[str], str]) -> dict[str, str]:
    """Each version the endpoint serves on a cluster (NAME-vVERSION) and where its files are: the variant's own (a
    pinned NAME/VERSION; ``storage_uris[variant]`` or ``placeholder(model)``) and every NAME-vVERSION given."""
    variant = spec.variants[0]
    default = variant.model
    if model_uri(served_name(default)) != default:
        raise InputError(f"endpoint {spec.name}: variant {variant.name}'s model {variant.model} is not a pinned "
                         f"version; on a cluster a multi-model endpoint serves the versions it is given",
                         hint="name it NAME/VERSION (`kiln models list` shows the versions)")
    versions = {served_name(default): storage_uris.get(variant.name) or placeholder(default)}
    allowed = set(spec.served_models())
    for name, uri in storage_uris.items():
        if name == variant.name:
            continue
        pinned = model_uri(name)
        if pinned is None:
            raise InputError(f"storage for {name!r}: not a variant of endpoint {spec.name} nor a version NAME-vVERSION")
        if pinned.removeprefix("models:/").split("/")[0] not in allowed:
            raise InputError(f"storage for {name}: endpoint {spec.name} serves versions of "
                             f"{', '.join(sorted(allowed))} only", hint="add the model to multi_model.models")
        versions[name] = uri
    for name in versions:
        if not DNS_1123.match(name) or len(name) > 253:
            raise InputError(f"version {name}: a TrainedModel's name must be lower-case letters, digits and dashes",
                             hint="KServe names the object after the version it serves; register it under such a "
                                  "name")
    return versions


def multi_model_objects(spec: EndpointSpec, *, namespace: str, isvc: str, predictor: str, versions: Mapping[str, str],
                        capture_url: str | None, labels: dict[str, str]) -> list[dict[str, Any]]:
    """The InferenceService, TrainedModels and VirtualService above, as plain dicts (kiln.serving.render checks
    every rendered object and adds the Service and the ConfigMap)."""
    if spec.mode != "multi-model":
        raise InputError(f"endpoint {spec.name} is not multi-model (mode {spec.mode})")
    variant, budget = spec.variants[0], spec.multi_model.budget_mb
    runtime = get_runtime(variant.runtime)
    memory = f"{math.ceil(budget) + OVERHEAD_MB}Mi"
    model: dict[str, Any] = {
        "name": "kserve-container", "modelFormat": {"name": runtime.model_format}, "runtime": RUNTIME,
        "protocolVersion": "v2", "args": [f"--runtime={variant.runtime}", f"--budget-mb={budget:g}"],
        "resources": {"requests": {"cpu": "500m", "memory": memory}, "limits": {"cpu": "2", "memory": memory}},
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}
    predictor_spec: dict[str, Any] = {"model": model, "minReplicas": max(variant.min_replicas, 1)}
    if spec.capture.enabled and capture_url:
        # by_model: the collector files each record under the version its response names
        predictor_spec["logger"] = {"mode": "all",
                                    "url": f"{capture_url.rstrip('/')}/{spec.name}/{variant.name}?by_model=true"}
    inference_service = {
        "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
        "metadata": {"name": isvc, "namespace": namespace,
                     "labels": {**labels, "kiln.dev/variant": variant.name, "kiln.dev/role": "production"},
                     "annotations": {"kiln.dev/model": variant.model,
                                     "serving.kserve.io/deploymentMode": "RawDeployment"}},
        "spec": {"predictor": predictor_spec}}
    # Each version's share of the budget: KServe admits TrainedModels while their memory fits the server's.
    share = f"{max(int(budget // len(versions)), 1)}Mi"
    trained = [{"apiVersion": TRAINED_MODEL, "kind": "TrainedModel",
                "metadata": {"name": name, "namespace": namespace, "labels": {**labels, "kiln.dev/role": "model"},
                             "annotations": {"kiln.dev/model": model_uri(name) or name}},
                "spec": {"inferenceService": isvc,
                         "model": {"framework": runtime.model_format, "storageUri": uri, "memory": share}}}
               for name, uri in sorted(versions.items())]
    return [inference_service, *trained, _routes(spec, namespace, predictor, sorted(versions), labels)]


def _routes(spec: EndpointSpec, namespace: str, predictor: str, versions: list[str],
            labels: dict[str, str]) -> dict[str, Any]:
    default = served_name(spec.variants[0].model)
    # Fresh dicts at every use: a shared one would be written as a YAML anchor.
    def to() -> list[dict[str, Any]]:
        return [{"destination": {"host": predictor, "port": {"number": 80}}, "weight": 100}]

    def v1() -> dict[str, str]:
        return {"exact": f"/v1/models/{spec.name}:predict"}

    named = [{"name": f"model-{name}",
              "match": [{"uri": v1(), "headers": {MODEL_HEADER.decode(): {"exact": header}}}
                        for header in (name, (model_uri(name) or name).removeprefix("models:/"))],
              "rewrite": {"uri": f"/v1/models/{name}:predict"}, "route": to()} for name in versions]
    return {"apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
            "metadata": {"name": spec.name, "namespace": namespace, "labels": labels},
            "spec": {"hosts": [f"{spec.name}.{namespace}.svc.cluster.local"], "gateways": ["mesh"], "http": [
                *named,
                {"name": "default", "match": [{"uri": v1()}], "rewrite": {"uri": f"/v1/models/{default}:predict"},
                 "route": to()},
                {"name": "default-v2", "match": [{"uri": {"prefix": f"/v2/models/{spec.name}/"}}],
                 "rewrite": {"uri": f"/v2/models/{default}/"}, "route": to()},
                {"name": "by-path", "route": to()}]}}
