"""Cluster objects for an endpoint spec: KServe InferenceServices, an Istio VirtualService, the spec's ConfigMap.

Each production variant and the shadow get their own InferenceService `<endpoint>-<variant>`. One Istio
VirtualService `<endpoint>` splits traffic between their predictor Services by weight, mirrors a sample to the
shadow, and sends a request carrying `x-kiln-target-variant: <variant>` to that variant only, as the local router
does. A selector-less Service `<endpoint>` gives the VirtualService's host a name in the cluster's DNS. The
ConfigMap `kiln-endpoint-<endpoint>` holds the spec for the rollout controller (kiln.serving.controller), which
moves the weights during a rollout; given an ``image``, the controller's Deployment and its RBAC are rendered too.

Why per-variant InferenceServices behind a VirtualService rather than KServe's `canaryTrafficPercent`: KServe's
canary splits traffic only between the previous and the latest revision of ONE InferenceService, so it holds at
most two models, cannot give a caller a variant to target, and cannot mirror to a shadow. ``kserve_canary=True``
renders that form anyway for a spec of exactly two production variants.

Model storage: `storageUri` comes from ``storage_uris`` (variant name -> URI); `kiln endpoint render` resolves each
variant's models:/ URI to its registered version's artifact location and passes it in. Without one, a placeholder
`s3://kiln-models/<model>/<version or alias>` stands in and must be replaced before the objects are applied.

Asynchronous and multi-model endpoints have objects of their own (kiln.serving.render_async, render_multi).

Everything is checked before a file is written: Kubernetes objects against the 1.30 schemas (kubernetes_validate,
strict), InferenceServices and TrainedModels by a round trip through the KServe SDK's models, the VirtualService's
weights and hosts by hand. The files appear all together or not at all.
"""

from __future__ import annotations

import functools
import math
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.errors import InputError
from kiln.serving.render_async import KEDA, async_objects, keda_problems
from kiln.serving.render_multi import TRAINED_MODEL, multi_model_objects, served_versions
from kiln.serving.router import TARGET_HEADER
from kiln.serving.runtimes import get_runtime
from kiln.serving.spec import NAME, EndpointSpec, Variant
from kiln.settings import DEFAULT_CAPTURE_URL, DEFAULT_PROMETHEUS_URL

if TYPE_CHECKING:
    from kserve import V1beta1InferenceService

    from kiln.serving.rollout import Rollout

KUBERNETES_VERSION = "1.30"
PREDICTOR_SUFFIX = "-predictor"
# KServe names the predictor's Service `<isvc>-predictor`, and a Service name is a 63-character DNS-1035 label.
MAX_ISVC_NAME = 63 - len(PREDICTOR_SUFFIX)
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
WEIGHTED_ROUTE = "weighted"  # the VirtualService route the controller re-weights
# The chart's capture collector applies capture.sample_percent; `--capture-url` names another release's.
DEFAULT_CAPTURE = DEFAULT_CAPTURE_URL
# The chart's object store (its MinIO, bucket `kiln`), where a cluster's asynchronous requests and captures are kept.
DEFAULT_S3 = "http://kiln-minio.kubeflow.svc.cluster.local:9000"
DEFAULT_ASYNC_STORE, DEFAULT_CAPTURE_STORE = "s3://kiln/async", "s3://kiln/capture"
DEFAULT_PROMETHEUS = DEFAULT_PROMETHEUS_URL
PART_OF = {"app.kubernetes.io/part-of": "kiln"}

RESOURCES = {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}}


def isvc_name(endpoint: str, variant: str) -> str:
    """The InferenceService serving one variant of an endpoint."""
    return f"{endpoint}-{variant}"


def predictor_host(endpoint: str, variant: str, namespace: str) -> str:
    """The in-cluster host of a variant's KServe predictor Service."""
    return f"{isvc_name(endpoint, variant)}{PREDICTOR_SUFFIX}.{namespace}.svc.cluster.local"


def config_map_name(endpoint: str) -> str:
    """The ConfigMap holding an endpoint's spec (what the rollout controller and `kiln endpoint` read)."""
    return f"kiln-endpoint-{endpoint}"


def endpoint_host(endpoint: str, namespace: str) -> str:
    """The host callers in the cluster address; the VirtualService routes it."""
    return f"{endpoint}.{namespace}.svc.cluster.local"


