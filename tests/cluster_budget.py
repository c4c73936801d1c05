"""What a kind cluster for Kiln requests: the chart (rendered with the real helm), the kind overlay, and the
prerequisites' documented requests, against the memory kind-config.yaml leaves a laptop's 8 GB node.

    .venv/bin/python -m tests.cluster_budget       # prints the table (README: Cluster quotes it)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from tests.cluster_checks import containers, documents, run
from tests.k8s_tools import tools

ROOT = Path(__file__).resolve().parents[1]
NODE_MEMORY_MI = 8 * 1024  # what Docker gets on an 8 GB laptop: the node's whole memory

# Requests (cpu millicores, memory MiB) of the prerequisites as their release manifests and charts set them, at the
# versions scripts/kind-up.sh installs. Where a release sets none, it counts as 0 here and says so.
PREREQUISITES: list[tuple[str, str, str, int, int]] = [
    # (add-on, version, pod, cpu m, memory Mi)
    ("Kubeflow Pipelines", "2.17.0", "ml-pipeline (API server)", 250, 500),
    ("Kubeflow Pipelines", "2.17.0", "mysql", 100, 800),
    ("Kubeflow Pipelines", "2.17.0", "seaweedfs (object store)", 64, 256),
    ("Kubeflow Pipelines", "2.17.0", "workflow-controller (Argo)", 100, 500),
    ("Kubeflow Pipelines", "2.17.0", "ml-pipeline-persistenceagent", 120, 500),
    ("Kubeflow Pipelines", "2.17.0", "ml-pipeline-ui", 10, 70),
    ("Kubeflow Pipelines", "2.17.0", "ml-pipeline-visualizationserver", 30, 500),
    ("Kubeflow Pipelines", "2.17.0", "scheduledworkflow, metadata-grpc, metadata-writer", 30, 48),
    ("KServe", "v0.21.0", "kserve-controller-manager", 100, 200),
    ("KServe", "v0.21.0", "llmisvc and localmodel controllers", 200, 500),
    ("cert-manager", "v1.21.1", "controller, webhook, cainjector (none set)", 0, 0),
    ("KubeRay", "1.7.0", "kuberay-operator (limits only: requests = limits)", 100, 512),
    ("Istio", "1.31.1", "istiod (scripts/kind-up.sh: 100m, 512Mi)", 100, 512),
    ("Istio", "1.31.1", "Prometheus add-on (none set)", 0, 0),
    ("Kubernetes (kind)", "1.36.4", "coredns x2, etcd, kindnet, control plane", 850, 290),
]


def quantity(value: Any, memory: bool) -> int:
    """A Kubernetes quantity in millicores (cpu) or MiB (memory)."""
    text = str(value)
    m = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", text)
    number, unit = float(m.group(1)), m.group(2)
    if not memory:
        return int(number * 1000) if unit == "" else int(number)
    scale = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "Ti": 1024 * 1024, "k": 1000 / 1024 ** 2, "M": 1e6 / 1024 ** 2,
             "G": 1e9 / 1024 ** 2, "": 1 / 1024 ** 2}[unit]
    return round(number * scale)


def always_running(objs: list[dict[str, Any]]) -> list[tuple[str, int, int]]:
    """(name, cpu m, memory Mi) of the workloads that run all the time: Deployments, StatefulSets, InferenceService
    predictors; not hooks, tests or CronJobs (they come and go)."""
    rows = []
    for obj in objs:
        if obj["kind"] in ("Deployment", "StatefulSet"):
            replicas = obj["spec"].get("replicas", 1)
            cpu = sum(quantity(c["resources"]["requests"]["cpu"], False) for _, c in containers(obj))
            mem = sum(quantity(c["resources"]["requests"]["memory"], True) for _, c in containers(obj))
            rows.append((f"{obj['kind']} {obj['metadata']['name']}", cpu * replicas, mem * replicas))
        elif obj["kind"] == "InferenceService":
            predictor = obj["spec"]["predictor"]
            req = predictor["model"]["resources"]["requests"]
            # Its namespace has Istio's sidecar injection: each pod adds the proxy's 100m / 128Mi.
            replicas = predictor.get("minReplicas", 1)
            cpu, mem = quantity(req["cpu"], False) + 100, quantity(req["memory"], True) + 128
            rows.append((f"InferenceService {obj['metadata']['name']} (+ Istio sidecar)", cpu * replicas,
                         mem * replicas))
    return rows


def budget() -> dict[str, Any]:
    helm, kubectl = tools()["helm"], tools()["kubectl"]
    chart = ROOT / "charts" / "kiln"
    default = documents(run(helm, "template", "kiln", chart, "-n", "kubeflow").stdout)
    kind = documents(run(helm, "template", "kiln", chart, "-n", "kubeflow", "-f", chart / "values-kind.yaml").stdout)
    overlay = documents(run(kubectl, "kustomize", ROOT / "manifests" / "overlays" / "kind").stdout)
    kubelet = yaml.safe_load((ROOT / "kind-config.yaml").read_text())["nodes"][0]["kubeadmConfigPatches"][0]
    reserved = yaml.safe_load(kubelet)
    allocatable = (NODE_MEMORY_MI - quantity(reserved["systemReserved"]["memory"], True)
                   - quantity(reserved["evictionHard"]["memory.available"], True))
    prereq_cpu = sum(p[3] for p in PREREQUISITES)
    prereq_mem = sum(p[4] for p in PREREQUISITES)

    def total(rows: list[tuple[str, int, int]]) -> tuple[int, int]:
        return sum(r[1] for r in rows), sum(r[2] for r in rows)

    return {"allocatable_mi": allocatable, "prerequisites": (prereq_cpu, prereq_mem),
            "chart_default": total(always_running(default)), "chart_kind": total(always_running(kind)),
            "kind_overlay": total(always_running(overlay)), "chart_kind_rows": always_running(kind),
            "overlay_rows": always_running(overlay)}


def main() -> None:
    b = budget()
    print(f"{'prerequisite':<22}{'version':<10}{'pod':<52}{'cpu':>7}{'memory':>9}")
    for name, version, pod, cpu, mem in PREREQUISITES:
        print(f"{name:<22}{version:<10}{pod:<52}{cpu:>6}m{mem:>6} Mi")
    print(f"\n{'Kiln (values-kind.yaml)':<84}")
    for name, cpu, mem in b["chart_kind_rows"] + b["overlay_rows"]:
        print(f"  {name:<82}{cpu:>6}m{mem:>6} Mi")
    pc, pm = b["prerequisites"]
    dc, dm = b["chart_default"]
    kc, km = b["chart_kind"]
    oc, om = b["kind_overlay"]
    print(f"\nprerequisites                       {pc:>6}m {pm:>6} Mi")
    print(f"chart, default values               {dc:>6}m {dm:>6} Mi  -> with prerequisites {pm + dm} Mi")
    print(f"chart, values-kind.yaml             {kc:>6}m {km:>6} Mi")
    print(f"manifests/overlays/kind (endpoint)  {oc:>6}m {om:>6} Mi")
    print(f"kind: all of it                     {pc + kc + oc:>6}m {pm + km + om:>6} Mi "
          f"of {b['allocatable_mi']} Mi allocatable on an 8 GB node ({(pm + km + om) / b['allocatable_mi']:.0%})")


if __name__ == "__main__":
    main()
