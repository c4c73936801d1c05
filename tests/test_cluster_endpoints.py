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
import subprocess
import time
from pathlib import Path

import httpx
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
    """A workspace serving on the cluster, `toy` versions 1 and 2 registered (and approved) with their files in S3."""
    root = tmp_path_factory.mktemp("cluster-endpoints") / "ws"
    env = clean_env(**s3.env())
    assert run_kiln("init", root, env=env).code == 0
    with (root / "kiln.yaml").open("a") as f:
        f.write(settings(kube.kubeconfig, namespace, f"mlflow-{namespace}"))
    train = write_set(root / "train.parquet", synthetic(), FEATURES)
    res = run_kiln("train", "-t", train, "-f", "lgbm", "--iterations", "3", "-w", root, "--json", env=env)
    assert res.code == 0, res.stderr[-2000:]
    run_id = json.loads(res.stdout)["run_id"]
    for version in (1, 2):  # two versions of one run: as different to an endpoint as two trainings
        res = run_kiln("models", "register", run_id, "--name", "toy", "-w", root, "--json", env=env)
        assert res.code == 0, res.stderr[-2000:]
        res = run_kiln("models", "approve", f"toy/{version}", "--reason", "reviewed for the tests", "-w", root,
                       env=env)  # production variants serve approved versions
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
    status = json.loads(kiln(ws, "endpoint", "status", "toy", "--json").stdout)
    assert status["requested"] == "primary-next" and status["rollout"] is None
    res = kiln(ws, "endpoint", "rollback", "toy")
    assert res.code == 0, res.stderr[-3000:]
    found = isvcs(kube, namespace)
    assert "toy-primary-next" not in found
    assert found["toy-primary"]["metadata"]["annotations"]["kiln.dev/model"] == "models:/toy/2", "rolled back"
    assert kiln(ws, "endpoint", "rollback", "toy").code == 1, "nothing under way any more"


def test_only_an_approved_version_serves_in_production_and_an_override_is_recorded_on_the_endpoint(kube, namespace,
                                                                                                 ws) -> None:
    run_id = json.loads(kiln(ws, "models", "show", "toy/1", "--json").stdout)["run_id"]
    registered = kiln(ws, "models", "register", run_id, "--name", "toy", "--json")
    assert registered.code == 0, registered.stderr[-2000:]
    pending = f"toy/{json.loads(registered.stdout)['version']['version']}"
    gated = SPEC.replace("name: toy", "name: gated")
    refused = kiln(ws, "endpoint", "deploy", write_spec(ws, gated.replace("models:/toy/1", f"models:/{pending}")))
    assert refused.code == 1, refused.stderr
    assert f"production variant primary: {pending} is PendingManualApproval and its gate passed" in refused.stderr
    left = kube.run("get", "inferenceservices,virtualservices,services,configmaps", "-n", namespace,
                    "-l", "kiln.dev/endpoint=gated", "-o", "name").stdout
    assert left == "", "a refused deploy makes no object"

    # The shadow may serve the pending version; a rollout of it to production needs an override with a reason.
    res = kiln(ws, "endpoint", "deploy", write_spec(ws, gated.replace("models:/toy/2", f"models:/{pending}")))
    assert res.code == 0, res.stderr[-3000:]
    res = kiln(ws, "endpoint", "update", "gated", "--model", f"models:/{pending}", "--no-wait")
    assert res.code == 1 and f"production variant primary: {pending} is PendingManualApproval" in res.stderr
    assert "gated-primary-next" not in isvcs(kube, namespace), "a refused rollout adds no candidate"
    assert "kiln.dev/rollout" not in (kube.get("virtualservice", "gated", "-n", namespace)["metadata"]
                                      .get("annotations") or {})
    reason = "the shadow agreed on a week of traffic"
    res = kiln(ws, "endpoint", "update", "gated", "--model", f"models:/{pending}", "--no-wait", "--override-reason",
               reason)
    assert res.code == 0, res.stderr[-3000:]
    assert "gated-primary-next" in isvcs(kube, namespace)
    assert kiln(ws, "endpoint", "rollback", "gated").code == 0

    annotation = kube.get("configmap", "kiln-endpoint-gated", "-n", namespace)["metadata"]["annotations"]
    history = json.loads(annotation["kiln.dev/history"])
    assert [(h["event"], h["variant"], h["model"]) for h in history] == [
        ("deployed", "primary", "models:/toy/1"), ("deployed as shadow", "dark", f"models:/{pending}"),
        ("rollout started", "primary", f"models:/{pending}"), ("override", "primary", f"models:/{pending}"),
        ("rollout rolled back", "primary", f"models:/{pending}")]
    assert history[3]["reason"] == f"PendingManualApproval, gate passed: {reason}"
    status = json.loads(kiln(ws, "endpoint", "status", "gated", "--json").stdout)
    assert status["history"] == history
    recorded = json.loads(kiln(ws, "models", "show", pending, "--json").stdout)["history"][-1]
    assert (recorded["event"], recorded["reason"], recorded["where"]) == \
        ("production override", reason, "endpoint gated, variant primary")
    assert kiln(ws, "endpoint", "delete", "gated").code == 0


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