def placeholder_storage_uri(model_uri: str) -> str:
    """`s3://kiln-models/<model>/<version or alias>` for a models:/ URI nobody resolved."""
    match = re.match(r"^models:/([^@/]+)[@/](.+)$", model_uri)
    if match is None:
        raise InputError(f"model URI '{model_uri}': expected models:/NAME@ALIAS or models:/NAME/VERSION")
    name, version = match.groups()
    return f"s3://kiln-models/{name}/{version}"


# Whole percents summing to exactly 100 (Istio's rule), by largest remainder; ties go to the earlier name.
def _percent(weights: Mapping[str, float]) -> dict[str, int]:
    total = sum(weights.values())
    if total <= 0:
        raise ValueError("the weights must add up to more than 0")
    exact = {n: 100 * w / total for n, w in weights.items()}
    out = {n: math.floor(x) for n, x in exact.items()}
    names = list(exact)
    by_remainder = sorted(names, key=lambda n: (-(exact[n] - out[n]), names.index(n)))
    for n in by_remainder[: 100 - sum(out.values())]:
        out[n] += 1
    return out


def weights_for(rollout: Rollout | None, base_weights: Mapping[str, float]) -> dict[str, int]:
    """Each production variant's VirtualService weight: integers summing to 100.

    ``base_weights`` are the spec's weights (share = weight / sum, as SageMaker computes it). During a rollout the
    stable and candidate variants pool their weights and split the pool by the rollout's share, so a promoted
    candidate takes all of the stable variant's traffic and a rolled-back one none.
    """
    weights = dict(base_weights)
    if rollout is not None:
        missing = sorted({rollout.stable, rollout.candidate} - set(weights))
        if missing:
            raise ValueError(f"not production variants of the endpoint: {', '.join(missing)}")
        pool = weights[rollout.stable] + weights[rollout.candidate]
        weights[rollout.stable] = pool * (1 - rollout.share)
        weights[rollout.candidate] = pool * rollout.share
    return _percent(weights)


def _labels(endpoint: str, variant: str | None = None, role: str | None = None) -> dict[str, str]:
    labels = {**PART_OF, "kiln.dev/endpoint": endpoint}
    if variant is not None:
        labels["kiln.dev/variant"] = variant
    if role is not None:
        labels["kiln.dev/role"] = role
    return labels


def _check_name(spec: EndpointSpec, variant: str) -> str:
    name = isvc_name(spec.name, variant)
    if len(name) > MAX_ISVC_NAME or not DNS_1035.match(name):
        raise InputError(f"endpoint {spec.name}: variant '{variant}' gives the InferenceService name '{name}' "
                         f"({len(name)} characters), which with '{PREDICTOR_SUFFIX}' is not a DNS label of at most "
                         f"63 characters starting with a letter",
                         hint=f"shorten the endpoint or the variant name: `<endpoint>-<variant>` may take at most "
                              f"{MAX_ISVC_NAME} characters")
    return name


