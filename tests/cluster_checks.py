"""What every rendered cluster object must satisfy, shared by the chart's and the manifests' tests."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from typing import Any

import kubernetes_validate
import yaml

# The kind node image the install script uses runs Kubernetes 1.36 (Istio 1.31 supports 1.32-1.36).
KUBERNETES_VERSION = "1.36"
PINNED_IMAGE = re.compile(r"^[^:@\s]+(:(?!latest$)[A-Za-z0-9_][A-Za-z0-9_.-]*)?(@sha256:[a-f0-9]{64})?$")
# Kinds served by add-ons (KServe, KubeRay) that Kubernetes' own schemas do not hold: checked by their own models.
ADD_ON_GROUPS = ("serving.kserve.io/", "ray.io/", "networking.istio.io/")


def run(*args: Any, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a tool; with ``check``, a failure raises with what the tool printed."""
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} exited {result.returncode}: {result.stderr[-2000:]}")
    return result


def documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def validate(obj: dict[str, Any]) -> None:
    """kubernetes-validate, strict (unknown fields are errors), against KUBERNETES_VERSION; raises naming the object.
    A KServe ServingRuntime goes through the KServe SDK's model, and its pod part through Kubernetes' PodSpec."""
    if obj["kind"] == "ServingRuntime":
        serving_runtime(obj)
        pod = {k: v for k, v in obj["spec"].items() if k in POD_SPEC_FIELDS}
        obj = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": obj["metadata"]["name"]},
               "template": {"spec": pod}}
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(map(str, exc.absolute_path)) or "(top)"
        raise AssertionError(f"{obj['kind']} {obj['metadata'].get('name')}: at {where}: {exc.message}") from None


# The fields a ServingRuntime's spec shares with a PodSpec.
POD_SPEC_FIELDS = ("containers", "volumes", "nodeSelector", "affinity", "tolerations", "imagePullSecrets")


def serving_runtime(obj: dict[str, Any]) -> None:
    """A round trip through the KServe SDK's V1alpha1ServingRuntime: a field it does not know, or one of the wrong
    type, fails naming it."""
    from kiln.serving.render import _differences, _sdk_client

    client = _sdk_client()
    again = client.sanitize_for_serialization(client._ApiClient__deserialize(dict(obj), "V1alpha1ServingRuntime"))
    assert again == obj, f"ServingRuntime {obj['metadata']['name']}: {_differences(obj, again)}"


def pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The pod spec inside a workload object, or None for objects that run no pods."""
    kind, spec = obj["kind"], obj.get("spec", {})
    if kind == "Pod":
        return spec
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"):
        return spec["template"]["spec"]
    if kind == "CronJob":
        return spec["jobTemplate"]["spec"]["template"]["spec"]
    if kind == "PodTemplate":
        return obj["template"]["spec"]
    if kind == "ServingRuntime":  # KServe's template of a predictor's pod
        return spec
    return None


def containers(obj: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(pod spec, container) for every container and init container of a workload."""
    spec = pod_spec(obj)
    if spec is not None:
        for c in [*spec.get("initContainers", []), *spec["containers"]]:
            yield spec, c


def container_problems(obj: dict[str, Any]) -> list[str]:
    """What a container lacks: requests and limits for cpu and memory, a restricted security context, a pinned image."""
    problems = []
    for spec, c in containers(obj):
        where = f"{obj['kind']} {obj['metadata']['name']} container {c['name']}"
        res = c.get("resources", {})
        for part in ("requests", "limits"):
            for what in ("cpu", "memory"):
                if what not in res.get(part, {}):
                    problems.append(f"{where}: no {part}.{what}")
        sc, psc = c.get("securityContext", {}), spec.get("securityContext", {})
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: allowPrivilegeEscalation is not false")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []) or sc.get("capabilities", {}).get("add"):
            problems.append(f"{where}: capabilities not all dropped")
        if sc.get("privileged"):
            problems.append(f"{where}: privileged")
        if not sc.get("runAsNonRoot", psc.get("runAsNonRoot")):
            problems.append(f"{where}: may run as root")
        if sc.get("runAsUser", psc.get("runAsUser")) == 0:
            problems.append(f"{where}: runs as user 0")
        if "RuntimeDefault" not in (sc.get("seccompProfile", psc.get("seccompProfile")) or {}).get("type", ""):
            problems.append(f"{where}: no RuntimeDefault seccomp profile")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{where}: root filesystem is writable")
        image = c.get("image", "")
        if not PINNED_IMAGE.match(image) or (":" not in image.rsplit("/", 1)[-1] and "@" not in image):
            problems.append(f"{where}: image '{image}' is not pinned to a tag or digest")
    return problems


SECRETISH = re.compile(r"(PASSWORD|SECRET|TOKEN|ACCESS_KEY|PRIVATE)", re.I)


def secret_problems(obj: dict[str, Any]) -> list[str]:
    """Secrets written out: a Secret object with data, or a password-like env var given as a literal value."""
    problems = []
    if obj["kind"] == "Secret" and (obj.get("data") or obj.get("stringData")):
        problems.append(f"Secret {obj['metadata']['name']} holds values")
    for _, c in containers(obj):
        for env in c.get("env", []):
            if SECRETISH.search(env["name"]) and "value" in env:
                problems.append(f"{obj['kind']} {obj['metadata']['name']}: env {env['name']} is a literal value")
    return problems
