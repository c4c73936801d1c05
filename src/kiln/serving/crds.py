"""CustomResourceDefinitions for what an endpoint applies and the chart's serving runtime, for an API server without
KServe or Istio installed.

Usage: python -m kiln.serving.crds [--apply KUBECONFIG]
(without --apply, a JSON List of the CRDs for `kubectl apply --server-side -f -`)

On a cluster with KServe and Istio their own CRDs are there already; this is for an API server that has neither
(the local cluster of `scripts/dev-cluster.sh`), so `kiln endpoint deploy` can create, change and delete the objects
and the API server checks their fields. The InferenceService's and ServingRuntime's schemas are generated from the
KServe SDK's models (and the Kubernetes client's models they nest), so the API server refuses what KServe's own
schema would: a field of the wrong type, with its path. Istio publishes no Python model: the VirtualService fields Kiln writes are typed here by
hand, and the rest kept as given.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from typing import Any

from kiln.errors import KilnError, ServiceError
from kiln.serving.kube import connect

PRESERVE = {"x-kubernetes-preserve-unknown-fields": True}
INT_OR_STRING = {"x-kubernetes-int-or-string": True}
PRIMITIVES: dict[str, dict[str, Any]] = {
    "str": {"type": "string"}, "int": {"type": "integer"}, "float": {"type": "number"},
    "bool": {"type": "boolean"}, "datetime": {"type": "string", "format": "date-time"},
    "date": {"type": "string", "format": "date"},
    # The SDKs type IntOrString fields (ports, maxSurge) and free-form ones as `object`.
    "object": PRESERVE,
    # A quantity is written as a string ("500m") or a number (2).
    "ResourceQuantity": INT_OR_STRING,
    "KnativeURL": {"type": "string"},
}


def _model(name: str) -> type | None:
    import kserve.models
    import kubernetes.client

    # KServe's SDK names some Kubernetes types by their Go package (K8sIoApiAppsV1DeploymentStrategy).
    plain = re.sub(r"^K8sIoApi[A-Z][a-z]+(?=V\d)", "", name)
    for module, wanted in ((kserve.models, name), (kubernetes.client, plain)):
        found = getattr(module, wanted, None)
        if isinstance(found, type) and hasattr(found, "openapi_types"):
            return found
    return None


def schema_of(type_name: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of one SDK type name (`str`, `list[V1Container]`, `V1beta1ModelSpec`, ...)."""
    if type_name in PRIMITIVES:
        return dict(PRIMITIVES[type_name])
    inner = re.fullmatch(r"list\[(.+)\]", type_name)
    if inner:
        return {"type": "array", "items": schema_of(inner.group(1), seen)}
    inner = re.fullmatch(r"dict\(str, (.+)\)", type_name)
    if inner:
        return {"type": "object", "additionalProperties": schema_of(inner.group(1), seen)}
    model = _model(type_name)
    if model is None and type_name.endswith("Quantity"):
        return dict(INT_OR_STRING)  # V1beta1MetricQuantity: named by the SDK, not defined in it
    if model is None:
        # A model KServe's SDK names but neither SDK defines (a Kubernetes type newer than the Kubernetes client).
        return {"type": "object", **PRESERVE}
    if type_name in seen:
        return {"type": "object", **PRESERVE}  # a recursive type: its inner levels are kept as given
    if type_name == "V1ObjectMeta":
        return {"type": "object"}  # the API server checks metadata itself
    attribute_map: dict[str, str] = model.attribute_map  # type: ignore[attr-defined]
    types: dict[str, str] = model.openapi_types  # type: ignore[attr-defined]
    return {"type": "object", "properties": {attribute_map[attr]: schema_of(t, (*seen, type_name))
                                             for attr, t in sorted(types.items())}}


def _crd(group: str, kind: str, plural: str, short: list[str], versions: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.{group}", "labels": {"app.kubernetes.io/part-of": "kiln"}},
            "spec": {"group": group, "scope": "Namespaced",
                     "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "shortNames": short,
                               "listKind": f"{kind}List"},
                     "versions": versions}}


def inference_service_crd() -> dict[str, Any]:
    """KServe's InferenceService (serving.kserve.io/v1beta1), its schema generated from the KServe SDK."""
    schema = schema_of("V1beta1InferenceService")
    schema["properties"]["status"] = {"type": "object", **PRESERVE}  # written by KServe's controller only
    ready = {"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type=='Ready')].status"}
    return _crd("serving.kserve.io", "InferenceService", "inferenceservices", ["isvc"], [
        {"name": "v1beta1", "served": True, "storage": True, "schema": {"openAPIV3Schema": schema},
         "subresources": {"status": {}},
         "additionalPrinterColumns": [{"name": "URL", "type": "string", "jsonPath": ".status.url"}, ready]}])


