"""The predictor pod KServe's controller makes for an InferenceService served by a ServingRuntime (KServe's controller
cannot run here; this does what it does to the two objects, so a test can run the pod's container).

The runtime's container named `kserve-container` has its Go-template placeholders (`{{.Name}}`, `{{.Namespace}}`)
filled from the InferenceService's metadata; the predictor's model fields are merged over it as a strategic merge
does (maps key by key, env by name, volume mounts by path) except args, which KServe appends to the runtime's; the
storage initializer's folder is mounted read-only at /mnt/models; the runtime's volumes and scheduling go to the pod.
"""

from __future__ import annotations

import copy
import re
from typing import Any

CONTAINER = "kserve-container"
MODEL_DIR = "/mnt/models"
PROVISION = "kserve-provision-location"  # the volume KServe's storage initializer fills
MODEL_ONLY = ("modelFormat", "runtime", "storageUri", "protocolVersion", "runtimeVersion")
POD_FIELDS = ("volumes", "nodeSelector", "affinity", "tolerations", "imagePullSecrets")
KEYED = {"env": "name", "volumeMounts": "mountPath", "ports": "containerPort"}


def _fill(node: Any, meta: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        return {k: _fill(v, meta) for k, v in node.items()}
    if isinstance(node, list):
        return [_fill(v, meta) for v in node]
    if isinstance(node, str):
        filled = re.sub(r"\{\{\s*\.(Name|Namespace)\s*\}\}", lambda m: meta[m.group(1).lower()], node)
        assert "{{" not in filled, f"a placeholder this stand-in does not fill: {node}"
        return filled
    return node


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in over.items():
        if key in KEYED and isinstance(value, list):
            by = {item[KEYED[key]]: item for item in merged.get(key, [])}
            by.update({item[KEYED[key]]: item for item in value})
            merged[key] = list(by.values())
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def predictor_pod(runtime: dict[str, Any], isvc: dict[str, Any],
                  provision: dict[str, Any] | None = None) -> dict[str, Any]:
    """The predictor's pod spec; ``provision`` is the source of the /mnt/models volume (KServe's: an emptyDir the
    storage initializer fills from the storageUri)."""
    model = isvc["spec"]["predictor"]["model"]
    spec = runtime["spec"]
    assert model["modelFormat"]["name"] in {f["name"] for f in spec["supportedModelFormats"]}, "format not served"
    assert model.get("protocolVersion", "v1") in spec.get("protocolVersions", ["v1"]), "protocol not served"
    [container] = [c for c in spec["containers"] if c["name"] == CONTAINER]
    container = _fill(container, isvc["metadata"])
    own = {k: v for k, v in model.items() if k not in MODEL_ONLY}
    merged = _merge(container, {k: v for k, v in own.items() if k != "args"})
    merged["args"] = [*container.get("args", []), *own.get("args", [])]
    merged["volumeMounts"] = [*merged.get("volumeMounts", []), {"name": PROVISION, "mountPath": MODEL_DIR,
                                                               "readOnly": True}]
    pod = {k: copy.deepcopy(spec[k]) for k in POD_FIELDS if k in spec}
    pod["volumes"] = [*pod.get("volumes", []), {"name": PROVISION, **(provision or {"emptyDir": {}})}]
    pod["containers"] = [merged]
    return pod
