"""Endpoints on the local Kubernetes (scripts/dev-cluster.sh, KServe's and Istio's CRDs registered by `up`): `kiln
endpoint deploy | status | update | promote | rollback | delete` with serving type kserve change the objects through
the API server, idempotently; what the server refuses is named by object and field and changes nothing; the pipeline's
deploy step creates a new endpoint; Kiln in a pod reaches the API with its own ServiceAccount.

Model files are in a real S3 API (SeaweedFS on loopback, where MLflow keeps the registry's artifacts), as a cluster's
model servers read them. No KServe or Istio controller runs here: the InferenceServices stay unreconciled (Ready
Unknown) and the VirtualService routes nothing; what is checked is what Kiln asks of the API server.
"""

from __future__ import annotations

import base64
import json
import secrets
import shutil
import time
from pathlib import Path

import pytest

from tests.conftest import clean_env, run_kiln
from tests.test_training import FEATURES, synthetic, write_set

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def namespace(kube):
    name = f"kiln-ep-{secrets.token_hex(3)}"
    kube.run("create", "namespace", name)
    yield name
    kube.run("delete", "namespace", name, "--wait=false")


def settings(kubeconfig: Path, namespace: str, bucket_prefix: str) -> str:
    return f"""
mlflow:
  artifact_root: s3://kiln/{bucket_prefix}
serving:
  type: kserve
  namespace: {namespace}
  kubeconfig: {kubeconfig}
  capture_url: http://kiln-capture.{namespace}.svc.cluster.local
  controller_wait_seconds: 3
"""


@pytest.fixture(scope="module")
def ws(kube, namespace: str, s3, tmp_path_factory: pytest.TempPathFactory):
    """A workspace serving on the cluster, `toy` versions 1 and 2 registered with their files in S3."""
    root = tmp_path_factory.mktemp("cluster-endpoints") / "ws"
    env = clean_env(**s3.env())
    assert run_kiln("init", root, env=env).code == 0
    with (root / "kiln.yaml").open("a") as f:
        f.write(settings(kube.kubeconfig, namespace, f"mlflow-{namespace}"))
    train = write_set(root / "train.parquet", synthetic(), FEATURES)
    for iterations in ("3", "4"):
        res = run_kiln("train", "-t", train, "-f", "lgbm", "--iterations", iterations, "-w", root, "--json", env=env)
        assert res.code == 0, res.stderr[-2000:]
        res = run_kiln("models", "register", json.loads(res.stdout)["run_id"], "--name", "toy", "-w", root, "--json",
                       env=env)
        assert res.code == 0, res.stderr[-2000:]
    return root, env


def kiln(ws, *args: str | Path):
    root, env = ws
    return run_kiln(*args, "-w", root, env=env)


def write_spec(ws, text: str) -> Path:
    path = ws[0] / f"spec-{secrets.token_hex(3)}.yaml"
    path.write_text(text)
    return path


SPEC = """
name: toy
variants: [{name: primary, model: "models:/toy/1"}]
shadow: {name: dark, model: "models:/toy/2", sample_percent: 50}
policy: {type: canary, step_percent: 20, bake_seconds: 5}
"""


def isvcs(kube, namespace: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in kube.get("inferenceservices", "-n", namespace)["items"]}


