"""The local Kubernetes (scripts/dev-cluster.sh, Kubernetes 1.20.2 built from Debian's source): its API server
enforces RBAC, its node runs Kiln's image the way the chart's pods run it, and pod traffic has no way out."""

from __future__ import annotations

import uuid

import pytest
import yaml

from tests.cluster import Kube
from tests.test_chart import CHART

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