def _inference_service(spec: EndpointSpec, variant: Variant, role: str, namespace: str, storage_uri: str,
                       capture_url: str, canary_percent: int | None = None,
                       serves_as: str | None = None) -> dict[str, Any]:
    from kserve import (
        V1beta1InferenceService,
        V1beta1InferenceServiceSpec,
        V1beta1LoggerSpec,
        V1beta1ModelFormat,
        V1beta1ModelSpec,
        V1beta1PredictorSpec,
    )
    from kubernetes.client import (
        ApiClient,
        V1Capabilities,
        V1EnvVar,
        V1ObjectMeta,
        V1ResourceRequirements,
        V1SecurityContext,
    )

    named = serves_as or variant.name
    runtime = get_runtime(variant.runtime)
    # Every variant answers the same request path, so each serves its model under the endpoint's name (KServe would
    # name it after the InferenceService) and speaks the v2 protocol; the runtime says how its server takes the name.
    env = [V1EnvVar(name=runtime.name_env, value=spec.name)] if runtime.name_env else None
    args = [f"{runtime.name_flag}={spec.name}"] if runtime.name_flag else None
    # No privilege escalation, no capabilities; the runtime's image decides its user (Triton's may need root).
    security = V1SecurityContext(allow_privilege_escalation=False, capabilities=V1Capabilities(drop=["ALL"]))
    model = V1beta1ModelSpec(name="kserve-container", model_format=V1beta1ModelFormat(name=runtime.model_format),
                             runtime=runtime.cluster_runtime, storage_uri=storage_uri, protocol_version="v2",
                             env=env, args=args,
                             resources=V1ResourceRequirements(**RESOURCES), security_context=security)
    logger = None
    if spec.capture.enabled:
        url = f"{capture_url.rstrip('/')}/{spec.name}/{variant.name}" + ("?shadow=true" if role == "shadow" else "")
        logger = V1beta1LoggerSpec(mode="all", url=url)
    annotations = {"kiln.dev/model": variant.model}
    if variant.min_replicas == 0:
        # Scale to zero needs Knative: Serverless mode, the pods kept this long after the last request.
        annotations["serving.kserve.io/deploymentMode"] = "Serverless"
        annotations["autoscaling.knative.dev/scale-to-zero-pod-retention-period"] = f"{int(variant.idle_seconds)}s"
    elif canary_percent is None:
        # A plain Deployment and Service per predictor: Istio routes and mirrors to it directly, and reports its
        # metrics under the Service's name, which the rollout controller queries.
        annotations["serving.kserve.io/deploymentMode"] = "RawDeployment"
    else:
        # No RawDeployment here: KServe's canary splits between Knative revisions, which only Serverless mode has.
        annotations["kiln.dev/canary-variant"] = variant.name
    isvc = V1beta1InferenceService(
        api_version="serving.kserve.io/v1beta1", kind="InferenceService",
        metadata=V1ObjectMeta(name=isvc_name(spec.name, named), namespace=namespace,
                              labels=_labels(spec.name, named, role), annotations=annotations),
        spec=V1beta1InferenceServiceSpec(predictor=V1beta1PredictorSpec(
            model=model, logger=logger, min_replicas=variant.min_replicas, canary_traffic_percent=canary_percent)))
    serialized: dict[str, Any] = ApiClient().sanitize_for_serialization(isvc)
    return serialized


# A Kubernetes API client that also knows KServe's models: each SDK deserializes only its own, and an
# InferenceService nests both.
@functools.cache
def _sdk_client() -> Any:
    import kserve.models
    from kubernetes.client import ApiClient

    class Client(ApiClient):
        def _ApiClient__deserialize(self, data: Any, klass: Any) -> Any:
            if klass == "ResourceQuantity":  # KServe's name for a quantity ("512Mi"), which has no model
                return data if isinstance(data, (str, int, float)) else self._ApiClient__deserialize(data, "str")
            if isinstance(klass, str) and hasattr(kserve.models, klass):
                klass = getattr(kserve.models, klass)
            return super()._ApiClient__deserialize(data, klass)

    return Client()


def as_inference_service(data: Mapping[str, Any]) -> V1beta1InferenceService:
    """A serialized InferenceService as the KServe SDK's model; InputError naming any field the model does not know."""
    isvc: V1beta1InferenceService = as_kserve_object(data, "V1beta1InferenceService")
    return isvc


def as_kserve_object(data: Mapping[str, Any], model: str) -> Any:
    """A serialized KServe object as the SDK's ``model``; InputError naming any field the model does not know."""
    client = _sdk_client()
    kind, name = data.get("kind"), data.get("metadata", {}).get("name")
    try:
        obj = client._ApiClient__deserialize(dict(data), model)
    except (TypeError, ValueError, AttributeError) as exc:
        raise InputError(f"{kind} {name}: not a valid object: {exc}") from None
    again = client.sanitize_for_serialization(obj)
    if again != data:
        raise InputError(f"{kind} {name}: fields the KServe schema does not know: "
                         f"{', '.join(_differences(data, again)) or '(values changed)'}")
    return obj