def test_deploy_creates_the_objects_a_second_deploy_changes_nothing_and_status_reads_them(kube, namespace, ws) -> None:
    spec = write_spec(ws, SPEC)
    res = kiln(ws, "endpoint", "deploy", spec, "--json")
    assert res.code == 0, res.stderr[-3000:]
    deployed = json.loads(res.stdout)
    assert {(c["kind"], c["name"], c["action"]) for c in deployed["changes"]} == {
        ("InferenceService", "toy-primary", "created"), ("InferenceService", "toy-dark", "created"),
        ("VirtualService", "toy", "created"), ("Service", "toy", "created"),
        ("ConfigMap", "kiln-endpoint-toy", "created")}
    assert deployed["url"] == f"http://toy.{namespace}.svc.cluster.local/v1/models/toy:predict"

    found = isvcs(kube, namespace)
    primary = found["toy-primary"]["spec"]["predictor"]["model"]
    assert primary["storageUri"].startswith(f"s3://kiln/mlflow-{namespace}/"), primary["storageUri"]
    assert found["toy-primary"]["metadata"]["annotations"]["kiln.dev/model"] == "models:/toy/1"
    assert found["toy-dark"]["spec"]["predictor"]["logger"]["url"].endswith("/toy/dark?shadow=true")
    vs = kube.get("virtualservice", "toy", "-n", namespace)
    assert vs["spec"]["http"][-1]["mirrorPercentage"] == {"value": 50.0}

    again = kiln(ws, "endpoint", "deploy", spec, "--json")
    assert again.code == 0, again.stderr[-3000:]
    assert {c["action"] for c in json.loads(again.stdout)["changes"]} == {"unchanged"}

    status = kiln(ws, "endpoint", "status", "toy", "--json")
    assert status.code == 0, status.stderr
    variants = {v["name"]: v for v in json.loads(status.stdout)["variants"]}
    assert variants["primary"]["weight"] == 100 and variants["primary"]["model"] == "models:/toy/1"
    assert variants["dark"]["role"] == "shadow" and variants["dark"]["ready"] == "Unknown"
    listed = kiln(ws, "endpoint", "list", "--json")
    assert json.loads(listed.stdout)["endpoints"] == ["toy"]


def test_a_rollout_adds_the_candidate_and_promote_or_rollback_settles_it(kube, namespace, ws) -> None:
    assert kiln(ws, "endpoint", "deploy", write_spec(ws, SPEC)).code == 0
    # No controller runs for this endpoint: the request is made, nobody takes it up, and the command says so.
    res = kiln(ws, "endpoint", "update", "toy", "--model", "models:/toy/2")
    assert res.code == 2 and "no rollout controller took the rollout up in 3 s" in res.stderr, res.stderr
    assert "toy-primary-next" in isvcs(kube, namespace)
    vs = kube.get("virtualservice", "toy", "-n", namespace)
    weighted = next(r for r in vs["spec"]["http"] if r["name"] == "weighted")
    assert [d["weight"] for d in weighted["route"]] == [100, 0], "the candidate takes no traffic until asked"
    assert json.loads(vs["metadata"]["annotations"]["kiln.dev/rollout"]) == {"stable": "primary",
                                                                              "candidate": "primary-next"}
    refused = kiln(ws, "endpoint", "update", "toy", "--model", "models:/toy/2")
    assert refused.code == 1 and "a rollout is under way" in refused.stderr

    res = kiln(ws, "endpoint", "promote", "toy", "--reason", "checked by hand", "--json")
    assert res.code == 0, res.stderr[-3000:]
    assert json.loads(res.stdout)["phase"] == "promoted"
    found = isvcs(kube, namespace)
    assert "toy-primary-next" not in found
    assert found["toy-primary"]["metadata"]["annotations"]["kiln.dev/model"] == "models:/toy/2"
    state = json.loads(kube.get("virtualservice", "toy", "-n", namespace)["metadata"]["annotations"]["kiln.dev/rollout"])
    assert state["phase"] == "promoted" and state["reason"] == "checked by hand"

    res = kiln(ws, "endpoint", "update", "toy", "--model", "models:/toy/1", "--no-wait")
    assert res.code == 0 and "not taken it up yet" in res.stdout, res.stderr
    res = kiln(ws, "endpoint", "rollback", "toy")
    assert res.code == 0, res.stderr[-3000:]
    found = isvcs(kube, namespace)
    assert "toy-primary-next" not in found
    assert found["toy-primary"]["metadata"]["annotations"]["kiln.dev/model"] == "models:/toy/2", "rolled back"
    assert kiln(ws, "endpoint", "rollback", "toy").code == 1, "nothing under way any more"


