"""The Kustomize manifests: built with the real kubectl, every object checked, the base equal to what Kiln renders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from kiln.errors import InputError
from kiln.monitoring.schedule import render_cronjob
from kiln.serving import render as rendering
from kiln.serving.spec import load_spec
from tests.cluster_checks import (
    ADD_ON_GROUPS,
    container_problems,
    documents,
    run,
    secret_problems,
    validate,
)
from tests.conftest import run_kiln
from tests.k8s_tools import tools

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "manifests"
OVERLAYS = ["kind", "production"]
# RayCluster (ray.io/v1) fields the manifests may use; KubeRay ships no Python model to check them against, so its
# pod templates are checked as Kubernetes PodTemplates and the rest against this list.
RAY_FIELDS = {"spec": {"rayVersion", "headGroupSpec", "workerGroupSpecs", "enableInTreeAutoscaling"},
              "headGroupSpec": {"rayStartParams", "template", "serviceType"},
              "workerGroup": {"groupName", "replicas", "minReplicas", "maxReplicas", "rayStartParams", "template"}}


@pytest.fixture(scope="module")
def built() -> dict[str, list[dict[str, Any]]]:
    kubectl = tools()["kubectl"]
    return {o: documents(run(kubectl, "kustomize", MANIFESTS / "overlays" / o).stdout) for o in OVERLAYS}


def ray_pod_templates(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """The RayCluster's head and worker pod templates as v1 PodTemplates, after checking its own fields."""
    spec = obj["spec"]
    unknown = set(spec) - RAY_FIELDS["spec"]
    unknown |= set(spec["headGroupSpec"]) - RAY_FIELDS["headGroupSpec"]
    for group in spec["workerGroupSpecs"]:
        unknown |= set(group) - RAY_FIELDS["workerGroup"]
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], group["groupName"]
    assert not unknown, f"RayCluster {obj['metadata']['name']}: unknown fields {sorted(unknown)}"
    templates = [("head", spec["headGroupSpec"]["template"])] + [(g["groupName"], g["template"])
                                                                for g in spec["workerGroupSpecs"]]
    return [{"apiVersion": "v1", "kind": "PodTemplate",
             "metadata": {"name": f"{obj['metadata']['name']}-{name}", "namespace": obj["metadata"]["namespace"]},
             "template": template} for name, template in templates]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_of_an_overlay_is_valid(built: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    objs = built[overlay]
    kinds = {o["kind"] for o in objs}
    assert {"InferenceService", "VirtualService", "CronJob", "Service", "ConfigMap"} <= kinds
    # A laptop has no room for a Ray cluster beside the platform: trials run in the tune step there.
    assert ("RayCluster" in kinds) == (overlay == "production")
    for obj in objs:
        if obj["apiVersion"].startswith(ADD_ON_GROUPS):
            if obj["kind"] == "RayCluster":
                for template in ray_pod_templates(obj):
                    validate(template)
            continue
        validate(obj)
    # The endpoint's objects together: the KServe SDK's model, Kubernetes' schemas, the routes' hosts and weights.
    rendering.check([o for o in objs if o["metadata"].get("labels", {}).get("kiln.dev/endpoint") == "churn"
                     and o["kind"] != "CronJob"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_is_restricted_sized_and_pinned(built: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    workloads = [t for o in built[overlay] for t in (ray_pod_templates(o) if o["kind"] == "RayCluster" else [o])]
    assert [p for o in workloads for p in container_problems(o) + secret_problems(o)] == []
    # The model server's container: sized, no escalation, no capabilities (its runtime image decides its user).
    [isvc] = [o for o in built[overlay] if o["kind"] == "InferenceService"]
    model = isvc["spec"]["predictor"]["model"]
    assert {"cpu", "memory"} <= set(model["resources"]["requests"]) & set(model["resources"]["limits"])
    assert model["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def test_overlays_differ_where_a_cluster_does(built: dict[str, list[dict[str, Any]]]) -> None:
    def one(overlay: str, kind: str) -> dict[str, Any]:
        [obj] = [o for o in built[overlay] if o["kind"] == kind]
        return obj

    prod_ray = one("production", "RayCluster")
    assert prod_ray["spec"]["workerGroupSpecs"][0]["maxReplicas"] == 16
    assert prod_ray["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"] == \
        "registry.example.com/ml/kiln:0.1.0"
    assert not [o for o in built["kind"] if o["metadata"]["name"].startswith("kiln-ray")]
    cron = one("kind", "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert cron["imagePullPolicy"] == "Never"
    assert one("kind", "InferenceService")["spec"]["predictor"]["serviceAccountName"] == "kiln-models"
    assert one("production", "InferenceService")["spec"]["predictor"]["minReplicas"] == 2
    cron = one("production", "CronJob")
    command = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert cron["spec"]["schedule"] == "*/15 * * * *" and command[command.index("--since") + 1] == "15m"


def test_ray_version_is_the_image_one() -> None:
    import ray

    cluster = yaml.safe_load((MANIFESTS / "base" / "tuning" / "raycluster.yaml").read_text())
    assert cluster["spec"]["rayVersion"] == ray.__version__


def test_base_endpoint_is_what_kiln_endpoint_render_writes(tmp_path: Path) -> None:
    spec = load_spec(MANIFESTS / "base" / "churn-endpoint.yaml")
    written = rendering.render(spec, tmp_path / "out", namespace="kiln").files
    base = MANIFESTS / "base" / "endpoint"
    assert sorted(p.name for p in written) == sorted(p.name for p in base.iterdir())
    for path in written:
        assert yaml.safe_load(path.read_text()) == yaml.safe_load((base / path.name).read_text()), path.name


def test_base_monitor_is_what_kiln_monitor_schedule_renders(built: dict[str, list[dict[str, Any]]]) -> None:
    # The file is the command's output, byte for byte: after changing the renderer, run the command again.
    command = ("monitor", "schedule", "--endpoint", "churn", "--every", "1h", "--on-violation", "retrain",
               "--render")
    result = run_kiln(*command)
    assert result.code == 0, result.stderr
    path = MANIFESTS / "base" / "monitor" / "cronjob-kiln-monitor-churn.yaml"
    assert path.read_text() == result.stdout, f"regenerate it: kiln {' '.join(command)} > {path.relative_to(ROOT)}"
    assert yaml.safe_load(result.stdout) == render_cronjob("churn", "1h", "kiln:0.1.0", on_violation="retrain")
    # The base's monitor/ kustomization runs it beside the chart, in the chart's namespace.
    for overlay in OVERLAYS:
        [cron] = [o for o in built[overlay] if o["kind"] == "CronJob"]
        assert cron["metadata"]["namespace"] == "kubeflow"


def test_a_broken_overlay_is_refused(tmp_path: Path) -> None:
    # An overlay whose patch adds a field Kubernetes does not know fails the same checks.
    import shutil

    shutil.copytree(MANIFESTS, tmp_path / "manifests")
    overlay = tmp_path / "manifests" / "overlays" / "broken"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "resources": ["../kind"],
        "patches": [{"target": {"kind": "CronJob"}, "patch": yaml.safe_dump(
            [{"op": "add", "path": "/spec/jobTemplate/spec/template/spec/containers/0/memory", "value": "1Gi"}])}],
    }))
    objs = documents(run(tools()["kubectl"], "kustomize", overlay).stdout)
    [cron] = [o for o in objs if o["kind"] == "CronJob"]
    with pytest.raises(AssertionError, match="memory"):
        validate(cron)
    [isvc] = [o for o in objs if o["kind"] == "InferenceService"]
    isvc["spec"]["predictor"]["model"]["storageUrl"] = "s3://typo"
    with pytest.raises(InputError, match="storageUrl"):
        rendering.as_inference_service(isvc)