def _differences(a: Any, b: Any, at: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [p for k in a for p in (_differences(a[k], b[k], f"{at}.{k}") if k in b else [f"{at}.{k}"[1:]])]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [p for i, (x, y) in enumerate(zip(a, b)) for p in _differences(x, y, f"{at}[{i}]")]
    return [] if a == b else [at[1:]]


def _virtual_service(spec: EndpointSpec, namespace: str) -> dict[str, Any]:
    def to(variant: str, weight: int) -> dict[str, Any]:
        return {"destination": {"host": predictor_host(spec.name, variant, namespace), "port": {"number": 80}},
                "weight": weight}

    def mirror() -> dict[str, Any]:
        # Every request, targeted or not, may be copied to the shadow; Istio does not wait for the copy's answer.
        if spec.shadow is None:
            return {}
        return {"mirror": {"host": predictor_host(spec.name, spec.shadow.name, namespace), "port": {"number": 80}},
                "mirrorPercentage": {"value": float(spec.shadow.sample_percent)}}

    weights = weights_for(None, {v.name: v.weight for v in spec.variants})
    targeted = [{"name": f"target-{v.name}", "match": [{"headers": {TARGET_HEADER: {"exact": v.name}}}],
                 "route": [to(v.name, 100)], **mirror()} for v in spec.variants]
    weighted = {"name": WEIGHTED_ROUTE, "route": [to(n, w) for n, w in weights.items()], **mirror()}
    return {"apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
            "metadata": {"name": spec.name, "namespace": namespace, "labels": _labels(spec.name)},
            "spec": {"hosts": [endpoint_host(spec.name, namespace)], "gateways": ["mesh"],
                     "http": [*targeted, weighted]}}


def _endpoint_service(spec: EndpointSpec, namespace: str) -> dict[str, Any]:
    # No selector: the callers' sidecars route the name by the VirtualService. Port name http: Istio treats it as HTTP.
    # The protocol is spelled out: server-side apply before Kubernetes 1.21 refuses a port without it.
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": spec.name, "namespace": namespace, "labels": _labels(spec.name)},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP",
                                "appProtocol": "http"}]}}


def _config_map(spec: EndpointSpec, namespace: str) -> dict[str, Any]:
    import yaml

    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": config_map_name(spec.name), "namespace": namespace, "labels": _labels(spec.name)},
            "data": {"endpoint.yaml": yaml.safe_dump(spec.model_dump(mode="json", exclude=_other_modes(spec)),
                                                     sort_keys=False)}}


def _other_modes(spec: EndpointSpec) -> set[str]:
    """The spec's sections of the modes it is not in: left out of the stored spec (their defaults come back)."""
    return {key for key, mode in (("async_inference", "async"), ("multi_model", "multi-model")) if spec.mode != mode}


def _controller(spec: EndpointSpec, namespace: str, image: str, prometheus: str, metrics: str,
                interval: float) -> list[dict[str, Any]]:
    name = f"kiln-rollout-{spec.name}"
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": _labels(spec.name, role="controller")}
    rules = [{"apiGroups": ["networking.istio.io"], "resources": ["virtualservices"], "resourceNames": [spec.name],
              "verbs": ["get", "patch"]},
             {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [config_map_name(spec.name)],
              "verbs": ["get"]}]
    args = ["python", "-m", "kiln.serving.controller", "--endpoint", spec.name, "--namespace", namespace,
            "--prometheus", prometheus, "--metrics", metrics, "--interval", f"{interval:g}"]
    selector = {"app.kubernetes.io/name": name}
    pod = {"metadata": {"labels": {**meta["labels"], **selector}},
           "spec": {"serviceAccountName": name,
                    "containers": [{"name": "controller", "image": image, "command": args,
                                    "resources": {"requests": {"cpu": "50m", "memory": "128Mi"},
                                                  "limits": {"cpu": "500m", "memory": "512Mi"}}}]}}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta, "rules": rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta,
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]},
        # One replica, replaced rather than rolled: two controllers must never patch the same VirtualService.
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
         "spec": {"replicas": 1, "strategy": {"type": "Recreate"}, "selector": {"matchLabels": selector},
                  "template": pod}},
    ]


