"""The Kubernetes API as an endpoint's objects need it: connect, apply (server-side), read, list, patch, delete.

One thin client over the official `kubernetes` package's ApiClient. Objects are applied with server-side apply under
the field manager `kiln`: applying the same objects twice changes nothing, and the API server merges Kiln's fields
with those other managers own (the rollout controller's annotation). Every refusal of the API server is raised as a
KilnError naming the object and, where the server says it, the field.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from urllib3.exceptions import HTTPError

from kiln.errors import InputError, ServiceError

FIELD_MANAGER = "kiln"


class Conflict(InputError):
    """The object changed since it was read (a patch carrying an older resourceVersion)."""


@dataclass(frozen=True)
class Kind:
    """Where the API serves one kind of object."""

    kind: str
    group: str  # "" for the core group
    version: str
    plural: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None, name: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        where = f"/namespaces/{namespace}" if self.namespaced else ""
        return f"{base}{where}/{self.plural}" + (f"/{name}" if name else "")


KINDS: dict[str, Kind] = {k.kind: k for k in (
    Kind("InferenceService", "serving.kserve.io", "v1beta1", "inferenceservices"),
    Kind("TrainedModel", "serving.kserve.io", "v1alpha1", "trainedmodels"),
    Kind("VirtualService", "networking.istio.io", "v1beta1", "virtualservices"),
    Kind("Service", "", "v1", "services"),
    Kind("ConfigMap", "", "v1", "configmaps"),
    Kind("ServiceAccount", "", "v1", "serviceaccounts"),
    Kind("Role", "rbac.authorization.k8s.io", "v1", "roles"),
    Kind("RoleBinding", "rbac.authorization.k8s.io", "v1", "rolebindings"),
    Kind("Deployment", "apps", "v1", "deployments"),
    Kind("CustomResourceDefinition", "apiextensions.k8s.io", "v1", "customresourcedefinitions", namespaced=False),
)}
# Who provides a kind the API server may not know: said when it answers that it has no such resource.
PROVIDERS = {"InferenceService": "KServe", "TrainedModel": "KServe", "VirtualService": "Istio"}


def applied_by_kiln(obj: Mapping[str, Any]) -> bool:
    """Whether Kiln applied ``obj`` (server-side apply under its field manager), as opposed to an object that only
    carries its labels (KServe copies an InferenceService's labels onto the Deployments it makes)."""
    return any(m.get("manager") == FIELD_MANAGER and m.get("operation") == "Apply"
               for m in obj.get("metadata", {}).get("managedFields") or [])


def kind_of(obj: Mapping[str, Any]) -> Kind:
    kind = KINDS.get(str(obj.get("kind")))
    if kind is None or obj.get("apiVersion") != kind.api_version:
        raise InputError(f"{obj.get('kind')} {obj.get('apiVersion')}: not a kind Kiln applies "
                         f"({', '.join(KINDS)})")
    return kind


def connect(kubeconfig: str | None = None, context: str | None = None) -> Kube:
    """The API of the pod's own cluster (in-cluster credentials) when run in a pod and no kubeconfig is named, else
    the kubeconfig's (``kubeconfig``, else $KUBECONFIG or ~/.kube/config) current or named ``context``."""
    from kubernetes import client, config

    configuration = client.Configuration()
    in_cluster = kubeconfig is None and context is None and bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    path = kubeconfig or os.environ.get("KUBECONFIG")  # read now: the client reads $KUBECONFIG once, on import
    where = "in-cluster credentials" if in_cluster else f"kubeconfig {path or '~/.kube/config'}"
    try:
        if in_cluster:
            config.load_incluster_config(client_configuration=configuration)
        else:
            config.load_kube_config(config_file=path, context=context, client_configuration=configuration)
    except (config.ConfigException, OSError, TypeError) as exc:
        raise ServiceError(f"no Kubernetes API to talk to ({where}): {exc}",
                           hint="set serving.kubeconfig in kiln.yaml (or KUBECONFIG) to the cluster's kubeconfig, "
                                "or run in a pod of the cluster") from None
    return Kube(client.ApiClient(configuration), f"{configuration.host} ({where})")


class Kube:
    """One API server: objects by kind, namespace and name."""

    def __init__(self, api: Any, where: str) -> None:
        self.api, self.where = api, where  # api: a kubernetes.client.ApiClient

    def _call(self, method: str, path: str, what: str, *, body: Any = None, query: list[tuple[str, str]] | None = None,
              content_type: str | None = None) -> dict[str, Any] | None:
        """The answer's JSON; None for 404 on a GET or DELETE of one object (no such object)."""
        from kubernetes.client.exceptions import ApiException

        headers = {"Accept": "application/json", **({"Content-Type": content_type} if content_type else {})}
        try:
            found = self.api.call_api(path, method, query_params=query or [], header_params=headers, body=body,
                                      response_type="object", auth_settings=["BearerToken"],
                                      _return_http_data_only=True, _request_timeout=30)
        except ApiException as exc:
            if exc.status == 404 and method in ("GET", "DELETE") and (_status(exc).get("details") or {}).get("name"):
                return None
            raise refusal(what, exc) from None
        except HTTPError as exc:
            raise ServiceError(f"{what}: the Kubernetes API at {self.where} does not answer: {exc}") from None
        return found if isinstance(found, dict) else None

    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The object, or None when there is none of that name."""
        return self._call("GET", KINDS[kind].path(namespace, name), f"{kind} {namespace}/{name}")

    def list(self, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        """The objects of ``kind`` whose labels match ``selector`` (`key=value,...`)."""
        found = self._call("GET", KINDS[kind].path(namespace), f"{kind}s in {namespace}",
                           query=[("labelSelector", selector)])
        return list((found or {}).get("items") or [])

    def apply(self, obj: Mapping[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
        """Server-side apply of ``obj`` as field manager `kiln`, taking over fields others set (``force``)."""
        kind, meta = kind_of(obj), obj["metadata"]
        query = [("fieldManager", FIELD_MANAGER), ("force", "true"), *([("dryRun", "All")] if dry_run else [])]
        where = f"{meta['namespace']}/{meta['name']}" if kind.namespaced else meta["name"]
        applied = self._call("PATCH", kind.path(meta.get("namespace"), meta["name"]), f"{obj['kind']} {where}",
                             body=dict(obj), query=query, content_type="application/apply-patch+yaml")
        assert applied is not None  # an apply answers with the object
        return applied

    def patch(self, kind: str, namespace: str, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """A JSON merge patch; a resourceVersion in ``body`` makes the server refuse it if the object changed."""
        patched = self._call("PATCH", KINDS[kind].path(namespace, name), f"{kind} {namespace}/{name}",
                             body=dict(body), content_type="application/merge-patch+json")
        assert patched is not None
        return patched

    def delete(self, kind: str, namespace: str, name: str) -> bool:
        """Delete the object (its dependents in the background); False when it was not there."""
        found = self._call("DELETE", KINDS[kind].path(namespace, name), f"{kind} {namespace}/{name}",
                           body={"propagationPolicy": "Background"})
        return found is not None


def _status(exc: Any) -> dict[str, Any]:
    try:
        body = json.loads(exc.body or "{}")
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def refusal(what: str, exc: Any) -> InputError | ServiceError:
    """What the API server refused and why, by field when it says one (an ApiException as a KilnError)."""
    status = _status(exc)
    details = status.get("details") or {}
    causes = [f"{c['field']}: {c.get('message', c.get('reason', ''))}" if c.get("field") else c.get("message", "")
              for c in details.get("causes") or []]
    message = status.get("message") or exc.reason
    head = f"{what}: the Kubernetes API refused it ({exc.status} {status.get('reason') or exc.reason})"
    if exc.status == 409:
        return Conflict(f"{head}: {message}")
    if exc.status in (400, 422):
        return InputError(f"{head}: " + ("; ".join(c for c in causes if c) or message))
    if exc.status == 403:
        return ServiceError(f"{head}: {message}",
                            hint="the account Kiln runs as needs these rights in the endpoints' namespace "
                                 "(the chart's endpointDeployers values bind them)")
    if exc.status == 404:
        provider = next((p for k, p in PROVIDERS.items() if what.startswith(k)), None)
        if provider and not details.get("name"):
            return ServiceError(f"{head}: the API server has no {what.split()[0]} resource",
                                hint=f"install {provider} on the cluster (its CRDs), or for a cluster without it "
                                     f"`python -m kiln.serving.crds | kubectl apply --server-side -f -`")
        return ServiceError(f"{head}: {message}")
    return ServiceError(f"{head}: {message}")
