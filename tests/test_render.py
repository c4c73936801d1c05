"""Cluster objects for an endpoint, checked before they are written, and the rollout controller on metric sequences."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from kiln.errors import InputError, ServiceError
from kiln.serving import render as rendering
from kiln.serving.controller import (
    Controller,
    PrometheusMetrics,
    load_rollout,
    parse_vector,
)
from kiln.serving.render import (
    as_inference_service,
    check,
    objects,
    predictor_host,
    render,
    weights_for,
)
from kiln.serving.rollout import VariantStats
from kiln.serving.spec import EndpointSpec, parse_spec

BASE: dict[str, Any] = {
    "name": "churn",
    "variants": [{"name": "blue", "model": "models:/churn@champion", "weight": 9},
                 {"name": "green", "model": "models:/churn/4", "runtime": "onnx", "weight": 1}],
    "shadow": {"name": "dark", "model": "models:/churn/5", "runtime": "tvm", "sample_percent": 10},
    "policy": {"type": "canary", "step_percent": 10, "bake_seconds": 60},
    "guardrails": {"max_error_rate": 0.05, "max_p99_increase_ms": 25, "min_requests": 20},
    "capture": {"enabled": True},
}


def make_spec(**changes: Any) -> EndpointSpec:
    return parse_spec({**BASE, **changes})


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def test_render_writes_one_checked_object_per_file(tmp_path: Path) -> None:
    spec = make_spec()
    out = tmp_path / "out"
    paths = render(spec, out, storage_uris={"blue": "s3://models/churn/3/artifacts"}).files
    assert sorted(p.name for p in paths) == sorted(p.name for p in out.iterdir()) == sorted([
        "inferenceservice-churn-blue.yaml", "inferenceservice-churn-green.yaml", "inferenceservice-churn-dark.yaml",
        "virtualservice-churn.yaml", "service-churn.yaml", "configmap-kiln-endpoint-churn.yaml"])
    assert all(p.is_file() for p in paths)
    assert [p.name for p in tmp_path.iterdir()] == ["out"], "no temporary folder is left beside the output"

    isvcs = {}
    for name in ("blue", "green", "dark"):
        data = load(out / f"inferenceservice-churn-{name}.yaml")
        isvc = as_inference_service(data)
        assert type(isvc).__name__ == "V1beta1InferenceService" and type(isvc).__module__.startswith("kserve.")
        assert type(isvc.metadata).__name__ == "V1ObjectMeta"
        assert isvc.api_version == "serving.kserve.io/v1beta1" and isvc.kind == "InferenceService"
        assert isvc.metadata.name == f"churn-{name}" and isvc.metadata.namespace == "kiln"
        assert isvc.metadata.labels == {"app.kubernetes.io/part-of": "kiln", "kiln.dev/endpoint": "churn",
                                        "kiln.dev/variant": name,
                                        "kiln.dev/role": "shadow" if name == "dark" else "production"}
        predictor = isvc.spec.predictor
        assert predictor.logger.mode == "all"
        # the chart's collector in its own namespace; the shadow's records say they are the shadow's
        assert predictor.logger.url == (f"http://kiln-capture.kubeflow.svc.cluster.local/churn/{name}"
                                        + ("?shadow=true" if name == "dark" else ""))
        assert predictor.model.resources.requests and predictor.model.resources.limits
        assert predictor.canary_traffic_percent is None
        isvcs[name] = isvc
    models = {n: i.spec.predictor.model for n, i in isvcs.items()}
    assert {n: (m.model_format.name, m.runtime) for n, m in models.items()} == {
        "blue": ("mlflow", None), "green": ("onnx", None), "dark": ("tvm", "kiln-tvm")}
    assert models["blue"].storage_uri == "s3://models/churn/3/artifacts"
    assert models["green"].storage_uri == "s3://kiln-models/churn/4", "a placeholder from the models:/ URI"
    assert models["dark"].storage_uri == "s3://kiln-models/churn/5"

    vs = load(out / "virtualservice-churn.yaml")
    service = load(out / "service-churn.yaml")
    hosts = {n: predictor_host("churn", n, "kiln") for n in isvcs}
    assert set(hosts.values()) == {f"{i.metadata.name}-predictor.kiln.svc.cluster.local" for i in isvcs.values()}
    assert vs["apiVersion"] == "networking.istio.io/v1beta1" and vs["metadata"]["name"] == "churn"
    assert vs["spec"]["hosts"] == [f"{service['metadata']['name']}.kiln.svc.cluster.local"]
    routes = {r["name"]: r for r in vs["spec"]["http"]}
    for route in routes.values():
        weights = [d["weight"] for d in route["route"]]
        assert sum(weights) == 100 and all(isinstance(w, int) for w in weights)
        assert {d["destination"]["host"] for d in route["route"]} <= set(hosts.values())
        assert route["mirror"]["host"] == hosts["dark"] and route["mirrorPercentage"]["value"] == 10.0
    weighted = {d["destination"]["host"]: d["weight"] for d in routes["weighted"]["route"]}
    assert weighted == {hosts["blue"]: 90, hosts["green"]: 10}
    for name in ("blue", "green"):
        route = routes[f"target-{name}"]
        assert route["match"] == [{"headers": {"x-kiln-target-variant": {"exact": name}}}]
        assert [d["destination"]["host"] for d in route["route"]] == [hosts[name]]
    assert list(routes)[-1] == "weighted", "header routes come first: Istio takes the first route that matches"

    cm = load(out / "configmap-kiln-endpoint-churn.yaml")
    assert kubernetes_validate.validate(cm, "1.30", strict=True) == "1.30"
    assert kubernetes_validate.validate(service, "1.30", strict=True) == "1.30"
    assert parse_spec(yaml.safe_load(cm["data"]["endpoint.yaml"])) == spec


def test_the_validators_are_live() -> None:
    cm = next(o for o in objects(make_spec()) if o["kind"] == "ConfigMap")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate({**cm, "dataa": {"x": "y"}}, "1.30", strict=True)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate({**cm, "data": {"endpoint.yaml": 3}}, "1.30", strict=True)
    with pytest.raises(InputError, match=r"ConfigMap kiln-endpoint-churn: not valid for Kubernetes 1.30"):
        check([{**cm, "dataa": {"x": "y"}}])

    isvc = next(o for o in objects(make_spec()) if o["kind"] == "InferenceService")
    broken = json.loads(json.dumps(isvc))
    broken["spec"]["predictor"]["model"]["storageUrl"] = "s3://typo"
    with pytest.raises(InputError, match=r"spec\.predictor\.model\.storageUrl"):
        as_inference_service(broken)


def test_the_controller_objects_pass_the_kubernetes_schemas(tmp_path: Path) -> None:
    paths = render(make_spec(), tmp_path / "out", namespace="ml", image="registry.example/kiln:0.1.0").files
    kinds = {load(p)["kind"] for p in paths}
    assert {"Deployment", "ServiceAccount", "Role", "RoleBinding"} <= kinds
    deployment = load(tmp_path / "out" / "deployment-kiln-rollout-churn.yaml")
    kubernetes_validate.validate(deployment, "1.30", strict=True)
    command = deployment["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:3] == ["python", "-m", "kiln.serving.controller"]
    assert command[command.index("--namespace") + 1] == "ml"


def test_equal_weights_give_whole_percents_summing_to_100(tmp_path: Path) -> None:
    assert weights_for(None, {"a": 1, "b": 1, "c": 1}) == {"a": 34, "b": 33, "c": 33}
    spec = make_spec(variants=[{"name": n, "model": "models:/churn/1", "weight": 1} for n in ("a", "b", "c")])
    vs = load(render(spec, tmp_path / "out").files[0].parent / "virtualservice-churn.yaml")
    weighted = next(r for r in vs["spec"]["http"] if r["name"] == "weighted")
    assert sorted(d["weight"] for d in weighted["route"]) == [33, 33, 34]


@given(st.lists(st.floats(0.0, 1000.0, allow_nan=False), min_size=1, max_size=8).filter(lambda w: sum(w) > 0))
def test_weights_are_whole_percents_within_one_of_the_share(weights: list[float]) -> None:
    out = weights_for(None, {f"v{i}": w for i, w in enumerate(weights)})
    assert sum(out.values()) == 100
    for i, w in enumerate(weights):
        assert abs(out[f"v{i}"] - 100 * w / sum(weights)) < 1


def test_kserve_canary_is_one_inference_service(tmp_path: Path) -> None:
    spec = make_spec(shadow=None)
    paths = render(spec, tmp_path / "out", kserve_canary=True).files
    isvcs = [as_inference_service(load(p)) for p in paths if p.name.startswith("inferenceservice-")]
    assert len(isvcs) == 1
    (isvc,) = isvcs
    assert isvc.metadata.name == "churn-blue", "applied over the first variant's InferenceService"
    assert isvc.spec.predictor.canary_traffic_percent == 10
    assert isvc.spec.predictor.model.storage_uri == "s3://kiln-models/churn/4", "its new revision: the second model"
    assert not any(p.name.startswith("virtualservice-") for p in paths)
    with pytest.raises(InputError, match="exactly two production variants and no shadow"):
        render(make_spec(), tmp_path / "other", kserve_canary=True)
    assert not (tmp_path / "other").exists()


def test_an_existing_folder_with_files_is_refused_and_left_alone(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.yaml").write_text("keep: me\n")
    with pytest.raises(InputError, match=str(out)):
        render(make_spec(), out)
    assert [p.name for p in out.iterdir()] == ["mine.yaml"] and (out / "mine.yaml").read_text() == "keep: me\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert len(render(make_spec(), empty).files) == 6, "an empty folder is fine"


def test_a_failure_part_way_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    long = make_spec(name="c" * 20, variants=[{"name": "v" * 40, "model": "models:/churn/1"}], shadow=None)
    with pytest.raises(InputError, match=f"variant '{'v' * 40}'"):
        render(long, tmp_path / "out")
    real, calls = rendering.to_yaml, []

    def failing(obj: dict[str, Any]) -> str:
        calls.append(obj["kind"])
        if len(calls) == 3:
            raise OSError("disk full")
        return real(obj)

    monkeypatch.setattr(rendering, "to_yaml", failing)
    with pytest.raises(OSError, match="disk full"):
        render(make_spec(), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


# The controller, on metric sequences, with in-memory stand-ins for Prometheus and the VirtualService.

class Metrics:
    """Answers what the test says the variants did, and remembers each window it was asked for."""

    def __init__(self) -> None:
        self.now: dict[str, VariantStats] = {}
        self.asked: list[tuple[tuple[str, ...], float, float]] = []

    def stats(self, variants: Sequence[str], since: float, now: float) -> dict[str, VariantStats]:
        self.asked.append((tuple(variants), since, now))
        return {v: self.now[v] for v in variants if v in self.now}


class Routes:
    """The VirtualService's annotation, kept as the JSON text the cluster would keep, and each patch's weights."""

    def __init__(self, request: dict[str, Any] | None = None) -> None:
        self.annotation = json.dumps(request) if request else None
        self.patches: list[dict[str, int]] = []

    def state(self) -> dict[str, Any] | None:
        return json.loads(self.annotation) if self.annotation else None

    def patch(self, weights: dict[str, int], state: dict[str, Any]) -> None:
        self.annotation = json.dumps(state)
        self.patches.append(weights)


HEALTHY = {"blue": VariantStats(180, 0, 10.0), "green": VariantStats(20, 0, 11.0)}
REQUEST = {"stable": "blue", "candidate": "green"}


def controller(spec: EndpointSpec, routes: Routes, metrics: Metrics | None = None) -> Controller:
    return Controller(spec, metrics or Metrics(), routes)


def assert_weights_follow_the_state(spec: EndpointSpec, routes: Routes) -> None:
    base = {v.name: v.weight for v in spec.variants}
    assert routes.patches[-1] == weights_for(load_rollout(routes.state()), base)
    assert all(sum(w.values()) == 100 for w in routes.patches)


def test_a_healthy_canary_is_promoted_after_baking() -> None:
    spec, routes, metrics = make_spec(), Routes(REQUEST), Metrics()
    c = controller(spec, routes, metrics)
    first = c.step(0.0)
    assert first.changed and first.rollout.phase == "baking" and routes.patches == [{"blue": 90, "green": 10}]
    assert_weights_follow_the_state(spec, routes)
    metrics.now = HEALTHY
    held = c.step(30.0)
    assert not held.changed and len(routes.patches) == 1, "nothing changed, nothing patched"
    assert "held" in str(held) and "green 20 req 0 5xx p99 11.0 ms" in str(held)
    promoted = c.step(60.0)
    assert promoted.rollout.phase == "promoted" and routes.patches[-1] == {"blue": 0, "green": 100}
    assert_weights_follow_the_state(spec, routes)
    assert [a[1:] for a in metrics.asked] == [(0.0, 30.0), (0.0, 60.0)], "stats since the last change"
    assert c.step(120.0).rollout.phase == "promoted" and len(routes.patches) == 2
    assert "\n" not in str(promoted) and "promoted" in str(promoted)


def test_a_candidate_with_half_its_answers_failing_is_rolled_back_at_the_next_step() -> None:
    spec, routes, metrics = make_spec(), Routes(REQUEST), Metrics()
    c = controller(spec, routes, metrics)
    c.step(0.0)
    metrics.now = {"blue": VariantStats(360, 0, 10.0), "green": VariantStats(40, 20, 9.0)}
    d = c.step(10.0)
    assert d.rollout.phase == "rolled-back" and "error rate 50.0%" in d.rollout.reason
    assert "error rate 50.0%" in str(d)
    assert routes.patches[-1] == {"blue": 100, "green": 0}
    assert_weights_follow_the_state(spec, routes)


def test_a_candidate_50_ms_slower_is_rolled_back() -> None:
    spec, routes, metrics = make_spec(), Routes(REQUEST), Metrics()
    c = controller(spec, routes, metrics)
    c.step(0.0)
    metrics.now = {"blue": VariantStats(300, 0, 12.0), "green": VariantStats(30, 0, 62.0)}
    d = c.step(20.0)
    assert d.rollout.phase == "rolled-back"
    assert "more than 25 ms over the stable variant's 12.0 ms" in d.rollout.reason
    assert routes.patches[-1] == {"blue": 100, "green": 0}


def test_linear_walks_the_candidate_up_by_interval() -> None:
    # The candidate is staged with weight 0: it takes traffic only from the rollout.
    spec = make_spec(variants=[{"name": "blue", "model": "models:/churn/3", "weight": 1},
                               {"name": "green", "model": "models:/churn/4", "weight": 0}],
                     policy={"type": "linear", "step_percent": 10, "interval_seconds": 30, "bake_seconds": 60})
    routes, metrics = Routes(REQUEST), Metrics()
    metrics.now = HEALTHY
    c = controller(spec, routes, metrics)
    walked: list[tuple[float, int]] = []
    now = 0.0
    while now <= 600:
        d = c.step(now)
        if d.changed:
            walked.append((now, d.weights["green"]))
            assert_weights_follow_the_state(spec, routes)
        if d.rollout.done:
            break
        now += 10.0
    assert walked[:10] == [(30.0 * i, 10 * (i + 1)) for i in range(10)]
    assert {w for _, w in walked[10:]} == {100}
    assert load_rollout(routes.state()).phase == "promoted"


def test_a_restarted_controller_resumes_the_rollout() -> None:
    spec, routes = make_spec(), Routes(REQUEST)
    first = controller(spec, routes)
    first.step(0.0)
    first.metrics.now = HEALTHY
    first.step(30.0)
    metrics = Metrics()
    metrics.now = HEALTHY
    again = controller(spec, routes, metrics)  # a new process: all it has is the annotation
    d = again.step(60.0)
    assert d.rollout.phase == "promoted", "baked from t=0, not started over at t=60"
    assert metrics.asked == [(("blue", "green"), 0.0, 60.0)]
    assert [h["phase"] for h in d.rollout.history] == ["baking", "promoted"]


def test_requests_for_variants_the_endpoint_lacks_are_ignored() -> None:
    routes = Routes({"stable": "blue", "candidate": "purple"})
    d = controller(make_spec(), routes).step(0.0)
    assert not d.changed and routes.patches == [] and "ignored" in str(d)
    assert controller(make_spec(), Routes()).step(0.0).note == "no rollout requested"


def canned(values: dict[str, str]) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"destination_service_name": s}, "value": [1700000060.0, v]} for s, v in values.items()]}}


def test_prometheus_answers_become_variant_stats() -> None:
    answers = {"requests": canned({"churn-blue-predictor": "181.7", "churn-green-predictor": "20.2"}),
               "errors": canned({"churn-green-predictor": "3.1"}),
               "p99": canned({"churn-blue-predictor": "12.5", "churn-green-predictor": "NaN"})}
    asked: list[tuple[str, dict[str, str]]] = []

    def get(query: str, params: dict[str, str]) -> dict[str, Any]:
        asked.append((query, params))
        if query.startswith("histogram_quantile"):
            return answers["p99"]
        return answers["errors"] if 'response_code=~"5.."' in query else answers["requests"]

    stats = PrometheusMetrics("http://prom:9090/", "churn", "kiln", get=get).stats(["blue", "green"], 1000.0, 1060.0)
    assert stats == {"blue": VariantStats(182, 0, 12.5), "green": VariantStats(20, 3, None)}
    assert len(asked) == 3 and all(p == {"time": "1060.000"} for _, p in asked)
    for query, _ in asked:
        assert 'destination_service_name=~"churn-blue-predictor|churn-green-predictor"' in query
        assert 'destination_service_namespace="kiln"' in query and "[60s]" in query
    assert sum("istio_requests_total" in q for q, _ in asked) == 2
    assert sum("istio_request_duration_milliseconds_bucket" in q for q, _ in asked) == 1

    assert parse_vector(canned({})) == {}
    with pytest.raises(ServiceError, match="bad_data"):
        parse_vector({"status": "error", "errorType": "bad_data", "error": "parse error at char 3"})
    with pytest.raises(ServiceError, match="not an instant vector"):
        parse_vector({"status": "success", "data": {"resultType": "matrix", "result": []}})




def test_a_proxied_artifact_uri_is_read_where_the_mlflow_server_keeps_it() -> None:
    from kiln.serving.cluster import proxied_location

    assert proxied_location("mlflow-artifacts:/1/models/m-1/artifacts", "s3://kiln/mlflow/") == \
        "s3://kiln/mlflow/1/models/m-1/artifacts"
    assert proxied_location("mlflow-artifacts://kiln-mlflow:5000/1/x", "s3://b/m") == "s3://b/m/1/x"
    assert proxied_location("s3://b/1/x", "s3://other") == "s3://b/1/x"
    assert proxied_location("mlflow-artifacts:/1/x", None) == "mlflow-artifacts:/1/x"


def test_a_variant_that_scales_to_zero_is_rendered_for_knative(tmp_path: Path) -> None:
    spec = make_spec(shadow=None)
    data = spec.model_dump()
    data["variants"][1].update(min_replicas=0, idle_seconds=120)
    paths = render(parse_spec(data), tmp_path / "out").files
    isvcs = {i.metadata.name: i for i in (as_inference_service(load(p)) for p in paths
                                          if p.name.startswith("inferenceservice-"))}
    lazy, kept = isvcs["churn-green"], isvcs["churn-blue"]
    assert lazy.spec.predictor.min_replicas == 0
    assert lazy.metadata.annotations["serving.kserve.io/deploymentMode"] == "Serverless"
    assert lazy.metadata.annotations["autoscaling.knative.dev/scale-to-zero-pod-retention-period"] == "120s"
    assert kept.spec.predictor.min_replicas == 1
    assert kept.metadata.annotations["serving.kserve.io/deploymentMode"] == "RawDeployment"


def test_an_asynchronous_endpoint_renders_its_front_workers_and_kedas_scaler(tmp_path: Path) -> None:
    spec = parse_spec({"name": "batch", "mode": "async", "variants": [{"name": "main", "model": "models:/churn/3"}],
                       "async_inference": {"workers": {"min": 0, "max": 4, "backlog_per_worker": 25,
                                                       "idle_seconds": 120}}})
    with pytest.raises(InputError, match="--image"):
        render(spec, tmp_path / "none")
    uri = "s3://kiln/mlflow/1/abc/artifacts/model"
    paths = render(spec, tmp_path / "out", namespace="serving", image="kiln:0.1.0", storage_uris={"main": uri}).files
    objs = {(o["kind"], o["metadata"]["name"]): o for o in map(load, paths)}
    assert set(objs) == {("ConfigMap", "batch-async"), ("Deployment", "batch-async-front"), ("Service", "batch"),
                         ("Deployment", "batch-async-worker"), ("TriggerAuthentication", "batch-broker"),
                         ("ScaledObject", "batch-async-worker"), ("ConfigMap", "kiln-endpoint-batch")}
    scaled = objs["ScaledObject", "batch-async-worker"]["spec"]
    [trigger] = scaled["triggers"]
    assert (scaled["minReplicaCount"], scaled["maxReplicaCount"], scaled["cooldownPeriod"]) == (0, 4, 120)
    assert trigger["metadata"] == {"protocol": "amqp", "queueName": "kiln.async.serving.batch", "mode": "QueueLength",
                                   "value": "25"}
    worker = objs["Deployment", "batch-async-worker"]["spec"]["template"]["spec"]
    assert worker["initContainers"][0]["command"][-3:] == [uri, "--to", "/mnt/models"]
    config = json.loads(objs["ConfigMap", "batch-async"]["data"]["worker.json"])
    assert (config["queue"], config["broker_url"], config["model_uri"]) == (
        "kiln.async.serving.batch", "env:KILN_BROKER_URL", "/mnt/models")
    from kiln.serving.async_config import AsyncFrontConfig
    from kiln.serving.async_worker import WorkerConfig
    from kiln.serving.render_async import keda_problems

    assert WorkerConfig(**config).runtime == "mlflow", "what the worker reads"
    assert AsyncFrontConfig(**{**json.loads(objs["ConfigMap", "batch-async"]["data"]["async.json"]),
                               "scaler": None}).queue == "kiln.async.serving.batch"

    broken = {**objs["ScaledObject", "batch-async-worker"], "spec": {**scaled, "maxReplicaCount": -1}}
    assert keda_problems(broken) == ["spec.minReplicaCount 0 and maxReplicaCount -1: whole numbers, min <= max"]


def test_a_multi_model_endpoint_renders_kserves_multi_model_serving(tmp_path: Path) -> None:
    """One InferenceService on the multi-model runtime, a TrainedModel per version (the variant's and each one given),
    and routes that send a V1 request to the version its header names, else to the variant's."""
    spec = parse_spec({"name": "many", "mode": "multi-model", "variants": [{"name": "main", "model": "models:/churn/3"}],
                       "multi_model": {"models": ["churn", "fraud"], "budget_mb": 1024}})
    paths = render(spec, tmp_path / "out", storage_uris={"main": "s3://kiln/churn/3", "fraud-v2": "s3://kiln/fraud/2"},
                   capture_url="http://collector").files
    objs = {(o["kind"], o["metadata"]["name"]): o for o in map(load, paths)}
    assert set(objs) == {("InferenceService", "many-main"), ("TrainedModel", "churn-v3"), ("TrainedModel", "fraud-v2"),
                         ("VirtualService", "many"), ("Service", "many"), ("ConfigMap", "kiln-endpoint-many")}
    isvc = as_inference_service(objs["InferenceService", "many-main"])
    assert isvc.spec.predictor.model.storage_uri is None, "KServe's model agent fetches the TrainedModels instead"
    assert isvc.spec.predictor.logger.url == "http://collector/many/main?by_model=true"
    assert objs["TrainedModel", "churn-v3"]["spec"]["model"] == {"framework": "mlflow", "storageUri": "s3://kiln/churn/3",
                                                                "memory": "512Mi"}
    routes = {r["name"]: r for r in objs["VirtualService", "many"]["spec"]["http"]}
    fraud = routes["model-fraud-v2"]
    assert [m["headers"]["x-kiln-target-model"]["exact"] for m in fraud["match"]] == ["fraud-v2", "fraud/2"]
    assert fraud["rewrite"]["uri"] == "/v1/models/fraud-v2:predict"
    assert routes["default"]["rewrite"]["uri"] == "/v1/models/churn-v3:predict"
    assert list(routes)[-1] == "by-path" and "match" not in routes["by-path"], "V2 requests name their version"

    with pytest.raises(InputError, match="serves versions of churn, fraud only"):
        render(spec, tmp_path / "other", storage_uris={"churn-v4": "s3://a", "spam-v1": "s3://b"})
    with pytest.raises(InputError, match="not a pinned version"):
        render(parse_spec({**spec.model_dump(), "variants": [{"name": "main", "model": "models:/churn@champion"}]}),
               tmp_path / "alias")
    assert not (tmp_path / "other").exists() and not (tmp_path / "alias").exists()