def objects(spec: EndpointSpec, *, namespace: str = "kiln", storage_uris: Mapping[str, str] | None = None,
            image: str | None = None, kserve_canary: bool = False, prometheus: str = DEFAULT_PROMETHEUS,
            capture_url: str = DEFAULT_CAPTURE, metrics: str = "istio", interval: float = 10.0,
            async_store: str = DEFAULT_ASYNC_STORE, async_store_endpoint: str | None = DEFAULT_S3,
            capture_store: str = DEFAULT_CAPTURE_STORE) -> list[dict[str, Any]]:
    """The cluster objects for ``spec`` as plain dicts, checked (see the module docstring); nothing is written."""
    if not re.match(NAME, namespace) or len(namespace) > 63:
        raise InputError(f"namespace '{namespace}' is not a DNS label",
                         hint="at most 63 lower-case letters, digits and dashes, a letter or digit at each end")
    if not re.match(r"^https?://[A-Za-z0-9.-]+(:\d+)?/?$", capture_url):
        raise InputError(f"capture URL '{capture_url}': expected http://HOST[:PORT], the capture collector's Service")
    storage_uris = dict(storage_uris or {})
    every = [*spec.variants, *([spec.shadow] if spec.shadow else [])]
    unknown = sorted(set(storage_uris) - {v.name for v in every})
    if unknown and spec.mode != "multi-model":  # a multi-model endpoint's versions are checked by served_versions
        raise InputError(f"storage URIs given for variants the endpoint {spec.name} does not have: "
                         f"{', '.join(unknown)}", hint=f"its variants: {', '.join(v.name for v in every)}")
    for v in every:
        _check_name(spec, v.name)

    def storage(v: Variant) -> str:
        return storage_uris.get(v.name) or placeholder_storage_uri(v.model)

    if spec.mode == "multi-model":
        if kserve_canary:
            raise InputError(f"endpoint {spec.name} is multi-model: it has no canary")
        variant = spec.variants[0]
        out = multi_model_objects(spec, namespace=namespace, isvc=isvc_name(spec.name, variant.name),
                                  predictor=predictor_host(spec.name, variant.name, namespace),
                                  versions=served_versions(spec, storage_uris, placeholder_storage_uri),
                                  capture_url=capture_url, labels=_labels(spec.name))
        out += [_endpoint_service(spec, namespace), _config_map(spec, namespace)]
        check(out)
        return out
    if spec.mode == "async":
        if image is None:
            raise InputError(f"endpoint {spec.name} is asynchronous: its front and workers run Kiln's image",
                             hint="name it with --image (e.g. kiln:0.1.0)")
        if kserve_canary:
            raise InputError(f"endpoint {spec.name} is asynchronous: it has no canary")
        out = async_objects(spec, namespace=namespace, image=image, storage_uri=storage(spec.variants[0]),
                            store=async_store, store_endpoint_url=async_store_endpoint, labels=_labels(spec.name),
                            capture=capture_store)
        out.append(_config_map(spec, namespace))
        check(out)
        return out
    if kserve_canary:
        if len(spec.variants) != 2 or spec.shadow is not None:
            raise InputError(f"endpoint {spec.name}: KServe's own canary takes exactly two production variants and "
                             f"no shadow (it splits one InferenceService between two revisions and cannot mirror)",
                             hint="render without the KServe canary to get one InferenceService per variant")
        first, second = spec.variants
        percent = weights_for(None, {v.name: v.weight for v in spec.variants})[second.name]
        # Applied over the live `<endpoint>-<first>`: its new revision serves the second variant's model and takes
        # `percent`; KServe keeps the previous revision (the first variant's model) for the rest.
        out = [_inference_service(spec, second, "production", namespace, storage(second), capture_url, percent,
                                  first.name)]
    else:
        out = [_inference_service(spec, v, "production", namespace, storage(v), capture_url) for v in spec.variants]
        if spec.shadow is not None:
            out.append(_inference_service(spec, spec.shadow, "shadow", namespace, storage(spec.shadow), capture_url))
        out += [_virtual_service(spec, namespace), _endpoint_service(spec, namespace)]
        if image is not None:
            out += _controller(spec, namespace, image, prometheus, metrics, interval)
    out.append(_config_map(spec, namespace))
    check(out)
    return out