def serving_runtime_crd() -> dict[str, Any]:
    """KServe's ServingRuntime (serving.kserve.io/v1alpha1, what the chart's `kiln-tvm` is), its schema generated from
    the KServe SDK."""
    schema = schema_of("V1alpha1ServingRuntime")
    schema["properties"]["status"] = {"type": "object", **PRESERVE}
    disabled = {"name": "Disabled", "type": "boolean", "jsonPath": ".spec.disabled"}
    formats = {"name": "ModelType", "type": "string", "jsonPath": ".spec.supportedModelFormats[*].name"}
    return _crd("serving.kserve.io", "ServingRuntime", "servingruntimes", [], [
        {"name": "v1alpha1", "served": True, "storage": True, "schema": {"openAPIV3Schema": schema},
         "subresources": {"status": {}}, "additionalPrinterColumns": [disabled, formats]}])


def trained_model_crd() -> dict[str, Any]:
    """KServe's TrainedModel (serving.kserve.io/v1alpha1: a version a multi-model endpoint serves), its schema
    generated from the KServe SDK."""
    schema = schema_of("V1alpha1TrainedModel")
    schema["properties"]["status"] = {"type": "object", **PRESERVE}
    isvc = {"name": "InferenceService", "type": "string", "jsonPath": ".spec.inferenceService"}
    return _crd("serving.kserve.io", "TrainedModel", "trainedmodels", ["tm"], [
        {"name": "v1alpha1", "served": True, "storage": True, "schema": {"openAPIV3Schema": schema},
         "subresources": {"status": {}}, "additionalPrinterColumns": [isvc]}])


def _destination() -> dict[str, Any]:
    return {"type": "object", "required": ["host"],
            "properties": {"host": {"type": "string"}, "subset": {"type": "string"},
                           "port": {"type": "object", "properties": {"number": {"type": "integer", "minimum": 0,
                                                                                "maximum": 65535}}}}}


def virtual_service_crd() -> dict[str, Any]:
    """Istio's VirtualService (networking.istio.io v1beta1 and v1alpha3): the fields Kiln writes typed, others kept."""
    string_match = {"type": "object", "properties": {k: {"type": "string"} for k in ("exact", "prefix", "regex")}}
    route = {"type": "object", **PRESERVE, "properties": {
        "name": {"type": "string"},
        "match": {"type": "array", "items": {"type": "object", **PRESERVE, "properties": {
            "uri": string_match, "headers": {"type": "object", "additionalProperties": string_match}}}},
        "rewrite": {"type": "object", **PRESERVE, "properties": {"uri": {"type": "string"}}},
        "route": {"type": "array", "items": {"type": "object", **PRESERVE, "required": ["destination"], "properties": {
            "destination": _destination(), "weight": {"type": "integer", "minimum": 0, "maximum": 100}}}},
        "mirror": _destination(),
        "mirrorPercentage": {"type": "object", "properties": {"value": {"type": "number", "minimum": 0,
                                                                        "maximum": 100}}}}}
    spec = {"type": "object", **PRESERVE, "properties": {
        "hosts": {"type": "array", "items": {"type": "string"}},
        "gateways": {"type": "array", "items": {"type": "string"}},
        "http": {"type": "array", "items": route}}}
    schema = {"type": "object", "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                                               "metadata": {"type": "object"}, "spec": spec,
                                               "status": {"type": "object", **PRESERVE}}}
    return _crd("networking.istio.io", "VirtualService", "virtualservices", ["vs"], [
        {"name": version, "served": True, "storage": version == "v1beta1", "schema": {"openAPIV3Schema": schema},
         "subresources": {"status": {}}} for version in ("v1beta1", "v1alpha3")])


def crds() -> list[dict[str, Any]]:
    """Every CRD an endpoint's objects need."""
    return [inference_service_crd(), serving_runtime_crd(), trained_model_crd(), virtual_service_crd()]


def _established(crd: dict[str, Any] | None) -> bool:
    conditions = ((crd or {}).get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)


def apply(kubeconfig: str, timeout: float = 60.0) -> list[str]:
    """Register the CRDs on the kubeconfig's cluster (server-side apply) and wait until the API serves them."""
    kube = connect(kubeconfig)
    names = [kube.apply(crd)["metadata"]["name"] for crd in crds()]
    deadline = time.monotonic() + timeout
    for name in names:
        while not _established(kube.get("CustomResourceDefinition", None, name)):
            if time.monotonic() > deadline:
                raise ServiceError(f"CustomResourceDefinition {name}: not established after {timeout:.0f} s")
            time.sleep(0.5)
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--apply", metavar="KUBECONFIG", help="Register them on this kubeconfig's cluster.")
    args = parser.parse_args(argv)
    if args.apply is None:
        json.dump({"apiVersion": "v1", "kind": "List", "items": crds()}, sys.stdout)
        return 0
    try:
        print("registered " + ", ".join(apply(args.apply)), file=sys.stderr)
    except KilnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0

if __name__ == "__main__":
    raise SystemExit(main())