TVM_SPEC = """
name: fast
variants: [{name: primary, model: "models:/toy/1", runtime: tvm}]
"""


def predictor_on_node(kube, namespace: str, isvc: dict, runtime: str, folder: Path, *values: str) -> str:
    """The chart's ServingRuntime ``runtime`` (its serving-runtimes template with ``values``) applied, and the pod
    KServe would make from it and ``isvc`` (`<isvc>-predictor`, ``folder`` as /mnt/models) running on the node and
    ready: its IP. The caller deletes the pod."""
    from tests.cluster_checks import documents, run
    from tests.k8s_tools import tools
    from tests.predictor import predictor_pod
    from tests.test_chart import CHART

    kube.apply(*documents(run(tools()["helm"], "template", "kiln", CHART, "-n", namespace, "--show-only",
                              "templates/serving-runtimes.yaml", "--set", f"rolloutController.namespace={namespace}",
                              "--set", "image.pullPolicy=Never", *values).stdout))
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)  # the chart's user reads the model files
    name = f"{isvc['metadata']['name']}-predictor"
    pod = predictor_pod(kube.get("servingruntime", runtime, "-n", namespace), isvc,
                        {"hostPath": {"path": str(folder), "type": "Directory"}})
    kube.apply({"apiVersion": "v1", "kind": "Pod", "spec": pod, "metadata": {
        "name": name, "namespace": namespace, "labels": isvc["metadata"]["labels"]}})
    kube.run("-n", namespace, "wait", "--for=condition=Ready", f"pod/{name}", "--timeout=180s")
    return str(kube.get("pod", name, "-n", namespace)["status"]["podIP"])


