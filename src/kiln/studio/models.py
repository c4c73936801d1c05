"""The Models page: every registered model and version, with its gate, approval, lineage, and where it serves."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kiln.errors import InputError, KilnError
from kiln.registry.versions import VersionInfo, gate_reasons, list_versions
from kiln.serving.endpoints import names, read_spec
from kiln.workspace import Workspace

METRIC_PREFIX, COMPILED_PREFIX = "kiln.test_", "kiln.compiled."
# Lineage tags, in the order a person reads a version's history back to its rows.
LINEAGE = (("dataset", "kiln.dataset"), ("dataset hash", "kiln.dataset_content_hash"),
           ("feature service", "kiln.feature_service"), ("feature views", "kiln.feature_views"),
           ("training set", "kiln.training_set"), ("pipeline run", "kiln.pipeline_run"),
           ("tuning job", "kiln.tuning_job"), ("parent version", "kiln.parent_version"),
           ("code version", "kiln.code_version"), ("entry point", "kiln.entry_point"))


@dataclass(frozen=True)
class Serving:
    """A variant serving the version: endpoint, variant, role (production or shadow)."""

    endpoint: str
    variant: str
    role: str


@dataclass(frozen=True)
class Compiled:
    """The version's latest compiled bundle for a target, and whether it is the one published to devices."""

    id: str
    target: str
    published: bool


@dataclass(frozen=True)
class VersionRow:
    name: str
    version: str
    task: str
    family: str
    metrics: dict[str, float]
    gate: str
    gate_reasons: list[str]
    approval: str
    aliases: list[str]
    created: str
    lineage: list[tuple[str, str]]
    history: list[dict[str, Any]]
    serving: list[Serving] = field(default_factory=list)
    compiled: list[Compiled] = field(default_factory=list)
    card: str | None = None  # the model card's HTML file, when one was written
    run_id: str | None = None  # the MLflow run that trained it
    tuning_curve: str | None = None  # the tuning job's objective plot (PNG), when it was tuned

    @property
    def ref(self) -> str:
        return f"{self.name}/{self.version}"


@dataclass(frozen=True)
class ModelGroup:
    name: str
    versions: list[VersionRow]

    @property
    def champion(self) -> VersionRow | None:
        return next((v for v in self.versions if "champion" in v.aliases), None)


@dataclass(frozen=True)
class ModelsPage:
    models: list[ModelGroup]

    @property
    def versions(self) -> int:
        return sum(len(m.versions) for m in self.models)


def models_page(ws: Workspace) -> ModelsPage:
    """Every model, its versions newest first (read straight from the registry's tables when it is SQLite)."""
    serving, published = _serving(ws), _published(ws)
    groups: dict[str, list[VersionRow]] = defaultdict(list)
    for info in list_versions(ws):
        groups[info.name].append(_row(ws, info, serving, published))
    return ModelsPage([ModelGroup(name, rows) for name, rows in groups.items()])


def version_row(ws: Workspace, name: str, version: str) -> VersionRow | None:
    """One version with all it is shown with, or None when there is no such version."""
    try:
        found = next((v for v in list_versions(ws, name) if v.version == version), None)
    except InputError:  # no registered model of that name
        return None
    return _row(ws, found, _serving(ws), _published(ws)) if found else None


def _row(ws: Workspace, info: VersionInfo, serving: dict[str, list[Serving]], published: set[str]) -> VersionRow:
    tags, ref = info.tags, f"{info.name}/{info.version}"
    metrics = {}
    for key, value in tags.items():
        if key.startswith(METRIC_PREFIX):
            try:
                metrics[key[len(METRIC_PREFIX):]] = float(value)
            except ValueError:
                continue  # a tag that is not a number is not a metric
    card = ws.root / "reports" / "cards" / f"{info.name}-v{info.version}.html"
    # kiln compile tags the version with kiln.compiled.TARGET = "ID (run RUN)", its latest bundle for the target
    compiled = [Compiled(value.split(" ")[0], key.removeprefix(COMPILED_PREFIX), value.split(" ")[0] in published)
                for key, value in sorted(tags.items()) if key.startswith(COMPILED_PREFIX)]
    return VersionRow(name=info.name, version=info.version, task=tags.get("kiln.task", "-"),
                      family=tags.get("kiln.family", "-"), metrics=metrics, gate=info.gate,
                      gate_reasons=gate_reasons(info), approval=info.approval, aliases=info.aliases,
                      created=info.created, lineage=[(label, tags[key]) for label, key in LINEAGE if tags.get(key)],
                      history=info.history, serving=serving.get(ref, []), compiled=compiled,
                      card=str(card) if card.is_file() else None, run_id=info.run_id,
                      tuning_curve=_tuning_curve(ws, tags.get("kiln.tuning_job")))


def _serving(ws: Workspace) -> dict[str, list[Serving]]:
    """Which local endpoint variants serve each version (models:/NAME/VERSION pinned at deploy)."""
    out: dict[str, list[Serving]] = defaultdict(list)
    try:
        endpoints = names(ws)
    except KilnError:  # a cluster's API that does not answer: the Endpoints page shows why
        return out
    for name in endpoints:
        try:
            spec = read_spec(ws, name)
        except Exception:  # noqa: BLE001 - an endpoint whose state cannot be read is shown on its own page
            continue
        for v in spec.variants:
            out[v.model.removeprefix("models:/")].append(Serving(name, v.name, "production"))
        if spec.shadow:
            out[spec.shadow.model.removeprefix("models:/")].append(Serving(name, spec.shadow.name, "shadow"))
    return out


def _tuning_curve(ws: Workspace, job: str | None) -> str | None:
    """The objective plot `kiln tune` draws in its job's folder (kiln.tuning.job: models/tuning/JOB/objective.png);
    the path is built here, not by importing the tuning package, which loads Ray's machinery."""
    if not job or "/" in job or job.startswith("."):
        return None
    plot = ws.root / "models" / "tuning" / job / "objective.png"
    return str(plot) if plot.is_file() else None


def _published(ws: Workspace) -> set[str]:
    """The ids of the bundles published for devices (one per target), from the local artifact store."""
    if ws.settings.artifacts.type != "local":
        return set()
    targets = Path(ws.settings.artifacts.path) / "published" / "targets"
    return {i for i in (_json_id(p) for p in targets.glob("*/latest.json")) if i}


def _json_id(path: Path) -> str | None:


    try:
        return str(json.loads(path.read_text())["id"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
