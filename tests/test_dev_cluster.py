"""The local Kubernetes (scripts/dev-cluster.sh, Kubernetes 1.20.2 built from Debian's source): its API server
enforces RBAC, its node runs Kiln's image the way the chart's pods run it, and pod traffic has no way out."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

from tests.cluster import SCRIPT, Kube
from tests.cluster_checks import documents, run
from tests.test_chart import CHART, PUBLIC_KEY, TVM

pytestmark = pytest.mark.slow


def chart_security() -> tuple[dict, dict]:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    return values["podSecurityContext"], values["securityContext"]


def test_the_api_server_is_kubernetes_1_20_with_rbac_enforced(kube: Kube) -> None:
    version = kube.run("version", "-o", "json").stdout
    assert '"gitVersion": "v1.20.2"' in version
    ns = f"rbac-{uuid.uuid4().hex[:6]}"
    kube.run("create", "namespace", ns)
    try:
        kube.run("-n", ns, "create", "serviceaccount", "nobody")
        who = f"system:serviceaccount:{ns}:nobody"
        assert kube.run("auth", "can-i", "list", "pods", "-n", ns, "--as", who, check=False).stdout.strip() == "no"
        kube.run("-n", ns, "create", "role", "pod-reader", "--verb=list", "--resource=pods")
        kube.run("-n", ns, "create", "rolebinding", "nobody-reads", "--role=pod-reader", f"--serviceaccount={ns}:nobody")
        assert kube.run("auth", "can-i", "list", "pods", "-n", ns, "--as", who).stdout.strip() == "yes"
        assert kube.run("auth", "can-i", "delete", "pods", "-n", ns, "--as", who, check=False).stdout.strip() == "no"
    finally:
        kube.run("delete", "namespace", ns, "--wait=false", check=False)


def test_a_pod_of_the_platform_image_runs_as_the_charts_pods_and_cannot_reach_out(kube: Kube) -> None:
    pod_security, container_security = chart_security()
    name = f"kiln-{uuid.uuid4().hex[:6]}"
    kube.apply({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "securityContext": pod_security, "automountServiceAccountToken": False, "restartPolicy": "Never",
            "containers": [{
                "name": "kiln", "image": "kiln:0.1.0", "imagePullPolicy": "Never",
                "command": ["sh", "-c", "kiln --version && python -m http.server 8000"],
                "readinessProbe": {"httpGet": {"path": "/", "port": 8000}, "periodSeconds": 2},
                "securityContext": container_security,
                "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}]}],
            "volumes": [{"name": "tmp", "emptyDir": {}}]}})
    try:
        kube.run("wait", "--for=condition=Ready", f"pod/{name}", "--timeout=180s")
        assert "kiln 0.1.0" in kube.run("logs", name).stdout
        assert "uid=10001" in kube.run("exec", name, "--", "id").stdout
        pod = kube.get("pod", name)
        assert pod["status"]["podIP"].startswith("10.244.0.")
        probe = ("import errno, socket\n"
                 "s = socket.socket(); s.settimeout(3)\n"
                 "print(errno.errorcode.get(s.connect_ex(('203.0.113.1', 80)), 'connected'))")
        assert kube.run("exec", name, "--", "python", "-c", probe).stdout.strip() == "ENETUNREACH"
    finally:
        kube.run("delete", "pod", name, "--grace-period=0", "--wait=false", check=False)


def test_a_service_reaches_its_pod_by_the_address_kubernetes_gives_pods(kube: Kube) -> None:
    """No cluster DNS here: a pod finds a Service by the WEB_SERVICE_HOST variable the kubelet sets, and kube-proxy
    takes the connection to the pod behind it."""
    pod_security, container_security = chart_security()
    tag = uuid.uuid4().hex[:6]
    server = {"name": "web", "image": "kiln:0.1.0", "imagePullPolicy": "Never",
              "command": ["python", "-m", "http.server", "8000", "--directory", "/etc"],
              "readinessProbe": {"httpGet": {"path": "/hostname", "port": 8000}, "periodSeconds": 2},
              "securityContext": container_security}
    kube.apply(
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"web-{tag}", "labels": {"app": f"web-{tag}"}},
         "spec": {"securityContext": pod_security, "containers": [server]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"web-{tag}"},
         "spec": {"selector": {"app": f"web-{tag}"}, "ports": [{"port": 80, "targetPort": 8000}]}})
    client = f"client-{tag}"
    variable = f"WEB_{tag.upper()}_SERVICE_HOST"
    fetch = (f"import os, urllib.request\n"
             f"print(urllib.request.urlopen('http://' + os.environ['{variable}'] + '/hostname', timeout=10).read()"
             f".decode().strip())")
    try:
        kube.run("wait", "--for=condition=Ready", f"pod/web-{tag}", "--timeout=180s")
        kube.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": client},
                    "spec": {"securityContext": pod_security, "restartPolicy": "Never", "containers": [
                        {"name": "client", "image": "kiln:0.1.0", "imagePullPolicy": "Never",
                         "command": ["python", "-c", fetch], "securityContext": container_security}]}})
        kube.run("wait", "--for=jsonpath={.status.phase}=Succeeded", f"pod/{client}", "--timeout=180s")
        assert kube.run("logs", client).stdout.strip() == f"web-{tag}", "the answer came from the pod behind it"
    finally:
        kube.run("delete", "pod", f"web-{tag}", client, "--grace-period=0", "--wait=false", check=False)
        kube.run("delete", "service", f"web-{tag}", "--wait=false", check=False)


@pytest.fixture(scope="module")
def made_namespaces(kube: Kube):
    """Namespaces a test made, deleted (without waiting) when the module is done: the next case may need them."""
    made: set[str] = set()
    yield made
    for namespace in sorted(made):
        kube.run("delete", "namespace", namespace, "--wait=false", check=False)


@pytest.mark.parametrize("values", ["values.yaml", "values-kind.yaml", "values-production.yaml", "values-dev.yaml"])
def test_every_object_the_chart_renders_for_this_cluster_passes_its_api_servers_dry_run(
        kube: Kube, made_namespaces: set[str], values: str) -> None:
    """The chart rendered for the live API server's version (CronJob falls back to batch/v1beta1 before 1.21), then
    every object sent to it with `kubectl apply --dry-run=server`: schemas, defaulting and admission all run."""
    from tests.k8s_tools import tools

    server = json.loads(kube.run("version", "-o", "json").stdout)["serverVersion"]["gitVersion"]
    release = f"dry-{uuid.uuid4().hex[:6]}"
    rendered = run(tools()["helm"], "template", "kiln", CHART, "--namespace", release, "--kube-version", server,
                   "-f", CHART / values).stdout
    objects = documents(rendered)
    cronjobs = [o for o in objects if o["kind"] == "CronJob"]
    assert all(c["apiVersion"] == "batch/v1beta1" for c in cronjobs), "CronJob is batch/v1 only from 1.21"
    for o in objects:  # as `helm install -n RELEASE` places them
        o["metadata"].setdefault("namespace", release)
    namespaces = {o["metadata"]["namespace"] for o in objects}
    existing = {n["metadata"]["name"] for n in kube.get("namespaces")["items"]}
    for namespace in sorted(namespaces - existing):
        kube.run("create", "namespace", namespace)
        made_namespaces.add(namespace)
    res = kube.run("apply", "--dry-run=server", "-f", "-", check=False,
                   input="\n---\n".join(json.dumps(o) for o in objects))
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("(server dry run)") == len(objects), res.stdout


def test_pods_reach_the_hosts_stores_and_the_workspace_volume(kube: Kube) -> None:
    """The host's PostgreSQL and Redis listen on loopback; pods reach them at the bridge address through the script's
    relays. A claim without a storage class binds the script's volume, which the chart's user may write; once the
    claim is gone, the next `up` frees the volume for another, keeping its data."""
    pod_security, container_security = chart_security()
    tag = uuid.uuid4().hex[:6]
    ns = f"stores-{tag}"
    check = ("import pathlib, psycopg2, redis\n"
             "c = psycopg2.connect(host='10.244.0.1', user='postgres', dbname='postgres', connect_timeout=5)\n"
             "cur = c.cursor(); cur.execute('select 41 + 1'); print('postgresql', cur.fetchone()[0])\n"
             "print('redis', redis.Redis(host='10.244.0.1', port=6379, socket_timeout=5).ping())\n"
             f"pathlib.Path('/workspace/{tag}.txt').write_text('written by the pod')\n")
    kube.run("create", "namespace", ns)
    try:
        kube.apply(
            {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "workspace", "namespace": ns},
             "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "",
                      "resources": {"requests": {"storage": "1Gi"}}}},
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "check", "namespace": ns},
             "spec": {"securityContext": pod_security, "restartPolicy": "Never", "containers": [
                 {"name": "check", "image": "kiln:0.1.0", "imagePullPolicy": "Never", "command": ["python", "-c", check],
                  "securityContext": container_security,
                  "volumeMounts": [{"name": "workspace", "mountPath": "/workspace"}]}],
                 "volumes": [{"name": "workspace", "persistentVolumeClaim": {"claimName": "workspace"}}]}})
        kube.run("-n", ns, "wait", "--for=jsonpath={.status.phase}=Succeeded", "pod/check", "--timeout=180s")
        assert kube.run("-n", ns, "logs", "check").stdout.split() == ["postgresql", "42", "redis", "True"]
        volume = kube.get("pv", "kiln-dev-workspace")
        written = Path(volume["spec"]["hostPath"]["path"]) / f"{tag}.txt"
        assert written.read_text() == "written by the pod" and written.stat().st_uid == 10001
    finally:
        # The claim goes first (its pod before it): a namespace's deletion takes its time on this API server.
        kube.run("-n", ns, "delete", "pod,pvc", "--all", "--timeout=120s", check=False)
        kube.run("delete", "namespace", ns, "--wait=false", check=False)
    kube.run("wait", "--for=jsonpath={.status.phase}=Released", "pv/kiln-dev-workspace", "--timeout=60s")
    up = subprocess.run(["bash", str(SCRIPT), "up"], capture_output=True, text=True, timeout=600)
    assert up.returncode == 0, up.stderr[-3000:]
    assert kube.get("pv", "kiln-dev-workspace")["status"]["phase"] == "Available"
    assert written.exists(), "the volume keeps its data"


def test_the_chart_installs_passes_its_tests_upgrades_and_uninstalls_on_the_live_cluster(kube: Kube) -> None:
    """`helm install --wait` with values-dev.yaml (no DNS, the host's PostgreSQL and Redis through the relays), `helm
    test`, `helm upgrade` with changed values (MLflow's workers, a monitor CronJob: batch/v1beta1 on 1.20), and
    `helm uninstall`, after which nothing of the release is left but the workspace claim it keeps on purpose."""
    import psycopg2

    from tests.k8s_tools import tools

    tag = uuid.uuid4().hex[:6]
    ns, databases = f"kiln-{tag}", {"mlflow": f"kiln_dev_{tag}_mlflow", "feast": f"kiln_dev_{tag}_feast"}
    conn = psycopg2.connect(host="127.0.0.1", user="postgres", dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        for name in databases.values():
            cur.execute(f'CREATE DATABASE "{name}"')
    helm = [str(tools()["helm"]), "--kubeconfig", str(kube.kubeconfig), "-n", ns]
    values = ["-f", str(CHART / "values-dev.yaml"), "--set", f"rolloutController.namespace={ns}",
              "--set", f"postgresql.mlflowDatabase={databases['mlflow']}",
              "--set", f"postgresql.feastDatabase={databases['feast']}", "--set", f"featureServer.project=dev_{tag}",
              *TVM]
    kube.run("create", "namespace", ns)
    try:
        kube.run("-n", ns, "create", "secret", "generic", "kiln-object-store", "--from-literal=access-key-id=dev",
                 f"--from-literal=secret-access-key={uuid.uuid4().hex}")
        kube.run("-n", ns, "create", "secret", "generic", "kiln-postgresql", "--from-literal=password=unused")
        kube.run("-n", ns, "create", "serviceaccount", "pipeline-runner")  # as KFP's own, which runs pipeline steps
        run(*helm, "install", "kiln", CHART, *values, "--wait", "--timeout", "4m")
        tested = run(*helm, "test", "kiln", "--timeout", "3m").stdout
        assert tested.count("Phase:          Succeeded") == 6, tested  # one test pod per exposed service
        the_deployers_rights(kube, ns)
        runtime = kube.get("-n", ns, "servingruntime", "kiln-tvm")  # KServe's kind, its CRD generated by Kiln
        assert [f["name"] for f in runtime["spec"]["supportedModelFormats"]] == ["tvm"]
        mounts = {m["mountPath"]: m["name"] for m in runtime["spec"]["containers"][0]["volumeMounts"]}
        key = {v["name"]: v for v in runtime["spec"]["volumes"]}[mounts["/etc/kiln/keys"]]["configMap"]["name"]
        assert kube.get("-n", ns, "configmap", key)["data"] == {"signing-key.pub": PUBLIC_KEY.read_text()}

        run(*helm, "upgrade", "kiln", CHART, *values, "--set", "mlflow.workers=2", "--set",
            "monitors.schedules[0].endpoint=churn", "--set", "monitors.schedules[0].every=1h", "--wait", "--timeout", "4m")
        [server] = kube.get("-n", ns, "deployment", "kiln-mlflow")["spec"]["template"]["spec"]["containers"]
        words = server.get("command", []) + server.get("args", [])
        assert words[words.index("--workers") + 1] == "2"
        [cronjob] = kube.get("-n", ns, "cronjobs")["items"]
        assert cronjob["apiVersion"] == "batch/v1beta1" and cronjob["spec"]["schedule"] == "0 * * * *"

        run(*helm, "uninstall", "kiln", "--wait", "--timeout", "3m")
        kube.run("-n", ns, "wait", "--for=delete", "pod", "-l", "app.kubernetes.io/instance=kiln", "--timeout=120s")
        left = kube.get("-n", ns, "all,configmaps,serviceaccounts,roles,rolebindings,networkpolicies,cronjobs,pvc,"
                        "servingruntimes",
                        "-l", "app.kubernetes.io/instance=kiln")["items"]
        assert [(o["kind"], o["metadata"]["name"]) for o in left] == [("PersistentVolumeClaim", "kiln-workspace")]
    finally:
        kube.run("-n", ns, "delete", "pod,pvc", "--all", "--timeout=120s", check=False)
        kube.run("delete", "namespace", ns, "--wait=false", check=False)
        with conn.cursor() as cur:
            for name in databases.values():
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()
        subprocess.run(["bash", str(SCRIPT), "up"], capture_output=True, timeout=600)  # frees the workspace volume


def the_deployers_rights(kube: Kube, ns: str) -> None:
    """The chart's endpoint-deployer Role gives KFP's pipeline-runner exactly the rights Kiln uses, in the serving
    namespace only (Kiln in a pod reaching the API with its own credentials: the rollout controller's tests)."""
    who = f"system:serviceaccount:{ns}:pipeline-runner"
    for verb, resource, where, allowed in [("patch", "inferenceservices.serving.kserve.io", ns, "yes"),
                                           ("delete", "trainedmodels.serving.kserve.io", ns, "yes"),
                                           ("delete", "virtualservices.networking.istio.io", ns, "yes"),
                                           ("list", "configmaps", ns, "yes"), ("create", "pods", ns, "no"),
                                           ("get", "secrets", ns, "no"),
                                           ("patch", "inferenceservices.serving.kserve.io", "default", "no")]:
        res = kube.run("auth", "can-i", verb, resource, "-n", where, "--as", who, check=False)
        assert res.stdout.strip() == allowed, (verb, resource, where, res.stdout, res.stderr)