def test_a_tvm_variant_serves_its_bundle_for_the_nodes_from_the_object_store(kube, namespace, ws, s3,
                                                                            monkeypatch) -> None:
    """`runtime: tvm` on a cluster: the InferenceService names the chart's kiln-tvm runtime and, as its storageUri,
    the version's bundle compiled for the nodes (x86_64) in the artifacts store, which must be an object store; a
    second deploy compiles nothing. The chart's ServingRuntime is accepted by the API server, and the pod KServe
    would make from it and the InferenceService (tests/predictor.py) runs on the node and answers as the registered
    model does."""
    import tempfile

    from kiln.compile.bundle import verify_bundle
    from kiln.compile.keys import load_public_key
    from tests.test_tvm_runtime import held_out

    root, env = ws
    spec = write_spec(ws, TVM_SPEC)
    refused = run_kiln("endpoint", "deploy", spec, "-w", root, env=env)
    assert refused.code == 1 and "which a cluster's model servers cannot read" in refused.stderr, refused.stderr
    assert "artifacts: {type: s3, uri: s3://BUCKET/artifacts}" in refused.stderr
    assert "fast-primary" not in isvcs(kube, namespace), "refused before anything was made"
    stored = {**env, "KILN_ARTIFACTS": json.dumps({"type": "s3", "uri": f"s3://kiln/artifacts-{namespace}"})}
    odd = run_kiln("endpoint", "deploy", spec, "-w", root, env={**stored, "KILN_SERVING__TVM_CPU": "pentium-9000"})
    assert odd.code == 1 and "serving.tvm_cpu 'pentium-9000' is not a CPU LLVM knows for x86_64" in odd.stderr

    res = run_kiln("endpoint", "deploy", spec, "-w", root, "--json", env=stored, timeout=900)
    assert res.code == 0, res.stderr[-3000:]
    uri = json.loads(res.stdout)["storage"]["primary"]
    artifact = uri.rsplit("/", 1)[1]
    assert uri == f"s3://kiln/artifacts-{namespace}/compiled/{artifact}"
    isvc = isvcs(kube, namespace)["fast-primary"]
    model = isvc["spec"]["predictor"]["model"]
    assert (model["storageUri"], model["runtime"], model["modelFormat"]["name"]) == (uri, "kiln-tvm", "tvm")
    folder = Path(tempfile.mkdtemp(prefix="kiln-bundle-", dir="/tmp"))
    s3.download(uri, folder)  # what KServe's storage initializer would put in /mnt/models
    verdict = verify_bundle(folder, load_public_key(root / "artifacts" / "signing-key.pub"))
    assert verdict.ok and verdict.manifest, verdict.problems
    assert (verdict.manifest["target"]["name"], verdict.manifest["model"]["version"]) == ("x86_64", "1")
    again = run_kiln("endpoint", "deploy", spec, "-w", root, "--json", env=stored, timeout=900)
    assert again.code == 0, again.stderr[-3000:]
    assert json.loads(again.stdout)["storage"]["primary"] == uri and "compiling" not in again.stderr
    assert {c["action"] for c in json.loads(again.stdout)["changes"]} == {"unchanged"}
    assert len(list((root / "artifacts" / "compiled").glob("toy-v1-x86_64-*"))) == 1, "compiled once"

    try:
        ip = predictor_on_node(kube, namespace, isvc, "kiln-tvm", folder, "--set", "servingRuntimes.tvm.enabled=true",
                               "--set-file", f"servingRuntimes.tvm.publicKey={root / 'artifacts' / 'signing-key.pub'}")
        rows = held_out(50)
        answer = httpx.post(f"http://{ip}:8080/v1/models/fast:predict", json={"instances": rows}, timeout=30)
        assert answer.status_code == 200, answer.text
    finally:
        kube.run("-n", namespace, "delete", "pod", "fast-primary-predictor", "--wait=false", check=False)
        shutil.rmtree(folder, ignore_errors=True)
    import mlflow.pyfunc
    import pandas as pd

    for key, value in live_env(env).items():
        monkeypatch.setenv(key, value)
    mlflow.set_tracking_uri(f"sqlite:///{root}/models/mlflow.db")
    want = mlflow.pyfunc.load_model("models:/toy/1").predict(pd.DataFrame(rows).astype({"calls": "float64"}))
    got = answer.json()["predictions"]
    assert [p["prediction"] for p in got] == want["prediction"].tolist()
    assert max(abs(p["probability"] - w) for p, w in zip(got, want["probability"])) <= 1e-5
    assert kiln(ws, "endpoint", "delete", "fast").code == 0


MULTI_SPEC = """
name: many
mode: multi-model
variants: [{name: main, model: "models:/toy/1"}]
multi_model: {budget_mb: 1}
"""