def test_a_variant_left_out_of_the_spec_is_deleted_and_delete_removes_every_object(kube, namespace, ws) -> None:
    assert kiln(ws, "endpoint", "deploy", write_spec(ws, SPEC)).code == 0
    without_shadow = SPEC.replace('shadow: {name: dark, model: "models:/toy/2", sample_percent: 50}\n', "")
    res = kiln(ws, "endpoint", "deploy", write_spec(ws, without_shadow), "--json")
    assert res.code == 0, res.stderr[-3000:]
    assert ("InferenceService", "toy-dark", "deleted") in {
        (c["kind"], c["name"], c["action"]) for c in json.loads(res.stdout)["changes"]}
    assert set(isvcs(kube, namespace)) == {"toy-primary"}

    res = kiln(ws, "endpoint", "delete", "toy")
    assert res.code == 0, res.stderr
    left = kube.run("get", "inferenceservices,virtualservices,services,configmaps", "-n", namespace,
                    "-l", "kiln.dev/endpoint=toy", "-o", "name").stdout
    assert left == ""
    again = kiln(ws, "endpoint", "delete", "toy")
    assert again.code == 1 and f"no endpoint 'toy' in namespace {namespace}" in again.stderr


def test_the_api_servers_refusal_names_the_object_and_field(kube, namespace, ws) -> None:
    from kiln.errors import InputError, ServiceError
    from kiln.serving.kube import connect

    api = connect(str(kube.kubeconfig))
    bad = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
           "metadata": {"name": "bad", "namespace": namespace},
           "spec": {"predictor": {"minReplicas": "two", "model": {"modelFormat": {"name": "mlflow"}}}}}
    with pytest.raises(InputError) as refused:
        api.apply(bad)
    assert f"InferenceService {namespace}/bad" in str(refused.value)
    assert "spec.predictor.minReplicas" in str(refused.value) and "integer" in str(refused.value)
    assert api.get("InferenceService", namespace, "bad") is None

    missing = dict(bad, metadata={"name": "bad", "namespace": "no-such-namespace"})
    missing["spec"] = {"predictor": {"minReplicas": 1}}
    with pytest.raises(ServiceError, match='namespaces "no-such-namespace" not found'):
        api.apply(missing)


