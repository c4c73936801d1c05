"""The Helm chart, checked with the real helm binary and Kubernetes' own schemas: what `helm install` would apply."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from kiln.errors import InputError
from kiln.monitoring.schedule import cron_expression, render_cronjob
from tests.cluster_checks import (
    container_problems,
    containers,
    documents,
    run,
    secret_problems,
    validate,
)
from tests.k8s_tools import tools

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "kiln"
NAMESPACE = "kubeflow"
# A public key made for the tests (its private half was thrown away), as `--set-file` gives the workspace's.
PUBLIC_KEY = ROOT / "tests" / "data" / "signing-key.pub"
TVM = ["--set", "servingRuntimes.tvm.enabled=true", "--set-file", f"servingRuntimes.tvm.publicKey={PUBLIC_KEY}"]
VALUES = {"default": [], "kind": ["-f", CHART / "values-kind.yaml"],
          "production": ["-f", CHART / "values-production.yaml"], "dev": ["-f", CHART / "values-dev.yaml"],
          "tvm": TVM}
EXPOSED = ("mlflow", "feature-server", "evidently", "distribution", "capture", "studio")


@pytest.fixture(scope="module")
def helm() -> Path:
    return tools()["helm"]


def template(helm: Path, *args: Any) -> list[dict[str, Any]]:
    return documents(run(helm, "template", "kiln", CHART, "--namespace", NAMESPACE, *args).stdout)


def template_error(helm: Path, *args: Any) -> str:
    result = run(helm, "template", "kiln", CHART, "--namespace", NAMESPACE, *args, check=False)
    assert result.returncode != 0, "helm template accepted values it should refuse"
    return result.stderr


@pytest.fixture(scope="module")
def rendered(helm: Path) -> dict[str, list[dict[str, Any]]]:
    return {name: template(helm, *args) for name, args in VALUES.items()}


def by(objs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


@pytest.mark.parametrize("values", list(VALUES))
def test_helm_lint_passes_strict(helm: Path, values: str) -> None:
    result = run(helm, "lint", "--strict", CHART, *VALUES[values], check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("values", list(VALUES))
def test_every_rendered_object_is_valid_kubernetes(rendered: dict[str, list[dict[str, Any]]], values: str) -> None:
    objs = rendered[values]
    assert len(objs) > 20
    for obj in objs:
        validate(obj)


@pytest.mark.parametrize("values", list(VALUES))
def test_every_container_has_resources_security_and_a_pinned_image(rendered: dict[str, list[dict[str, Any]]],
                                                                    values: str) -> None:
    objs = rendered[values]
    assert sum(1 for o in objs for _ in containers(o)) >= 10
    problems = [p for o in objs for p in container_problems(o)]
    assert problems == []


@pytest.mark.parametrize("values", list(VALUES))
def test_no_secret_value_is_rendered(rendered: dict[str, list[dict[str, Any]]], values: str) -> None:
    objs = rendered[values]
    assert by(objs, "Secret") == []
    assert [p for o in objs for p in secret_problems(o)] == []
    # The passwords reach the containers from the Secrets the user created, by reference.
    refs = {(e["valueFrom"]["secretKeyRef"]["name"], e["name"]) for o in objs for _, c in containers(o)
            for e in c.get("env", []) if "valueFrom" in e}
    assert ("kiln-postgresql", "PGPASSWORD") in refs and ("kiln-object-store", "AWS_SECRET_ACCESS_KEY") in refs


def test_values_and_templates_hold_no_secret_value() -> None:
    # A key naming a credential may only name a Secret (existingSecret) or be empty, in every values file.
    def walk(node: Any, path: str) -> list[str]:
        if isinstance(node, dict):
            return [p for k, v in node.items() for p in walk(v, f"{path}.{k}")]
        key = path.rsplit(".", 1)[-1].lower()
        if any(w in key for w in ("password", "secretkey", "secret_key", "token", "accesskey")) and node:
            return [path]
        return []

    for file in CHART.glob("values*.yaml"):
        assert walk(yaml.safe_load(file.read_text()), file.name) == []
    for file in (CHART / "templates").rglob("*"):
        if file.is_file():
            text = file.read_text()
            assert "kind: Secret" not in text, file
            assert "stringData" not in text and "b64enc" not in text, file


def test_defaults_install_every_service_with_its_service_and_test_pod(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    objs = rendered["default"]
    components = {o["metadata"]["labels"]["app.kubernetes.io/component"]
                  for o in objs if o["kind"] in ("Deployment", "StatefulSet")}
    assert {"mlflow", "feature-server", "evidently", "distribution", "capture", "studio", "postgresql", "redis",
            "minio"} <= components
    services = {o["metadata"]["name"] for o in by(objs, "Service")}
    # The names kiln.yaml's cluster profile and the rendered endpoints address (the payload logger posts to the
    # collector on port 80, in the namespace README installs the chart in).
    assert {"kiln-mlflow", "kiln-redis", "kiln-postgresql", "kiln-minio", "kiln-capture"} <= services
    from kiln.serving.render import DEFAULT_CAPTURE

    [capture] = [o for o in by(objs, "Service") if o["metadata"]["name"] == "kiln-capture"]
    assert DEFAULT_CAPTURE == "http://kiln-capture.kubeflow.svc.cluster.local" and capture["spec"]["ports"][0]["port"] == 80
    tests = {o["metadata"]["name"] for o in by(objs, "Pod") if o["metadata"]["annotations"]["helm.sh/hook"] == "test"}
    assert tests == {f"kiln-{c}-test" for c in EXPOSED}
    for pod in by(objs, "Pod"):
        url = pod["spec"]["containers"][0]["command"][-1]
        service = url.split("//")[1].split(":")[0]
        assert service in services, url


def test_production_uses_external_stores_and_the_digest(helm: Path, rendered: dict[str, list[dict[str, Any]]]) -> None:
    objs = rendered["production"]
    components = {o["metadata"]["labels"].get("app.kubernetes.io/component") for o in objs}
    assert not {"postgresql", "redis", "minio"} & components
    settings = yaml.safe_load(by(objs, "ConfigMap", "kiln-settings")[0]["data"]["kiln.yaml"])
    assert "kiln-db.example.internal:5432" in settings["features"]["registry"]["path"]
    assert settings["features"]["online_store"]["connection_string"] == "kiln-cache.example.internal:6379"
    digest = "sha256:" + "ab" * 32
    images = {c["image"] for o in template(helm, *VALUES["production"], "--set", f"image.digest={digest}")
              for _, c in containers(o)}
    assert f"registry.example.com/ml/kiln@{digest}" in images
    # External stores must be named: an external PostgreSQL without a host is refused with the value's name.
    err = template_error(helm, "--set", "postgresql.enabled=false")
    assert "postgresql.external.host is required" in err


def test_chart_settings_load_as_kiln_settings(rendered: dict[str, list[dict[str, Any]]], tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from kiln.features.repo import feature_store_yaml
    from kiln.settings import load_settings

    for name in [k for k in os.environ if k.upper().startswith("KILN_")]:
        monkeypatch.delenv(name)
    data = by(rendered["default"], "ConfigMap", "kiln-settings")[0]["data"]
    (tmp_path / "kiln.yaml").write_text(data["kiln.yaml"])
    settings = load_settings(tmp_path)
    assert settings.profile == "cluster"
    assert settings.mlflow.tracking_uri == "http://kiln-mlflow.kubeflow.svc.cluster.local:5000"
    assert settings.mlflow.artifact_root == "mlflow-artifacts:/"
    assert settings.serving.type == "kserve"
    assert settings.ray.address == "ray://kiln-ray-head.kubeflow.svc.cluster.local:10001"
    kind = yaml.safe_load(by(rendered["kind"], "ConfigMap", "kiln-settings")[0]["data"]["kiln.yaml"])
    assert kind["ray"]["address"] == "local"  # no Ray cluster on a laptop: trials run in the tune step
    # The feature server's feature_store.yaml is the one Kiln itself writes for these settings.
    assert yaml.safe_load(data["feature_store.yaml"]) == yaml.safe_load(feature_store_yaml(settings))


@pytest.mark.parametrize("every", ["1m", "5m", "15m", "30m", "60m", "120m", "1h", "6h", "12h", "24h", "48h",
                                   "1440m", "1d", "7d"])
def test_monitor_cronjob_matches_what_kiln_renders(helm: Path, every: str) -> None:
    objs = template(helm, "--set", "monitors.schedules[0].endpoint=churn", "--set",
                    f"monitors.schedules[0].every={every}", "--set",
                    "monitors.schedules[0].onViolation=retrain")
    [job] = by(objs, "CronJob")
    ours = render_cronjob("churn", every, "kiln:0.1.0", namespace=NAMESPACE, on_violation="retrain")
    assert job["spec"]["schedule"] == cron_expression(every) == ours["spec"]["schedule"]
    # The whole object agrees, but for what the chart adds from its values: the release's standard labels, the
    # image pull policy and the S3 endpoint and region (Kiln's CronJob reads those from kiln.yaml). Helm leaves the
    # namespace to the install.
    del ours["metadata"]["namespace"]
    assert without_chart_values(job) == without_chart_values(ours)


CHART_LABELS = {"helm.sh/chart", "app.kubernetes.io/instance", "app.kubernetes.io/version",
                "app.kubernetes.io/managed-by", "app.kubernetes.io/part-of"}
CHART_ENV = {"MLFLOW_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION"}


def without_chart_values(cronjob: dict[str, Any]) -> dict[str, Any]:
    """A monitor CronJob without what only the chart sets from its values; its environment sorted by name."""
    job = copy.deepcopy(cronjob)
    template = job["spec"]["jobTemplate"]["spec"]["template"]
    for meta in (job["metadata"], template["metadata"]):
        meta["labels"] = {k: v for k, v in meta["labels"].items() if k not in CHART_LABELS}
    [container] = template["spec"]["containers"]
    container.pop("imagePullPolicy", None)
    container["env"] = sorted((e for e in container["env"] if e["name"] not in CHART_ENV), key=lambda e: e["name"])
    return job


@pytest.mark.parametrize("every", ["7m", "90m", "5h", "36h", "0m", "1w", "soon"])
def test_monitor_schedule_kiln_cannot_run_is_refused_by_both(helm: Path, every: str) -> None:
    err = template_error(helm, "--set", "monitors.schedules[0].endpoint=churn", "--set",
                         f"monitors.schedules[0].every={every}")
    assert "every" in err
    with pytest.raises(InputError):
        cron_expression(every)


@pytest.mark.parametrize("component, subject", [("endpoint-deployer", "pipeline-runner"), ("studio", "kiln-studio")])
def test_endpoint_deployers_and_studio_may_change_only_endpoint_objects_in_the_serving_namespace(
        helm: Path, component: str, subject: str) -> None:
    objs = template(helm, "--set", "rolloutController.namespace=serving")
    [role] = [r for r in by(objs, "Role") if r["metadata"]["name"] == f"kiln-{component}"]
    assert role["metadata"]["namespace"] == "serving"
    granted = {(g, r): tuple(rule["verbs"]) for rule in role["rules"] for g in rule["apiGroups"]
               for r in rule["resources"]}
    assert granted == {(g, r): ("get", "list", "patch", "delete") for g, r in [
        ("serving.kserve.io", "inferenceservices"), ("serving.kserve.io", "trainedmodels"),
        ("networking.istio.io", "virtualservices"),
        ("", "services"), ("", "configmaps")]}
    [binding] = [b for b in by(objs, "RoleBinding") if b["metadata"]["name"] == f"kiln-{component}"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": subject, "namespace": NAMESPACE}]
    off = template(helm, "--set", f"{'endpointDeployers' if component != 'studio' else 'studio'}.enabled=false")
    assert not [r for r in by(off, "Role") if r["metadata"]["name"] == f"kiln-{component}"]


def test_studio_takes_its_token_and_links_from_values_and_reads_the_workspace_only(
        helm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plain = template(helm)
    [studio] = by(plain, "Deployment", "kiln-studio")
    [container] = studio["spec"]["template"]["spec"]["containers"]
    assert "KILN_STUDIO_TOKEN" not in {e["name"] for e in container["env"]}, "no Secret named: pages only"
    assert all(m.get("readOnly") for m in container["volumeMounts"] if m["name"] in ("workspace", "settings"))
    objs = template(helm, "--set", "studio.existingSecret=studio-token", "--set",
                    "studio.links.kfp=https://kfp.example.test", "--set", "studio.links.mlflow=http://127.0.0.1:5000")
    [studio] = by(objs, "Deployment", "kiln-studio")
    [token] = [e for e in studio["spec"]["template"]["spec"]["containers"][0]["env"] if e["name"] == "KILN_STUDIO_TOKEN"]
    assert token["valueFrom"]["secretKeyRef"] == {"name": "studio-token", "key": "token", "optional": True}
    [settings] = by(objs, "ConfigMap", "kiln-settings")
    (tmp_path / "kiln.yaml").write_text(settings["data"]["kiln.yaml"])
    from kiln.settings import load_settings

    for name in [k for k in os.environ if k.upper().startswith("KILN_")]:
        monkeypatch.delenv(name)
    loaded = load_settings(tmp_path).studio
    assert (loaded.kfp_ui, loaded.mlflow_url, loaded.evidently_url) == (
        "https://kfp.example.test", "http://127.0.0.1:5000", None)
    assert "not-a-url" in template_error(helm, "--set", "studio.links.mlflow=not-a-url")


def test_rollout_controller_may_patch_only_its_endpoints_routing(helm: Path) -> None:
    objs = template(helm, "--set", "rolloutController.endpoints={churn,fraud}", "--set",
                    "rolloutController.namespace=serving")
    [role] = [r for r in by(objs, "Role") if r["metadata"]["name"] == "kiln-rollout-controller"]
    assert role["metadata"]["namespace"] == "serving"
    rules = {(tuple(r["apiGroups"]), tuple(r["resources"])): r for r in role["rules"]}
    assert set(rules) == {(("networking.istio.io",), ("virtualservices",)), (("",), ("configmaps",))}
    vs = rules[("networking.istio.io",), ("virtualservices",)]
    assert vs["verbs"] == ["get", "patch"] and vs["resourceNames"] == ["churn", "fraud"]
    cm = rules[("",), ("configmaps",)]
    assert cm["verbs"] == ["get"] and cm["resourceNames"] == ["kiln-endpoint-churn", "kiln-endpoint-fraud"]
    assert by(objs, "ClusterRole") == [] and by(objs, "ClusterRoleBinding") == []
    [binding] = [b for b in by(objs, "RoleBinding") if b["metadata"]["name"] == "kiln-rollout-controller"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "kiln-rollout-controller",
                                    "namespace": NAMESPACE}]
    deployments = [d for d in by(objs, "Deployment") if d["metadata"]["name"].startswith("kiln-rollout-controller")]
    assert len(deployments) == 2
    for d in deployments:
        args = d["spec"]["template"]["spec"]["containers"][0]["command"]
        assert args[:3] == ["python", "-m", "kiln.serving.controller"]
        from kiln.serving.controller import main

        with pytest.raises(SystemExit) as done:  # the controller's own parser takes exactly these arguments
            main([*args[3:], "--help"])
        assert done.value.code == 0
    # Only the controllers and Studio (which reads the endpoints and acts on their rollouts) get an API token.
    tokens = [o["metadata"]["name"] for o in objs if (spec := _pod(o)) and spec.get("automountServiceAccountToken")]
    assert sorted(tokens) == sorted([*(d["metadata"]["name"] for d in deployments), "kiln-studio"])


def test_the_tvm_serving_runtime_runs_what_a_rendered_tvm_variant_asks_for(helm: Path) -> None:
    """The ServingRuntime `kiln-tvm` in the endpoints' namespace serves what `kiln endpoint render` writes for a tvm
    variant; the pod KServe makes from the two runs Kiln's server on the bundle in /mnt/models, named after the
    endpoint, checking it against the key from the chart's ConfigMap, as the chart's user on a read-only root."""
    from kiln.serving.render import objects
    from kiln.serving.server import arguments
    from kiln.serving.spec import single_model_spec
    from tests.predictor import predictor_pod

    assert by(template(helm), "ServingRuntime") == [], "off unless asked for: it needs KServe's kinds"
    objs = template(helm, *TVM, "--set", "rolloutController.namespace=serving")
    [runtime] = by(objs, "ServingRuntime")
    assert runtime["metadata"]["namespace"] == "serving"
    spec = single_model_spec("churn", "models:/churn/3", "tvm")
    [isvc] = [o for o in objects(spec, namespace="serving", storage_uris={"primary": "s3://kiln/artifacts/compiled/b1"})
              if o["kind"] == "InferenceService"]
    assert isvc["spec"]["predictor"]["model"]["runtime"] == runtime["metadata"]["name"] == "kiln-tvm"
    pod = predictor_pod(runtime, isvc)  # refuses a format or protocol the runtime does not serve
    [container] = pod["containers"]
    command = [*container["command"], *container["args"]]
    assert command[:3] == ["python", "-m", "kiln.serving.server"]
    args = arguments(command[3:])
    assert (args.name, args.runtime, args.model_uri, args.http_port, args.host) == (
        "churn", "tvm", "/mnt/models", 8080, "0.0.0.0"), "the endpoint's name wins over the runtime's {{.Name}}"
    # Without the InferenceService's args the model is named after the InferenceService, as KServe names it.
    assert arguments([*container["command"][3:], *runtime["spec"]["containers"][0]["args"]]).name == "{{.Name}}"

    env = {e["name"]: e["value"] for e in container["env"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    folder, file = env["KILN_PUBLIC_KEY"].rsplit("/", 1)
    key_volume = volumes[mounts[folder]["name"]]
    [config_map] = by(objs, "ConfigMap", key_volume["configMap"]["name"])
    assert config_map["metadata"]["namespace"] == "serving", "a pod mounts ConfigMaps of its own namespace only"
    assert config_map["data"][file] == PUBLIC_KEY.read_text()
    assert mounts["/mnt/models"]["readOnly"] and mounts[folder]["readOnly"]
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]] and env["HOME"] == "/tmp"
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] and security["runAsUser"] == 10001 and security["runAsNonRoot"]
    assert container["resources"]["limits"]["memory"] == "4Gi", "the InferenceService's resources win"
    assert runtime["spec"]["nodeSelector"]["kubernetes.io/arch"] == "amd64"
    settings = yaml.safe_load(by(objs, "ConfigMap", "kiln-settings")[0]["data"]["kiln.yaml"])
    assert settings["serving"]["tvm_target"] == "x86_64" and settings["serving"]["namespace"] == "serving"
    arm = template(helm, *TVM, "--set", "servingRuntimes.tvm.target=aarch64")
    assert by(arm, "ServingRuntime")[0]["spec"]["nodeSelector"]["kubernetes.io/arch"] == "arm64"
    assert "tvm_target: aarch64" in by(arm, "ConfigMap", "kiln-settings")[0]["data"]["kiln.yaml"]


def test_the_multi_model_runtime_runs_what_a_rendered_multi_model_endpoint_asks_for(helm: Path) -> None:
    """The ServingRuntime `kiln-multi-model` serves what `kiln endpoint render` writes for a multi-model endpoint:
    a multi-model runtime (KServe adds its model agent) whose pod runs Kiln's multi-model server over /mnt/models with
    the endpoint's runtime and budget, inside the memory the InferenceService asks for; its TrainedModels name it."""
    from kiln.serving.multi_model import parse_args
    from kiln.serving.render import objects
    from kiln.serving.spec import parse_spec
    from tests.predictor import predictor_pod

    objs = template(helm, "--set", "servingRuntimes.multiModel.enabled=true", "--set",
                    "rolloutController.namespace=serving")
    [runtime] = by(objs, "ServingRuntime")
    assert runtime["spec"]["multiModel"] is True and runtime["metadata"]["namespace"] == "serving"
    spec = parse_spec({"name": "many", "mode": "multi-model", "variants": [{"name": "main", "model": "models:/churn/3"}],
                       "multi_model": {"budget_mb": 1500}})
    rendered = objects(spec, namespace="serving", storage_uris={"churn-v4": "s3://kiln/churn/4"})
    [isvc] = [o for o in rendered if o["kind"] == "InferenceService"]
    trained = [o for o in rendered if o["kind"] == "TrainedModel"]
    assert isvc["spec"]["predictor"]["model"]["runtime"] == runtime["metadata"]["name"]
    assert {t["spec"]["inferenceService"] for t in trained} == {isvc["metadata"]["name"]}
    assert sorted(t["metadata"]["name"] for t in trained) == ["churn-v3", "churn-v4"]
    [container] = predictor_pod(runtime, isvc)["containers"]
    command = [*container["command"], *container["args"]]
    assert command[:3] == ["python", "-m", "kiln.serving.multi_model"]
    args = parse_args(command[3:])
    assert (str(args.model_dir), args.runtime, args.budget_mb, args.http_port, args.host) == (
        "/mnt/models", "mlflow", 1500.0, 8080, "0.0.0.0")
    limit = int(container["resources"]["limits"]["memory"].removesuffix("Mi"))
    assert sum(int(t["spec"]["model"]["memory"].removesuffix("Mi")) for t in trained) <= 1500 < limit, \
        "KServe admits the versions within the budget; the server's own memory comes on top"