def test_a_multi_model_endpoint_is_served_by_kserves_multi_model_serving(kube, namespace, ws, s3) -> None:
    """`mode: multi-model` on a cluster: one InferenceService on the chart's kiln-multi-model runtime and a
    TrainedModel per version of toy cleared for production, its files in S3. The pod KServe would make from the
    runtime and the InferenceService runs on the node; with each TrainedModel's files where KServe's model agent puts
    them, and asked to load each as the agent does, it answers for each version by name within its budget: the one
    unloaded to make room loads again when a request names it. `update` is refused; `delete` removes the versions."""
    import tempfile

    from tests.test_serving import ROWS

    root, env = ws
    res = run_kiln("endpoint", "deploy", write_spec(ws, MULTI_SPEC), "-w", root, "--json", env=env, timeout=600)
    assert res.code == 0, res.stderr[-3000:]
    assert "2 versions cleared for production: toy-v1, toy-v2" in res.stderr
    trained = {o["metadata"]["name"]: o for o in kube.get("trainedmodels", "-n", namespace)["items"]}
    assert sorted(trained) == ["toy-v1", "toy-v2"]
    assert {o["spec"]["inferenceService"] for o in trained.values()} == {"many-main"}
    assert all(o["spec"]["model"]["storageUri"].startswith(f"s3://kiln/mlflow-{namespace}/") for o in trained.values())
    isvc = isvcs(kube, namespace)["many-main"]
    assert isvc["spec"]["predictor"]["model"]["runtime"] == "kiln-multi-model"
    status = json.loads(kiln(ws, "endpoint", "status", "many", "--json").stdout)
    assert [(v["name"], v["weight"]) for v in status["variants"]] == [("main", 100)]
    refused = kiln(ws, "endpoint", "update", "many", "--model", "toy/2")
    assert refused.code == 1 and "it has no rollout" in refused.stderr

    folder = Path(tempfile.mkdtemp(prefix="kiln-models-", dir="/tmp"))
    for name, obj in trained.items():  # what KServe's model agent downloads for each TrainedModel
        s3.download(obj["spec"]["model"]["storageUri"], folder / name)
    try:
        ip = predictor_on_node(kube, namespace, isvc, "kiln-multi-model", folder, "--set",
                               "servingRuntimes.multiModel.enabled=true")
        for name in trained:  # as the agent asks once a TrainedModel's files are in place
            loaded = httpx.post(f"http://{ip}:8080/v2/repository/models/{name}/load", timeout=120)
            assert loaded.status_code == 200, loaded.text
        answers = [httpx.post(f"http://{ip}:8080/v1/models/{name}:predict", json={"instances": ROWS}, timeout=120)
                   for name in ("toy-v1", "toy-v2", "toy-v1")]
        logs = kube.run("-n", namespace, "logs", "pod/many-main-predictor").stdout
    finally:
        kube.run("-n", namespace, "delete", "pod", "many-main-predictor", "--wait=false", check=False)
        shutil.rmtree(folder, ignore_errors=True)
    assert [a.status_code for a in answers] == [200, 200, 200], [a.text for a in answers]
    assert [a.json()["model_name"] for a in answers] == ["toy-v1", "toy-v2", "toy-v1"]
    assert answers[0].json()["predictions"] == answers[1].json()["predictions"], "one run registered twice"
    # loaded by the agent's request, then by each of its two requests after the other version had pushed it out
    assert logs.count("unloaded toy-v1") == 2 and logs.count("loaded toy-v1 (") == 3, logs[-3000:]

    assert kiln(ws, "endpoint", "delete", "many").code == 0
    assert kube.get("trainedmodels", "-n", namespace)["items"] == []


# --- The rollout controller, live ------------------------------------------------------------------------------
# In a cluster with KServe, its controller runs each InferenceService as a predictor Deployment (RawDeployment) and
# the Istio mesh splits the traffic by the VirtualService's weights. Neither can be had here, so the tests stand in
# for both, and for nothing else: `KServeStandIn` makes each InferenceService's predictor Deployment and Service
# from the kiln image (the model copied from its storageUri to what the pod sees as /mnt/models, as KServe's storage
# initializer does) and reports it Ready, and `Traffic` sends each variant its share of requests as the
# VirtualService's weights say at that moment. The controller is Kiln's own, deployed by `kiln endpoint deploy`, in
# its pod with its own Role; it reads the model servers' metrics from the cluster's real Prometheus and patches the
# VirtualService through the API server.
PROMETHEUS = "http://10.244.0.1:16449"  # dev-cluster.sh's Prometheus, as pods reach it (default port + 6)


