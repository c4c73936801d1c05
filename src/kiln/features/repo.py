"""The workspace's Feast feature repo: feature_store.yaml from settings, one definitions file per dataset."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.data.dataset import Dataset, open_dataset
from kiln.errors import EnvironmentProblem, InputError
from kiln.features.definitions import FeaturePlan, definitions_file, plan_for, render
from kiln.features.query_engine import use_offline_store
from kiln.files import write_json_atomic, write_text_atomic
from kiln.settings import Settings
from kiln.workspace import Workspace

if TYPE_CHECKING:
    from feast import FeatureStore

REPO_DIR = "repo"
PLANS_FILE = "kiln_datasets.json"  # which dataset each definitions file came from
APPLIED_FILE = ".kiln_applied"  # fingerprint of the repo as last applied


@dataclass(frozen=True)
class AppliedRepo:
    """What `feast apply` registered from the repo: names by kind of object, and the names it deleted."""

    repo: Path
    objects: dict[str, list[str]]  # entities, feature_views, on_demand_feature_views, feature_services, deleted

    def to_dict(self) -> dict[str, object]:
        return {"repo": str(self.repo), **self.objects}


def repo_path(ws: Workspace) -> Path:
    return ws.root / "features" / REPO_DIR


def feature_store_yaml(settings: Settings) -> str:
    """feature_store.yaml for the settings' stores, commented the way Feast's template is."""
    fs = settings.features
    online = fs.online_store
    registry = fs.registry
    if online.type == "sqlite":
        online_block = f"online_store:\n    type: sqlite\n    path: {online.path}\n"
    else:
        online_block = f"online_store:\n    type: redis\n    connection_string: \"{online.connection_string}\"\n"
    if registry.type == "file":
        registry_block = f"registry: {registry.path}\n"
    else:
        registry_block = (f"registry:\n    registry_type: sql\n    path: {registry.path}\n"
                          "    cache_ttl_seconds: 60\n    sqlalchemy_config_kwargs:\n        pool_pre_ping: true\n")
    return (
        "# Written by Kiln from the workspace's kiln.yaml (profile: " + settings.profile + "); change the\n"
        "# stores there, then run `kiln features apply` to write this file again.\n"
        f"project: {fs.project}\n"
        "# The registry holds the feature definitions: a file locally, a SQL database (PostgreSQL) on a cluster.\n"
        + registry_block +
        "# The provider specifies default offline / online stores; Kiln runs everything through `local`.\n"
        "provider: local\n"
        "# The online store keeps the newest value of every feature for millisecond reads:\n"
        "# SQLite on one machine, Redis on a cluster.\n"
        + online_block +
        "# The offline store keeps the history (parquet files partitioned by date) for training sets;\n"
        "# DuckDB runs the point-in-time joins over those files.\n"
        "offline_store:\n    type: duckdb\n"
        "entity_key_serialization_version: 3\n"
        "# No authentication inside the workspace; on a cluster the chart's NetworkPolicies guard the stores.\n"
        "auth:\n    type: no_auth\n"
    )


def write_repo_config(ws: Workspace) -> Path:
    """Write (or refresh) the repo's feature_store.yaml; returns the repo folder."""
    repo = repo_path(ws)
    repo.mkdir(parents=True, exist_ok=True)
    write_text_atomic(repo / "feature_store.yaml", feature_store_yaml(ws.settings))
    if ws.settings.features.online_store.type == "sqlite":
        Path(ws.settings.features.online_store.path).parent.mkdir(parents=True, exist_ok=True)
    if ws.settings.features.registry.type == "file":
        Path(ws.settings.features.registry.path).parent.mkdir(parents=True, exist_ok=True)
    return repo


def plan_dataset(ws: Workspace, dataset: Dataset) -> FeaturePlan:
    return plan_for(dataset.schema, dataset.kind, ws.settings.features.offline_store.path)


def add_dataset(ws: Workspace, dataset: Dataset) -> tuple[FeaturePlan, bool]:
    """Write the dataset's definitions file unless it exists (a user may have edited it)."""
    plan = plan_dataset(ws, dataset)
    repo = write_repo_config(ws)
    target = definitions_file(repo, plan.dataset)
    datasets = registered_datasets(ws)
    created = not target.exists()
    if created:
        write_text_atomic(target, render(plan))
    datasets[plan.dataset] = {"path": str(dataset.path.resolve()), "kind": dataset.kind}
    write_json_atomic(repo / PLANS_FILE, datasets)
    return plan, created


def registered_datasets(ws: Workspace) -> dict[str, dict[str, Any]]:
    path = repo_path(ws) / PLANS_FILE
    if not path.exists():
        return {}
    datasets: dict[str, dict[str, Any]] = json.loads(path.read_text())
    return datasets


