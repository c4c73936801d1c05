"""An endpoint's verbs wherever it serves, chosen by `serving.type`: `local` (model servers as processes on this
machine, kiln.serving.local) or `kserve` (objects on a cluster through the Kubernetes API, kiln.serving.cluster).

The CLI and the pipeline's deploy step call these, so both act on the same endpoints the same way.
"""

from __future__ import annotations

from datetime import datetime

from kiln.progress import Progress, no_progress
from kiln.serving import cluster, local
from kiln.serving.approval import Override
from kiln.serving.compare import ShadowComparison
from kiln.serving.rollout import RolloutReport
from kiln.serving.spec import EndpointSpec
from kiln.workspace import Workspace, require_local


def on_cluster(ws: Workspace) -> bool:
    """Whether the workspace's endpoints live on a cluster."""
    return ws.settings.serving.type == "kserve"


def deploy(ws: Workspace, spec: EndpointSpec, progress: Progress = no_progress,
           override: Override | None = None) -> local.Deployment | cluster.ClusterDeployment:
    """Deploy ``spec``; its production variants serve only versions cleared for production (kiln.serving.approval)
    unless ``override`` lets them in."""
    if on_cluster(ws):
        return cluster.deploy(ws, spec, progress, override)
    return local.deploy(require_local(ws), spec, progress, override)


def update(ws: Workspace, name: str, model: str, variant: str | None = None, wait: bool = True,
           progress: Progress = no_progress, override: Override | None = None) -> RolloutReport | None:
    """Roll ``model`` out on a production variant; it must be cleared for production unless ``override`` lets it
    in."""
    if on_cluster(ws):
        return cluster.update(ws, name, model, variant, wait, progress, override=override)
    return local.update(require_local(ws), name, model, variant, wait, progress, override=override)


def decide(ws: Workspace, name: str, action: str, reason: str, by: str = "") -> RolloutReport:
    """Promote, roll back, pause or resume (``action``) the rollout under way; the endpoint's history names ``by``."""
    if on_cluster(ws):
        return cluster.decide(ws, name, action, reason, by)
    return local.decide(require_local(ws), name, action, reason, by)


def delete(ws: Workspace, name: str) -> local.Deleted | cluster.ClusterDeleted:
    if on_cluster(ws):
        return cluster.delete(ws, name)
    return local.delete(require_local(ws), name)


def status(ws: Workspace, name: str) -> local.EndpointStatus | cluster.ClusterStatus:
    if on_cluster(ws):
        return cluster.endpoint_status(ws, name)
    return local.endpoint_status(require_local(ws), name)


def names(ws: Workspace) -> list[str]:
    """The endpoints deployed (locally, or in the cluster's serving namespace)."""
    if on_cluster(ws):
        return cluster.list_endpoints(ws)
    return local.list_endpoints(require_local(ws))


def read_spec(ws: Workspace, name: str) -> EndpointSpec:
    """The deployed endpoint's spec (model aliases pinned to versions)."""
    if on_cluster(ws):
        return cluster.read_endpoint(ws, name)[2]
    return local.read_state(require_local(ws), name).spec


def url(ws: Workspace, name: str) -> str:
    """Where the endpoint takes V1 predictions: its front on loopback, or its host in the cluster's mesh."""
    if on_cluster(ws):
        return cluster.url_of(name, cluster.namespace(ws))
    return local.predict_url(require_local(ws), name)


def compare_shadow(ws: Workspace, name: str, since: datetime | None = None) -> ShadowComparison:
    """The endpoint's captured production and shadow answers side by side (since ``since``, else all of them)."""
    if on_cluster(ws):
        return local.compare_shadow(ws, name, since, read_spec(ws, name))
    return local.compare_shadow(require_local(ws), name, since)