class KServeStandIn:
    def __init__(self, kube, namespace: str, endpoint: str, s3) -> None:
        import tempfile

        self.kube, self.namespace, self.endpoint, self.s3 = kube, namespace, endpoint, s3
        self.models = Path(tempfile.mkdtemp(prefix="kiln-models-", dir="/tmp"))
        self.models.chmod(0o755)  # the pods' user reads the model files

    def reconcile(self) -> None:
        """A predictor per InferenceService of the endpoint serving its storageUri; none for one that is gone."""
        wanted = {name: obj for name, obj in isvcs(self.kube, self.namespace).items()
                  if obj["metadata"]["labels"].get("kiln.dev/endpoint") == self.endpoint}
        running = {d["metadata"]["name"].removesuffix("-predictor"): d["metadata"]["annotations"]["kiln.test/model"]
                   for d in self.kube.get("deployments", "-n", self.namespace, "-l",
                                          f"kiln.test/stand-in-for={self.endpoint}")["items"]}
        for name, uri in running.items():
            if name not in wanted or storage_uri(wanted[name]) != uri:  # gone, or its model changed
                self.kube.run("delete", "deployment,service", f"{name}-predictor", "-n", self.namespace)
        for name, isvc in wanted.items():
            if running.get(name) != storage_uri(isvc):
                self._predictor(isvc)

    def _predictor(self, isvc: dict) -> None:
        from tests.test_dev_cluster import chart_security

        name, labels = isvc["metadata"]["name"], isvc["metadata"]["labels"]
        folder = self.models / name
        shutil.rmtree(folder, ignore_errors=True)
        self.s3.download(storage_uri(isvc), folder)
        for path in [folder, *folder.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        pod_security, container_security = chart_security()
        selector = {"app": f"{name}-predictor"}
        args = ["python", "-m", "kiln.serving.server", "--name", self.endpoint, "--model-uri", "/mnt/models",
                "--http-port", "8080", "--host", "0.0.0.0"]
        self.kube.apply(
            {"apiVersion": "apps/v1", "kind": "Deployment",
             "metadata": {"name": f"{name}-predictor", "namespace": self.namespace,
                          "labels": {"kiln.test/stand-in-for": self.endpoint},
                          "annotations": {"kiln.test/model": storage_uri(isvc)}},
             "spec": {"replicas": 1, "selector": {"matchLabels": selector}, "template": {
                 "metadata": {"labels": {**labels, **selector},
                              "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "8080"}},
                 "spec": {"securityContext": pod_security, "containers": [{
                     "name": "kserve-container", "image": "kiln:0.1.0", "imagePullPolicy": "Never", "command": args,
                     "securityContext": container_security, "env": [{"name": "HOME", "value": "/tmp"}],
                     "ports": [{"containerPort": 8080}],
                     "readinessProbe": {"httpGet": {"path": f"/v2/models/{self.endpoint}/ready", "port": 8080},
                                        "periodSeconds": 1},
                     "volumeMounts": [{"name": "model", "mountPath": "/mnt/models", "readOnly": True},
                                      {"name": "tmp", "mountPath": "/tmp"}]}],
                     "volumes": [{"name": "model", "hostPath": {"path": str(folder), "type": "Directory"}},
                                 {"name": "tmp", "emptyDir": {}}]}}}},
            {"apiVersion": "v1", "kind": "Service",
             "metadata": {"name": f"{name}-predictor", "namespace": self.namespace,
                          "labels": {"kiln.test/stand-in-for": self.endpoint}},
             "spec": {"selector": selector, "ports": [{"port": 80, "targetPort": 8080}]}})

    def wait_ready(self, name: str) -> None:
        self.kube.run("-n", self.namespace, "rollout", "status", f"deployment/{name}-predictor", "--timeout=180s")
        ready = {"status": {"conditions": [{"type": "Ready", "status": "True"}]}}
        self.kube.run("-n", self.namespace, "patch", "inferenceservice", name, "--subresource=status",
                      "--type=merge", "-p", json.dumps(ready))

    def pod_url(self, variant: str) -> str | None:
        pods = self.kube.get("pods", "-n", self.namespace, "-l", f"app={self.endpoint}-{variant}-predictor")["items"]
        ips = [p["status"].get("podIP") for p in pods if p["status"].get("phase") == "Running"]
        return f"http://{ips[0]}:8080" if ips and ips[0] else None


def storage_uri(isvc: dict) -> str:
    return isvc["spec"]["predictor"]["model"]["storageUri"]


class Traffic:
    """Requests one after another, each to a variant drawn by the VirtualService's weights at that moment."""

    def __init__(self, standin: KServeStandIn) -> None:
        import random
        import threading

        self.standin, self.answers, self.done = standin, [], threading.Event()
        self.random = random.Random(7)
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self) -> None:
        import httpx

        from tests.test_serving import ROWS

        weights: dict[str, int] = {}
        urls: dict[str, str | None] = {}
        refreshed = 0.0
        with httpx.Client(timeout=10) as client:
            while not self.done.is_set():
                if time.monotonic() - refreshed > 1.0:
                    vs = self.standin.kube.get("virtualservice", self.standin.endpoint, "-n", self.standin.namespace)
                    route = next(r for r in vs["spec"]["http"] if r["name"] == "weighted")["route"]
                    weights = {d["destination"]["host"].split(".")[0].removeprefix(f"{self.standin.endpoint}-")
                               .removesuffix("-predictor"): d["weight"] for d in route}
                    urls = {v: self.standin.pod_url(v) for v in weights}
                    refreshed = time.monotonic()
                variant = self.random.choices(list(weights), weights=list(weights.values()))[0]
                if urls.get(variant):
                    try:
                        res = client.post(f"{urls[variant]}/v1/models/{self.standin.endpoint}:predict",
                                          json={"instances": ROWS})
                        self.answers.append((variant, res.status_code))
                    except httpx.HTTPError:
                        self.answers.append((variant, 0))
                time.sleep(0.05)  # about 20 requests a second: enough to judge, little CPU taken from the suite

    def stop(self) -> None:
        self.done.set()
        self.thread.join()


def rollout_state(kube, namespace: str, endpoint: str) -> dict:
    vs = kube.get("virtualservice", endpoint, "-n", namespace)
    return json.loads((vs["metadata"].get("annotations") or {}).get("kiln.dev/rollout", "null") or "null") or {}


def wait_for_phase(kube, namespace: str, endpoint: str, phases: set[str], standin: KServeStandIn,
                   seconds: float = 180) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        standin.reconcile()
        state = rollout_state(kube, namespace, endpoint)
        if state.get("phase") in phases:
            return state
        assert time.monotonic() < deadline, f"no {phases} in {seconds} s; the rollout's state: {state}"
        time.sleep(1)


LIVE_SPEC = """
name: live
variants: [{name: primary, model: "models:/toy/1"}]
policy: {type: canary, step_percent: 50, bake_seconds: BAKE}
guardrails: {min_requests: 10, max_error_rate: 0.05, max_p99_increase_ms: 1000}
"""


@pytest.fixture(scope="module")
def live(kube, namespace, ws, s3):
    """Endpoint `live` deployed with its own rollout controller, the stand-in serving its primary."""
    root, env = ws
    env = {**env, "KILN_SERVING__CONTROLLER_IMAGE": "kiln:0.1.0", "KILN_SERVING__PROMETHEUS": PROMETHEUS,
           "KILN_SERVING__METRICS": "kiln", "KILN_SERVING__CONTROLLER_INTERVAL_SECONDS": "2",
           "KILN_SERVING__CONTROLLER_WAIT_SECONDS": "60"}
    res = run_kiln("endpoint", "deploy", write_spec(ws, LIVE_SPEC.replace("BAKE", "25")), "-w", root, "--json",
                   env=env)
    assert res.code == 0, res.stderr[-3000:]
    standin = KServeStandIn(kube, namespace, "live", s3)
    standin.reconcile()
    standin.wait_ready("live-primary")
    kube.run("-n", namespace, "rollout", "status", "deployment/kiln-rollout-live", "--timeout=120s")
    yield root, env, standin
    run_kiln("endpoint", "delete", "live", "-w", root, env=env)
    kube.run("-n", namespace, "delete", "deployment,service", "-l", "kiln.test/stand-in-for=live", "--wait=false")
    shutil.rmtree(standin.models, ignore_errors=True)


@pytest.fixture
def traffic(live):
    """Requests to the live endpoint's variants for as long as the test runs."""
    sent = Traffic(live[2])
    yield sent
    sent.stop()


def test_the_controllers_role_allows_exactly_what_it_needs(kube, namespace, live) -> None:
    who = f"system:serviceaccount:{namespace}:kiln-rollout-live"
    for verb, resource, allowed in [("get", "virtualservices.networking.istio.io/live", "yes"),
                                    ("patch", "virtualservices.networking.istio.io/live", "yes"),
                                    ("get", "configmaps/kiln-endpoint-live", "yes"),
                                    ("patch", "virtualservices.networking.istio.io/toy", "no"),
                                    ("delete", "virtualservices.networking.istio.io/live", "no"),
                                    ("list", "virtualservices.networking.istio.io", "no"),
                                    ("patch", "configmaps/kiln-endpoint-live", "no"),
                                    ("get", "configmaps/kiln-endpoint-toy", "no"),
                                    ("get", "secrets", "no"), ("create", "pods", "no")]:
        res = kube.run("auth", "can-i", verb, resource, "-n", namespace, "--as", who, check=False)
        assert res.stdout.strip() == allowed, (verb, resource, res.stdout, res.stderr)
    listed = kube.run("auth", "can-i", "--list", "-n", namespace, "--as", who).stdout
    granted = sorted(line.split()[0] for line in listed.splitlines()[1:]  # resources, not URLs or self-reviews
                     if not line.split()[0].startswith(("selfsubject", "[")))
    assert granted == ["configmaps", "virtualservices.networking.istio.io"], listed


def test_a_failing_canary_is_rolled_back_by_the_controller_on_prometheus_metrics(kube, namespace, live, traffic,
                                                                                 monkeypatch) -> None:
    root, env, standin = live
    for key, value in {**live_env(env)}.items():
        monkeypatch.setenv(key, value)
    from tests.test_endpoint_rollout import register_faulty

    faulty = register_faulty(root, "fail")
    res = run_kiln("endpoint", "update", "live", "--model", faulty, "--no-wait", "-w", root, env=env)
    assert res.code == 0, res.stderr[-3000:]
    state = wait_for_phase(kube, namespace, "live", {"baking"}, standin)
    assert state["share"] == 0.5
    standin.reconcile()
    state = wait_for_phase(kube, namespace, "live", {"rolled-back", "promoted"}, standin)
    assert state["phase"] == "rolled-back" and "error rate" in state["reason"], state
    failed = [code for variant, code in traffic.answers if variant == "primary-next" and code == 500]
    assert failed, "the candidate answered, and failed, before it was judged"
    status = json.loads(kiln(ws_of(live), "endpoint", "status", "live", "--json").stdout)
    assert [(v["name"], v["weight"], v["model"]) for v in status["variants"]] == [("primary", 100, "models:/toy/1")]
    assert "live-primary-next" not in isvcs(kube, namespace)


def test_a_healthy_canary_is_promoted_and_a_restarted_controller_resumes_it(kube, namespace, live,
                                                                          traffic) -> None:
    root, env, standin = live
    first = len(traffic.answers)  # this rollout's answers start here
    res = run_kiln("endpoint", "update", "live", "--model", "models:/toy/2", "--no-wait", "-w", root, env=env)
    assert res.code == 0, res.stderr[-3000:]
    baking = wait_for_phase(kube, namespace, "live", {"baking"}, standin)
    [before] = kube.get("pods", "-n", namespace, "-l", "app.kubernetes.io/name=kiln-rollout-live")["items"]
    # its log, followed to its end: the line it writes when it stops by itself on SIGTERM (killed at the end of its
    # grace period, it would write none); how long the deletion takes is the node's business
    follow = subprocess.Popen([str(kube.kubectl), "--kubeconfig", str(kube.kubeconfig), "-n", namespace, "logs", "-f",
                               before["metadata"]["name"]], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        kube.run("-n", namespace, "delete", "pod", before["metadata"]["name"])  # the controller, mid-bake
        log, _ = follow.communicate(timeout=120)
    finally:
        follow.kill()
    assert "live: stopped" in log, f"the controller stops on SIGTERM, not killed at the end of its grace: {log[-1500:]}"
    standin.reconcile()
    standin.wait_ready("live-primary-next")
    done = wait_for_phase(kube, namespace, "live", {"promoted", "rolled-back"}, standin)
    assert done["phase"] == "promoted", done
    [after] = kube.get("pods", "-n", namespace, "-l", "app.kubernetes.io/name=kiln-rollout-live")["items"]
    assert after["metadata"]["name"] != before["metadata"]["name"]
    phases = [h["phase"] for h in done["history"]]
    assert phases == ["baking", "promoted"], "the new controller went on with the canary it found, not a new one"
    assert done["history"][1]["at"] - baking["since"] >= 25, "baked the whole bake period across the restart"
    # all of this rollout's answers: on a busy machine its last few hundred may all come after the promotion
    served = {variant for variant, code in traffic.answers[first:] if code == 200}
    assert "primary-next" in served, "the candidate served its share before it was promoted"
    status = json.loads(kiln(ws_of(live), "endpoint", "status", "live", "--json").stdout)
    assert [(v["name"], v["weight"], v["model"]) for v in status["variants"]] == [("primary", 100, "models:/toy/2")]
    assert status["rollout"]["phase"] == "promoted" and status["rollout"]["candidate"] == "primary-next"


def live_env(env: dict[str, str]) -> dict[str, str]:
    """The S3 variables of the workspace's calls, for what the test itself logs to MLflow."""
    return {k: v for k, v in env.items() if k.startswith(("AWS_", "MLFLOW_S3"))}


def ws_of(live) -> tuple[Path, dict[str, str]]:
    root, env, _ = live
    return root, env


def test_studio_shows_the_cluster_endpoint_and_pauses_and_resumes_its_rollout(kube, namespace, live, traffic,
                                                                             tmp_path: Path) -> None:
    """Studio as the chart runs it (python -m kiln.studio.app over a workspace of serving type kserve): the endpoint
    from the API server, its traffic from Prometheus; a rollout paused from the page is held by the controller in its
    pod, and resumed, goes on to its end."""
    import sys

    from tests.studio_browser import chromium
    from tests.test_stack import free_port

    root, env, standin = live
    port, token = free_port(), secrets.token_hex(8)
    log = (tmp_path / "studio.log").open("w")
    studio = subprocess.Popen([sys.executable, "-m", "kiln.studio.app", "--workspace", str(root), "--port", str(port)],
                              env={**env, "KILN_STUDIO_TOKEN": token}, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    serving = json.loads(kiln(ws_of(live), "endpoint", "status", "live", "--json").stdout)["variants"][0]["model"]
    target = "models:/toy/1" if serving == "models:/toy/2" else "models:/toy/2"
    try:
        res = run_kiln("endpoint", "update", "live", "--model", target, "--no-wait", "-w", root, env=env)
        assert res.code == 0, res.stderr[-3000:]
        wait_for_phase(kube, namespace, "live", {"baking"}, standin)
        standin.reconcile()
        standin.wait_ready("live-primary-next")
        for _ in range(100):
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        with chromium(tmp_path / "shots") as browser:
            page = browser.open(f"{url}/endpoints")
            row = page.locator("tr[data-endpoint=live]").inner_text()
            assert "ready" in row and "baking" in row, row
            assert "primary-next" in row and "50%" in row, "the candidate's weight, from the VirtualService"
            assert "/s" in row, f"the last minute's traffic from Prometheus: {row}"
            page = browser.open(f"{url}/endpoints/live")
            assert page.locator("#chart-rps").count() == 1, f"traffic from Prometheus: {page.inner_text('main')}"
            page.wait_for_selector("#chart-rps .main-svg")  # 15 minutes of traffic, charted from Prometheus
            browser.shot("cluster-endpoint")
            page.fill("#token", token)
            page.dispatch_event("#token", "change")
            page.fill("#reason", "holding for the review")
            with page.expect_navigation():
                page.click("text=Pause")
            assert "(paused)" in page.inner_text("#rollout")
            held = rollout_state(kube, namespace, "live")
            assert held["paused"] and held["phase"] == "baking", held
            time.sleep(10)  # five decisions of the controller (every 2 s): it holds the paused rollout where it is
            still = rollout_state(kube, namespace, "live")
            assert still["paused"] and still["phase"] == "baking" and still["share"] == held["share"], still
            page.fill("#reason", "reviewed")
            with page.expect_navigation():
                page.click("text=Resume")
            assert "(paused)" not in page.inner_text("#rollout")
            done = wait_for_phase(kube, namespace, "live", {"promoted", "rolled-back"}, standin)
            assert done["phase"] == "promoted", done
            page = browser.open(f"{url}/endpoints/live")
            history = page.locator("#history").inner_text()
            assert "rollout paused" in history and "rollout resumed" in history and "studio" in history, history
            assert browser.clean() == []
    finally:
        studio.terminate()
        studio.wait(timeout=30)
        log.close()
    status = json.loads(kiln(ws_of(live), "endpoint", "status", "live", "--json").stdout)
    assert [(v["name"], v["model"]) for v in status["variants"]] == [("primary", target)]