def check(objs: Sequence[Mapping[str, Any]]) -> None:
    """InputError naming the first object that is not valid: Kubernetes schemas, the KServe model, route structure."""
    import kubernetes_validate

    predictors: set[str] = set()
    isvcs: set[str] = set()
    for obj in objs:
        if obj.get("kind") == "InferenceService":
            isvc = as_inference_service(obj)
            isvcs.add(isvc.metadata.name)
            predictors.add(f"{isvc.metadata.name}{PREDICTOR_SUFFIX}.{isvc.metadata.namespace}.svc.cluster.local")
    for obj in objs:
        if obj.get("apiVersion") == TRAINED_MODEL:
            trained = as_kserve_object(obj, "V1alpha1TrainedModel")
            if trained.spec.inference_service not in isvcs:
                raise InputError(f"TrainedModel {trained.metadata.name}: its InferenceService "
                                 f"{trained.spec.inference_service} is not rendered")
    services = {f"{o['metadata']['name']}.{o['metadata']['namespace']}.svc.cluster.local"
                for o in objs if o.get("kind") == "Service"}
    for obj in objs:
        kind, name = obj.get("kind"), obj.get("metadata", {}).get("name")
        if obj.get("apiVersion", "").startswith("networking.istio.io/"):
            problems = _route_problems(obj, predictors, services)
            if problems:
                raise InputError(f"{kind} {name}: {'; '.join(problems)}")
        elif obj.get("apiVersion") == KEDA:
            problems = keda_problems(dict(obj))
            if problems:
                raise InputError(f"{kind} {name}: {'; '.join(problems)}")
        elif kind != "InferenceService" and obj.get("apiVersion") != TRAINED_MODEL:
            try:
                kubernetes_validate.validate(dict(obj), KUBERNETES_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                where = ".".join(map(str, exc.absolute_path)) or "(top)"
                raise InputError(f"{kind} {name}: not valid for Kubernetes {KUBERNETES_VERSION} at {where}: "
                                 f"{exc.message}") from None
            except kubernetes_validate.SchemaNotFoundError as exc:
                raise InputError(f"{kind} {name}: {exc.message}") from None


# Istio has no SDK model to check against: weights, hosts and mirror percentages are checked here.
def _route_problems(vs: Mapping[str, Any], predictors: set[str], services: set[str]) -> list[str]:
    problems = [f"host {h} is not a rendered Service" for h in vs["spec"]["hosts"] if h not in services]
    for route in vs["spec"]["http"]:
        weights = [d.get("weight", 0) for d in route["route"]]
        if sum(weights) != 100 or any(not isinstance(w, int) or w < 0 for w in weights):
            problems.append(f"route {route.get('name')}: weights {weights} are not whole numbers summing to 100")
        hosts = [d["destination"]["host"] for d in route["route"]] + \
                ([route["mirror"]["host"]] if "mirror" in route else [])
        problems += [f"route {route.get('name')}: {h} is no rendered predictor" for h in hosts if h not in predictors]
        percent = route.get("mirrorPercentage", {}).get("value", 100.0)
        if not 0 <= percent <= 100:
            problems.append(f"route {route.get('name')}: mirror percentage {percent} is outside 0..100")
    return problems


def to_yaml(obj: Mapping[str, Any]) -> str:
    """One object as YAML, multi-line strings (the spec in the ConfigMap) as readable blocks."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)

    Dumper.add_representer(str, text)
    dumped: str = yaml.dump(dict(obj), Dumper=Dumper, sort_keys=False)
    return dumped


def _file_name(obj: Mapping[str, Any]) -> str:
    return f"{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"


@dataclass(frozen=True)
class RenderedEndpoint:
    """An endpoint's cluster objects written to a folder, one YAML file each (`kiln endpoint render`)."""

    endpoint: str
    folder: Path
    files: list[Path]

    def to_dict(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "files": [str(p) for p in self.files]}


def render(spec: EndpointSpec, out_dir: Path, *, namespace: str = "kiln", storage_uris: dict[str, str] | None = None,
           image: str | None = None, kserve_canary: bool = False,
           prometheus: str = DEFAULT_PROMETHEUS, capture_url: str = DEFAULT_CAPTURE) -> RenderedEndpoint:
    """Write the endpoint's cluster objects to ``out_dir`` (absent or empty), one YAML file each."""
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise InputError(f"{out_dir}: already exists and is not an empty folder",
                         hint="name a new folder, or empty this one, so no stale object is applied with the new")
    objs = objects(spec, namespace=namespace, storage_uris=storage_uris, image=image, kserve_canary=kserve_canary,
                   prometheus=prometheus, capture_url=capture_url)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp's folder is private; the rendered objects hold no secret
        for obj in objs:
            (tmp / _file_name(obj)).write_text(to_yaml(obj))
        if out_dir.exists():
            out_dir.rmdir()  # empty, checked above
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return RenderedEndpoint(spec.name, out_dir, [out_dir / _file_name(obj) for obj in objs])