def plan_by_service(ws: Workspace, service: str) -> tuple[FeaturePlan, Dataset]:
    """The dataset plan a feature service reads from; an InputError listing the known services otherwise."""

    plans = []
    for entry in registered_datasets(ws).values():
        dataset = open_dataset(Path(entry["path"]))
        plan = plan_dataset(ws, dataset)
        if service in (plan.service, plan.facets_service):
            return plan, dataset
        plans.append((plan, dataset))
    if plans:
        # A service the user defined in the repo (e.g. churn_v2): its dataset is the one whose views it reads.
        store = open_store(ws)
        known = sorted(s.name for s in store.list_feature_services())
        if service in known:
            views = {p.name for p in store.get_feature_service(service).feature_view_projections}
            for plan, dataset in plans:
                if views & {*plan.views, plan.derived_view}:
                    return plan, dataset
    else:
        known = []
    raise InputError(f"unknown feature service '{service}'",
                     hint=f"known services: {', '.join(known) or 'none yet (run `kiln features ingest DATASET`)'}")


def default_service(ws: Workspace) -> str:
    """The feature service of the only dataset in the repo; an InputError naming the choices when there are more."""

    services = sorted(plan_dataset(ws, open_dataset(Path(entry["path"]))).service
                      for entry in registered_datasets(ws).values())
    if len(services) == 1:
        return services[0]
    if not services:
        raise InputError("the feature repo has no feature service yet",
                         hint="ingest a dataset first (`kiln features ingest DATASET`)")
    raise InputError(f"{len(services)} datasets are in the feature repo, each with its feature service: "
                     f"{', '.join(services)}", hint="choose one with --service NAME")


def open_store(ws: Workspace) -> "FeatureStore":
    from feast import FeatureStore

    warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"feast(\.|$)")  # "experimental" notices
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"(ibis|feast)(\.|$)")

    repo = write_repo_config(ws)
    use_offline_store(ws.settings.features.offline_store)
    try:
        return FeatureStore(repo_path=str(repo))
    except Exception as exc:  # Feast raises many types for a bad config or unreachable store
        raise EnvironmentProblem(f"cannot open the Feast feature store at {repo}: {exc}") from exc


def apply_repo(ws: Workspace) -> AppliedRepo:
    """`feast apply` in process: register every object of the repo, delete ones no longer defined."""
    return AppliedRepo(repo=repo_path(ws), objects=_apply(ws))


def _apply(ws: Workspace) -> dict[str, list[str]]:
    """The names applied, by kind of object, and the names deleted."""

    from feast.repo_operations import extract_objects_for_apply_delete, parse_repo

    repo = write_repo_config(ws)
    store = open_store(ws)
    cwd = os.getcwd()
    for module in [f.stem for f in repo.glob("*.py")]:
        sys.modules.pop(module, None)  # imported earlier from another repo, or before an edit
    sys.path.insert(0, str(repo))
    try:
        os.chdir(repo)  # Feast names the definition modules relative to the working folder
        contents = parse_repo(repo)
    except Exception as exc:  # a user-edited definitions file can fail in any way
        raise InputError(f"the feature repo {repo} does not load: {type(exc).__name__}: {exc}",
                         hint="fix the definitions file named above, then run `kiln features apply` again") from exc
    finally:
        os.chdir(cwd)
        sys.path.remove(str(repo))
    registry = store.registry
    to_apply, to_delete, _, _ = extract_objects_for_apply_delete(  # type: ignore[no-untyped-call]  # Feast leaves it unannotated
        store.project, registry, contents)
    try:
        store.apply(to_apply, objects_to_delete=to_delete, partial=False)
    except Exception as exc:  # Feast's validation errors have no common base class
        if _is_unavailable(exc):
            raise EnvironmentProblem(f"the feature store is unavailable: {type(exc).__name__}: {exc}",
                                     hint="check that no other process holds it and that its services run") from exc
        raise InputError(f"Feast rejected the definitions in {repo}: {type(exc).__name__}: {exc}",
                         hint="fix the definitions file, then run `kiln features apply` again") from exc
    write_text_atomic(repo / APPLIED_FILE, repo_fingerprint(repo))
    return {
        "entities": sorted(e.name for e in contents.entities),
        "feature_views": sorted(v.name for v in contents.feature_views),
        "on_demand_feature_views": sorted(v.name for v in contents.on_demand_feature_views),
        "feature_services": sorted(s.name for s in contents.feature_services),
        "deleted": sorted(getattr(o, "name", str(o)) for o in to_delete),
    }


def repo_fingerprint(repo: Path) -> str:
    """sha256 over the repo's definitions and config, to tell whether it changed since the last apply."""

    digest = hashlib.sha256()
    for path in sorted([*repo.glob("*.py"), repo / "feature_store.yaml"]):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def apply_if_changed(ws: Workspace) -> bool:
    """Apply the repo unless it is exactly as last applied; returns whether it applied."""
    repo = write_repo_config(ws)
    marker = repo / APPLIED_FILE
    if marker.exists() and marker.read_text() == repo_fingerprint(repo):
        return False
    apply_repo(ws)
    return True


def _is_unavailable(exc: BaseException) -> bool:
    """A store that is locked, down or unreachable, as opposed to definitions Feast rejects."""

    names = {type(e).__name__ for e in (exc, exc.__cause__, exc.__context__) if e is not None}
    return isinstance(exc, (sqlite3.OperationalError, ConnectionError, OSError)) or bool(
        names & {"OperationalError", "ConnectionError", "TimeoutError", "InterfaceError"})