def test_a_deploy_the_api_refuses_part_of_changes_nothing(kube, namespace, ws) -> None:
    """An account that may change InferenceServices but not VirtualServices: refused, named, and nothing made."""
    account = "half-rights"
    kube.apply(
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account, "namespace": namespace}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": account, "namespace": namespace},
         "rules": [{"apiGroups": ["serving.kserve.io"], "resources": ["inferenceservices"], "verbs": ["*"]},
                   {"apiGroups": [""], "resources": ["services", "configmaps"], "verbs": ["*"]},
                   {"apiGroups": ["networking.istio.io"], "resources": ["virtualservices"], "verbs": ["get", "list"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": account, "namespace": namespace},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account},
         "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}]})
    token = service_account_token(kube, namespace, account)
    config = json.loads(kube.run("config", "view", "--raw", "-o", "json").stdout)
    config["users"] = [{"name": account, "user": {"token": token}}]
    config["contexts"][0]["context"]["user"] = account
    limited = ws[0] / "limited.kubeconfig"
    limited.write_text(json.dumps(config))

    root, env = ws
    res = run_kiln("endpoint", "deploy", write_spec(ws, SPEC.replace("name: toy", "name: half")), "-w", root,
                   env={**env, "KILN_SERVING__KUBECONFIG": str(limited)})
    assert res.code == 2, res.stderr
    assert f"VirtualService {namespace}/half: the Kubernetes API refused it (403 Forbidden)" in res.stderr
    left = kube.run("get", "inferenceservices,services,configmaps", "-n", namespace, "-l", "kiln.dev/endpoint=half",
                    "-o", "name").stdout
    assert left == "", "the dry run refused it before anything was made"


def service_account_token(kube, namespace: str, account: str) -> str:
    """The token Kubernetes 1.20's token controller writes into the account's Secret."""
    deadline = time.monotonic() + 30
    while True:
        sa = kube.get("serviceaccount", account, "-n", namespace)
        if sa.get("secrets"):
            secret = kube.get("secret", sa["secrets"][0]["name"], "-n", namespace)
            return base64.b64decode(secret["data"]["token"]).decode()
        assert time.monotonic() < deadline, "no token for the ServiceAccount"
        time.sleep(0.5)


def test_churn_training_with_deploy_creates_the_endpoint_on_the_cluster(kube, namespace, ws, churn_dataset) -> None:
    root, env = ws
    shutil.copytree(churn_dataset, root / "data" / "churn", dirs_exist_ok=True)
    res = run_kiln("pipeline", "run", "churn_training", "-w", root, "--param", "trials=1", "--param",
                   "max_iterations=1", "--param", "targets=x86_64", "--param", "explain_rows=50", "--param",
                   "endpoint=churn", "--json", env=env, timeout=900)
    assert res.code == 0, res.stderr[-6000:]
    run = json.loads(res.stdout)
    deploy = next(t for t in run["tasks"] if t["name"] == "deploy-endpoint")
    assert deploy["status"] == "SUCCESS", deploy
    found = isvcs(kube, namespace)
    assert found["churn-primary"]["metadata"]["annotations"]["kiln.dev/model"] == "models:/churn/1"
    status = kiln(ws, "endpoint", "status", "churn", "--json")
    assert json.loads(status.stdout)["url"] == f"http://churn.{namespace}.svc.cluster.local/v1/models/churn:predict"
    assert kiln(ws, "endpoint", "delete", "churn").code == 0


def test_the_controllers_patch_sets_the_weights_and_state_and_refuses_a_stale_read(kube, namespace) -> None:
    from kiln.serving.controller import ANNOTATION, Controller, VirtualServiceRoutes, load_rollout
    from kiln.serving.kube import Conflict, connect
    from kiln.serving.render import objects, predictor_host
    from tests.test_render import REQUEST, Metrics, make_spec

    api = connect(str(kube.kubeconfig))
    spec = make_spec()
    for obj in objects(spec, namespace=namespace):
        api.apply(obj)
    api.patch("VirtualService", namespace, "churn", {"metadata": {"annotations": {ANNOTATION: json.dumps(REQUEST)}}})
    stale = VirtualServiceRoutes(api, spec, namespace)
    stale.state()
    decision = Controller(spec, Metrics(), VirtualServiceRoutes(api, spec, namespace)).step(0.0)
    assert decision.changed

    vs = kube.get("virtualservice", "churn", "-n", namespace)
    weighted = next(r for r in vs["spec"]["http"] if r["name"] == "weighted")
    hosts = {predictor_host("churn", n, namespace): n for n in ("blue", "green")}
    assert {hosts[x["destination"]["host"]]: x["weight"] for x in weighted["route"]} == {"blue": 90, "green": 10}
    assert weighted["mirror"]["host"] == predictor_host("churn", "dark", namespace), "the mirror is kept"
    assert load_rollout(json.loads(vs["metadata"]["annotations"][ANNOTATION])).phase == "baking"
    with pytest.raises(Conflict, match=f"VirtualService {namespace}/churn"):
        stale.patch({"blue": 0, "green": 100}, {"phase": "stale"})  # read before the controller's change


def test_the_controllers_main_loop_logs_one_line_per_decision(kube, namespace, monkeypatch: pytest.MonkeyPatch,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    from kiln.serving import controller as controlling
    from kiln.serving.controller import ANNOTATION
    from kiln.serving.kube import connect
    from kiln.serving.render import objects
    from tests.test_render import REQUEST, canned, make_spec

    api = connect(str(kube.kubeconfig))
    spec = make_spec(name="loop")
    for obj in objects(spec, namespace=namespace):
        api.apply(obj)
    api.patch("VirtualService", namespace, "loop", {"metadata": {"annotations": {ANNOTATION: json.dumps(REQUEST)}}})
    monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig))
    monkeypatch.setattr(controlling.PrometheusMetrics, "_http_get", lambda self, q, p: canned({}))
    caplog.set_level("INFO", logger="kiln.serving.controller")
    argv = ["--endpoint", "loop", "--namespace", namespace, "--prometheus", "http://prom:9090", "--once"]
    assert controlling.main(argv) == 0
    assert [r.getMessage() for r in caplog.records] == [
        "loop: baking, green at 10% of blue's traffic; canary: candidate green takes 10%; weights blue=90 green=10"]
    caplog.clear()
    assert controlling.main(argv) == 0
    assert len(caplog.records) == 1 and caplog.records[0].getMessage().endswith("held (blue 0 req 0 5xx p99 -, "
                                                                                "green 0 req 0 5xx p99 -)")
    caplog.clear()
    assert controlling.main([*argv[:1], "gone", *argv[2:]]) == 2
    assert "ConfigMap" in caplog.records[0].getMessage() and "not found" in caplog.records[0].getMessage()
