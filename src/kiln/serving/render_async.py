"""An asynchronous endpoint's cluster objects (`kiln endpoint render` of a spec in mode async):

- a ConfigMap with the front's and the workers' configuration (kiln.serving.async_config, kiln.serving.async_worker);
- the front: a Deployment of Kiln's image (kiln.serving.async_app) and the endpoint's Service (port 80);
- the workers: a Deployment whose init container copies the model's files from the object store
  (kiln.serving.fetch_model), then kiln.serving.async_worker with a health port; a long grace period, so a worker told
  to stop answers the request it holds first;
- KEDA's ScaledObject on the queue's length (RabbitMQ trigger, QueueLength: ceil(length / backlog_per_worker)
  workers, from min to max, back to min after idle_seconds) and its TriggerAuthentication, which reads the broker's
  URL from the Secret that also gives it to the pods.

The broker's URL comes from a Secret (key `url`); the object store's keys from the Secret KServe's endpoints use
(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY). KEDA's schemas come with its release manifests, which these machines
cannot download: its two objects are checked here against the fields KEDA documents for them (`keda_problems`); the
others against Kubernetes' own schemas, like every rendered object.
"""

from __future__ import annotations

import json
import re
from typing import Any

from kiln.errors import InputError
from kiln.serving.async_config import AsyncFrontConfig
from kiln.serving.async_worker import WorkerConfig
from kiln.serving.spec import EndpointSpec

FRONT_PORT, HEALTH_PORT = 8080, 8081
MODELS = "/mnt/models"
CONFIG = "/etc/kiln"
GRACE_SECONDS = 600  # a worker scaled down answers the request it holds (a large one takes minutes) before it goes
KEDA = "keda.sh/v1alpha1"


def queue_for(spec: EndpointSpec, namespace: str) -> str:
    """The endpoint's queue on a cluster: fixed by its name and namespace, so KEDA's trigger can name it."""
    return f"kiln.async.{namespace}.{spec.name}"


