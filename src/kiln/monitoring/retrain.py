"""The retraining a violation starts: a fresh training set, the served model's family and parameters trained on
it, and the result registered as challenger behind the gate. This is the command sequence
`kiln features training-set` -> `kiln train` -> `kiln models register` (the monitor_retrain pipeline runs the
same steps as pipeline components).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kiln import tracking
from kiln.errors import InputError
from kiln.evaluation.candidate import register_run_model
from kiln.features.training import build_training_set
from kiln.progress import Progress, no_progress
from kiln.registry.versions import get_version
from kiln.training.data import load_training_set
from kiln.training.entry import ENTRY_FAMILY, load_entry_point
from kiln.training.families import get_family
from kiln.training.run import train, train_entry_point
from kiln.workspace import Workspace

ACTIONS = ("retrain",)


@dataclass(frozen=True)
class Retraining:
    """A retrained version: where it came from, what it trained on, and how it was registered."""

    source: str  # the retrained version, NAME/VERSION
    training_set: str
    rows: int
    run_id: str
    version: str  # the new version, NAME/VERSION
    aliases: list[str]
    gate: str
    test_auc: float | None  # binary models; the task's metrics are in the run's test_* metrics
    summary: str

    def to_dict(self) -> dict[str, Any]:
        return {"from": self.source, "training_set": self.training_set, "rows": self.rows, "run_id": self.run_id,
                "version": self.version, "aliases": self.aliases, "gate": self.gate, "test_auc": self.test_auc,
                "summary": self.summary}


@dataclass(frozen=True)
class RetrainFailure:
    """A retraining that failed: the run's findings stand, and this is one of them."""

    error: str

    @property
    def summary(self) -> str:
        return f"FAILED: {self.error}"

    def to_dict(self) -> dict[str, Any]:
        return {"error": self.error, "summary": self.summary}


def check_action(action: str | None) -> None:
    if action is not None and action not in ACTIONS:
        raise InputError(f"--on-violation '{action}': the only action is 'retrain'")


def retrain(ws: Workspace, model: str, progress: Progress = no_progress) -> Retraining:
    """Retrain ``model`` (NAME/VERSION) on a training set rebuilt from its labels and today's feature store."""

    info = get_version(ws, model)
    old = load_training_set(Path(info.tags["kiln.training_set"]))
    labels, service = old.lineage.get("labels"), old.lineage.get("feature_service")
    if not labels or not service:
        raise InputError(f"{model}: its training set names no labels or feature service to rebuild it from")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    out = ws.folder("data") / f"retrain-{info.name}-{stamp}.parquet"
    progress(f"retraining {model}: a fresh training set from {service}")
    built = build_training_set(ws, Path(labels), service, out)
    family_name = info.tags.get("kiln.family", "lgbm")
    run = tracking.client(ws).get_run(info.run_id) if info.run_id else None
    run_params = run.data.params if run else {}
    seed = int(info.tags.get("kiln.seed", "7"))
    progress(f"training {family_name} on {built.rows} rows with the served version's parameters")
    if family_name == ENTRY_FAMILY:  # the user's own code, from the file the version was trained with
        entry_point = Path((run.data.tags if run else {}).get("kiln.entry_point", ""))
        if not entry_point.is_file():
            raise InputError(f"{model} was trained by your own code, whose file {entry_point} is not there to "
                             "retrain with")
        known = load_entry_point(entry_point).config()
        trained = train_entry_point(ws, Path(built.path), entry_point, {k: _number(v) for k, v in run_params.items()
                                                                        if k in known}, seed=seed, progress=progress)
    else:
        family = get_family(family_name)
        params = {k: v for k, v in run_params.items() if k in family.params}
        trained = train(ws, Path(built.path), family_name, params=params, seed=seed, progress=progress)
    version = register_run_model(ws, info.name, trained.run_id, progress, model_uri=trained.model_uri).version
    ref = f"{version.name}/{version.version}"
    return Retraining(model, built.path, built.rows, trained.run_id, ref, version.aliases, version.gate,
                      trained.metrics["test"].get("auc"),
                      f"{ref} registered ({', '.join(version.aliases) or 'no alias'}; gate {version.gate}) "
                      f"from {built.rows} rows")


def _number(text: str) -> Any:
    """A logged parameter (MLflow keeps text) as the number it was, where it was one."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text