def test_the_tvm_runtime_refuses_a_missing_malformed_or_private_key(helm: Path, tmp_path: Path) -> None:
    err = template_error(helm, "--set", "servingRuntimes.tvm.enabled=true")
    assert "servingRuntimes.tvm.publicKey is required" in err and "signing-key.pub" in err
    err = template_error(helm, "--set", "servingRuntimes.tvm.enabled=true", "--set",
                         "servingRuntimes.tvm.publicKey=not a key")
    assert "servingRuntimes.tvm.publicKey is not a PEM public key" in err
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private = tmp_path / "artifact-signing.pem"
    private.write_bytes(Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    err = template_error(helm, "--set", "servingRuntimes.tvm.enabled=true", "--set-file",
                         f"servingRuntimes.tvm.publicKey={private}")
    body = private.read_text().splitlines()[1]
    assert "/servingRuntimes/tvm/publicKey" in err and body not in err, "refused, without printing the private key"


def _pod(obj: dict[str, Any]) -> dict[str, Any] | None:
    from tests.cluster_checks import pod_spec

    return pod_spec(obj)


def test_network_policies_deny_by_default_and_cover_every_pod(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objs = rendered["kind"]
    policies = by(objs, "NetworkPolicy")
    [deny] = [p for p in policies if p["metadata"]["name"].endswith("default-deny")]
    assert deny["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in deny["spec"] and "egress" not in deny["spec"]
    selector = deny["spec"]["podSelector"]["matchLabels"]
    for obj in objs:
        spec = _pod(obj)
        if spec is None:
            continue
        labels = (obj["spec"]["jobTemplate"]["spec"]["template"] if obj["kind"] == "CronJob" else
                  obj if obj["kind"] == "Pod" else obj["spec"]["template"])["metadata"]["labels"]
        assert selector.items() <= labels.items(), obj["metadata"]["name"]
    # Only the distribution point takes connections from anywhere (edge devices), and only on its port.
    open_ingress = [p for p in policies for rule in p["spec"].get("ingress", []) if "from" not in rule]
    assert [p["metadata"]["name"] for p in open_ingress] == ["kiln-ingress-devices"]
    assert open_ingress[0]["spec"]["ingress"][0]["ports"] == [{"port": 8090, "protocol": "TCP"}]


def test_kiln_containers_run_commands_that_exist(rendered: dict[str, list[dict[str, Any]]]) -> None:
    bin_dir = Path(sys.executable).parent
    for obj in rendered["kind"]:
        for _, c in containers(obj):
            if not c["image"].startswith("kiln:"):
                continue
            cmd = c["command"]
            if cmd[:2] == ["python", "-m"]:
                assert importlib.util.find_spec(cmd[2]) is not None, cmd
            elif cmd[0] == "python":
                continue  # the test pods' one-line checks
            else:
                # Click parses every option before it acts on --help: an unknown option fails here.
                result = subprocess.run([str(bin_dir / cmd[0]), *cmd[1:], "--help"], capture_output=True, text=True,
                                        timeout=120)
                assert result.returncode == 0, f"{cmd}: {result.stderr[-500:]}"


@pytest.mark.slow
def test_upload_job_compiles_with_the_workspace_mount_and_names_the_unreachable_server(
        rendered: dict[str, list[dict[str, Any]]], tmp_path: Path) -> None:
    [job] = [o for o in by(rendered["default"], "Job") if o["metadata"]["name"] == "kiln-pipelines-upload"]
    cmd = job["spec"]["template"]["spec"]["containers"][0]["command"]
    host = cmd[cmd.index("--host") + 1]
    assert host == "http://ml-pipeline.kubeflow.svc.cluster.local:8888"
    cmd[cmd.index("--host") + 1] = "http://127.0.0.1:9"  # nothing listens: the compile runs, the upload is refused
    result = subprocess.run([str(Path(sys.executable).parent / "kiln"), *cmd[1:]], capture_output=True, text=True,
                            timeout=300, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "KFP API server at http://127.0.0.1:9" in result.stderr
    # The same options compile both pipelines with the workspace volume and the Secrets on every step.
    out = tmp_path / "churn.yaml"
    compile_args = cmd[cmd.index("--workspace-pvc"):cmd.index("--json")]
    result = subprocess.run([str(Path(sys.executable).parent / "kiln"), "pipeline", "compile", "churn_training",
                             "-o", str(out), *compile_args, "--json"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["executors"] == len(summary["pvc_mounts"]) >= 10
    assert all(m == ["kiln-workspace:/kiln/workspace"] for m in summary["pvc_mounts"].values())
    platform = documents(out.read_text())[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    envs = {e["envVar"] for cfg in platform.values() for s in cfg["secretAsEnv"] for e in s["keyToEnv"]}
    assert envs == {"PGPASSWORD", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}


def test_bucket_hook_names_a_bad_bucket_and_an_unreachable_store() -> None:
    from kiln.stack.bucket import main

    assert main(["--bucket", "Bad_Name"]) == 1  # refused before any connection
    # Nothing listens on port 9: after its wait, the hook gives up naming the store.
    assert main(["--bucket", "kiln", "--endpoint-url", "http://127.0.0.1:9", "--wait", "0"]) == 2


@pytest.mark.parametrize(("setting", "named"), [
    ("mlflow.port=abc", "/mlflow/port"),
    ("image.tag=latest", "/image/tag"),
    ("image.digest=sha256:abc", "/image/digest"),
    ("workspace.accessMode=ReadMostly", "/workspace/accessMode"),
    ("mlflw.port=5000", "mlflw"),
    ("podSecurityContext.runAsNonRoot=false", "/podSecurityContext/runAsNonRoot"),
    ("securityContext.allowPrivilegeEscalation=true", "/securityContext/allowPrivilegeEscalation"),
    ("mlflow.resources.requests.memory=lots", "/mlflow/resources/requests/memory"),
    ("distribution.nodePort=80", "/distribution/nodePort"),
    ("rolloutController.endpoints={Churn_1}", "/rolloutController/endpoints/0"),
    ("servingRuntimes.tvm.target=x86", "/servingRuntimes/tvm/target"),
    ("servingRuntimes.tvm.enabled=yes", "/servingRuntimes/tvm/enabled"),
    ("servingRuntimes.tvm.resources.limits.cpu=many", "/servingRuntimes/tvm/resources/limits/cpu"),
])
def test_schema_rejects_a_wrong_value_and_names_it(helm: Path, setting: str, named: str) -> None:
    err = template_error(helm, "--set", setting)
    assert "schema" in err and named in err, err


def test_schema_is_json_schema_and_covers_every_value() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def missing(v: Any, s: dict[str, Any], path: str) -> list[str]:
        if not isinstance(v, dict) or not v:
            return []
        props = s.get("properties", {})
        return [m for k, x in v.items() for m in ([f"{path}.{k}"] if k not in props else
                                                  missing(x, props[k], f"{path}.{k}"))]

    assert missing(values, schema, "") == []


def test_every_value_has_a_comment() -> None:
    lines = (CHART / "values.yaml").read_text().splitlines()
    uncommented = []
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped.startswith("- "):
            continue
        if ":" in stripped and not lines[i - 1].strip().startswith("#"):
            uncommented.append(f"values.yaml:{i + 1}: {stripped}")
    assert uncommented == []