def async_objects(spec: EndpointSpec, *, namespace: str, image: str, storage_uri: str, store: str,
                  store_endpoint_url: str | None, labels: dict[str, str], broker_secret: str = "kiln-broker",
                  s3_secret: str = "kiln-s3", tracking_uri: str | None = None,
                  capture: str | None = None) -> list[dict[str, Any]]:
    """The objects above, as plain dicts (not checked: kiln.serving.render checks every rendered object)."""
    if spec.mode != "async":
        raise InputError(f"endpoint {spec.name} is not asynchronous (mode {spec.mode})")
    a, variant, queue = spec.async_inference, spec.variants[0], queue_for(spec, namespace)
    name = spec.name
    worker = WorkerConfig(
        endpoint=name, variant=variant.name, model_uri=MODELS, runtime=variant.runtime, broker_url="env:KILN_BROKER_URL",
        queue=queue, store=store, store_endpoint_url=store_endpoint_url, chunk_rows=a.chunk_rows,
        max_deliveries=a.max_deliveries, success_url=a.notify.success_url, error_url=a.notify.error_url,
        capture=capture if spec.capture.enabled else None, capture_endpoint_url=store_endpoint_url,
        capture_percent=spec.capture.sample_percent, capture_flush_seconds=spec.capture.flush_seconds)
    front = AsyncFrontConfig(endpoint=name, broker_url="env:KILN_BROKER_URL", queue=queue, store=store,
                             store_endpoint_url=store_endpoint_url, max_payload_bytes=int(a.max_payload_mb * 2**20),
                             token_env=spec.auth.bearer_token_env if spec.auth else None, scaler=None)

    def meta(suffix: str, role: str) -> dict[str, Any]:
        return {"name": f"{name}-{suffix}" if suffix else name, "namespace": namespace,
                "labels": {**labels, "kiln.dev/role": role}}

    env = [{"name": "KILN_BROKER_URL", "valueFrom": {"secretKeyRef": {"name": broker_secret, "key": "url"}}},
           {"name": "HOME", "value": "/tmp"},
           *({"name": k, "valueFrom": {"secretKeyRef": {"name": s3_secret, "key": k}}}
             for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")),
           *([{"name": "AWS_ENDPOINT_URL_S3", "value": store_endpoint_url}] if store_endpoint_url else []),
           *([{"name": "MLFLOW_TRACKING_URI", "value": tracking_uri}] if tracking_uri else [])]
    security = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
                "capabilities": {"drop": ["ALL"]}}
    mounts = [{"name": "config", "mountPath": CONFIG, "readOnly": True}, {"name": "tmp", "mountPath": "/tmp"}]
    volumes = [{"name": "config", "configMap": {"name": f"{name}-async"}}, {"name": "tmp", "emptyDir": {}}]

    def deployment(suffix: str, role: str, replicas: int, pod: dict[str, Any]) -> dict[str, Any]:
        selector = {"kiln.dev/endpoint": name, "kiln.dev/role": role}
        return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta(suffix, role),
                "spec": {"replicas": replicas, "selector": {"matchLabels": selector},
                         "template": {"metadata": {"labels": {**labels, **selector}}, "spec": pod}}}

    front_pod = {"automountServiceAccountToken": False, "volumes": volumes, "containers": [{
        "name": "front", "image": image, "securityContext": security, "env": env, "volumeMounts": mounts,
        "command": ["python", "-m", "kiln.serving.async_app", "--config", f"{CONFIG}/async.json",
                    "--port", str(FRONT_PORT), "--host", "0.0.0.0"],
        "ports": [{"name": "http", "containerPort": FRONT_PORT, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": "http"}, "periodSeconds": 5},
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}}]}
    worker_pod = {
        "automountServiceAccountToken": False, "terminationGracePeriodSeconds": GRACE_SECONDS,
        "volumes": [*volumes, {"name": "models", "emptyDir": {}}],
        "initContainers": [{
            "name": "fetch-model", "image": image, "securityContext": security, "env": env,
            "command": ["python", "-m", "kiln.serving.fetch_model", "--source", storage_uri, "--to", MODELS],
            "volumeMounts": [{"name": "models", "mountPath": MODELS}, {"name": "tmp", "mountPath": "/tmp"}],
            "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}}],
        "containers": [{
            "name": "worker", "image": image, "securityContext": security, "env": env,
            "command": ["python", "-m", "kiln.serving.async_worker", "--worker-config", f"{CONFIG}/worker.json",
                        "--health-port", str(HEALTH_PORT), "--host", "0.0.0.0"],
            "ports": [{"name": "health", "containerPort": HEALTH_PORT, "protocol": "TCP"}],
            "readinessProbe": {"httpGet": {"path": "/health", "port": "health"}, "periodSeconds": 5},
            "volumeMounts": [*mounts, {"name": "models", "mountPath": MODELS, "readOnly": True}],
            "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}}}]}
    return [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("async", "config"),
         "data": {"async.json": json.dumps(front.to_dict(), indent=1),
                  "worker.json": json.dumps(worker.to_dict(), indent=1)}},
        deployment("async-front", "front", 1, front_pod),
        {"apiVersion": "v1", "kind": "Service", "metadata": meta("", "front"),
         "spec": {"selector": {"kiln.dev/endpoint": name, "kiln.dev/role": "front"},
                  "ports": [{"name": "http", "port": 80, "targetPort": FRONT_PORT, "protocol": "TCP",
                             "appProtocol": "http"}]}},
        deployment("async-worker", "worker", a.workers.min, worker_pod),
        {"apiVersion": KEDA, "kind": "TriggerAuthentication", "metadata": meta("broker", "scaler"),
         "spec": {"secretTargetRef": [{"parameter": "host", "name": broker_secret, "key": "url"}]}},
        {"apiVersion": KEDA, "kind": "ScaledObject", "metadata": meta("async-worker", "scaler"),
         "spec": {"scaleTargetRef": {"name": f"{name}-async-worker"}, "pollingInterval": 5,
                  "cooldownPeriod": int(a.workers.idle_seconds), "minReplicaCount": a.workers.min,
                  "maxReplicaCount": a.workers.max,
                  "triggers": [{"type": "rabbitmq", "authenticationRef": {"name": f"{name}-broker"},
                                "metadata": {"protocol": "amqp", "queueName": queue, "mode": "QueueLength",
                                             "value": str(a.workers.backlog_per_worker)}}]}},
    ]


def keda_problems(obj: dict[str, Any]) -> list[str]:
    """What is wrong with a ScaledObject or TriggerAuthentication, by the fields KEDA documents for them."""
    spec, kind = obj.get("spec") or {}, obj.get("kind")
    if not re.match(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", str(obj.get("metadata", {}).get("name", ""))):
        return ["metadata.name: not a DNS label"]
    if kind == "TriggerAuthentication":
        refs = spec.get("secretTargetRef")
        if not isinstance(refs, list) or not refs or not all(
                isinstance(r, dict) and set(r) == {"parameter", "name", "key"} for r in refs):
            return ["spec.secretTargetRef: a list of {parameter, name, key}"]
        return []
    problems = []
    unknown = set(spec) - {"scaleTargetRef", "pollingInterval", "cooldownPeriod", "minReplicaCount",
                           "maxReplicaCount", "triggers", "advanced", "fallback", "idleReplicaCount"}
    if unknown:
        problems.append(f"spec: unknown fields {', '.join(sorted(unknown))}")
    if not isinstance(spec.get("scaleTargetRef", {}).get("name"), str):
        problems.append("spec.scaleTargetRef.name: the Deployment to scale")
    low, high = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
    if not (isinstance(low, int) and isinstance(high, int) and 0 <= low <= high):
        problems.append(f"spec.minReplicaCount {low} and maxReplicaCount {high}: whole numbers, min <= max")
    for i, t in enumerate(spec.get("triggers") or [None]):
        m = (t or {}).get("metadata") or {}
        if (t or {}).get("type") != "rabbitmq" or m.get("mode") not in ("QueueLength", "MessageRate") \
                or not m.get("queueName") or not str(m.get("value", "")).isdigit():
            problems.append(f"spec.triggers[{i}]: a rabbitmq trigger with queueName, mode and a whole-number value")
    return problems
