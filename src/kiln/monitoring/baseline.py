"""Baselines: what a model version's traffic is compared with, made from its training set and held-out rows.

A baseline holds per-feature statistics and constraints (type, missing share, range or categories,
distribution summary), a reference sample for drift, the model's quality on its held-out rows, the
post-training bias metrics by facet, and the SHAP global ranking. It lives at
WS/monitoring/baselines/NAME-vVERSION/ (baseline.json, reference.parquet) and is logged to the version's run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln import tracking
from kiln.clarify.facets import facets_service, favourable_outcomes, with_facets
from kiln.data.task import Task
from kiln.errors import InputError
from kiln.files import staged_folder
from kiln.monitoring.attribution import global_ranking
from kiln.monitoring.profile import feature_kinds, feature_statistics
from kiln.monitoring.quality import LABEL, model_quality
from kiln.progress import Progress, no_progress
from kiln.registry.versions import get_version
from kiln.training.data import load_training_set
from kiln.training.scoring import predict_with
from kiln.training.split import split
from kiln.workspace import Workspace

if TYPE_CHECKING:
    import pandas as pd

BASELINE_FILE = "baseline.json"
REFERENCE_FILE = "reference.parquet"
REFERENCE_ROWS = 5000  # Evidently picks distance measures (not p-values) above 1,000 reference rows
SHAP_ROWS = 200
THRESHOLD = 0.5  # the decision threshold Kiln models answer with


@dataclass(frozen=True)
class Baseline:
    folder: Path
    data: dict[str, Any]

    @property
    def model(self) -> str:
        model: str = self.data["model"]
        return model

    @property
    def features(self) -> dict[str, dict[str, Any]]:
        features: dict[str, dict[str, Any]] = self.data["features"]
        return features

    @property
    def task(self) -> Task:
        """The model's task (a baseline from before tasks: binary 0/1)."""
        return Task.from_dict(self.data.get("task"))

    @property
    def kinds(self) -> dict[str, str]:
        return {name: f["type"] for name, f in self.features.items()}

    def reference(self) -> "pd.DataFrame":
        import pandas as pd

        return pd.read_parquet(self.folder / REFERENCE_FILE)


@dataclass(frozen=True)
class BaselineSummary:
    """A baseline in brief: its size, the held-out quality, the facets and the top SHAP features; ``made`` now or
    kept from before."""

    model: str  # NAME/VERSION
    made: bool
    folder: Path
    rows: int  # training rows
    features: int
    model_quality: dict[str, Any]  # on the held-out rows: roc_auc, accuracy, ...
    facets: list[str]
    top_features: list[str]  # the first five of the SHAP ranking

    @classmethod
    def of(cls, baseline: Baseline, made: bool) -> BaselineSummary:
        data = baseline.data
        return cls(baseline.model, made, baseline.folder, data["rows"], len(data["features"]), data["model_quality"],
                   [g["facet"] for g in data["bias"]["facets"]],
                   [r["feature"] for r in data["attribution"]["ranking"][:5]])

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "made": self.made, "folder": str(self.folder), "rows": self.rows,
                "features": self.features, "model_quality": self.model_quality, "facets": self.facets,
                "top_features": self.top_features}


def baseline_folder(ws: Workspace, name: str, version: str) -> Path:
    return ws.folder("monitoring") / "baselines" / f"{name}-v{version}"


def load_baseline(ws: Workspace, name: str, version: str) -> Baseline | None:
    folder = baseline_folder(ws, name, version)
    path = folder / BASELINE_FILE
    if not path.is_file():
        return None
    try:
        return Baseline(folder, json.loads(path.read_text()))
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not a valid baseline ({exc})",
                         hint=f"make it again: kiln monitor baseline {name}/{version} --rebaseline") from None


def create_baseline(ws: Workspace, model_ref: str, rebaseline: bool = False,
                    progress: Progress = no_progress) -> tuple[Baseline, bool]:
    """The version's baseline, made now unless it exists (``rebaseline`` makes it again); (baseline, made)."""

    info = get_version(ws, model_ref)
    existing = load_baseline(ws, info.name, info.version)
    if existing is not None and not rebaseline:
        return existing, False
    training_set = info.tags.get("kiln.training_set")
    if not training_set or not Path(training_set).exists():
        raise InputError(f"{info.name} version {info.version}: its training set "
                         f"{training_set or '(no kiln.training_set tag)'} is not there to baseline from")
    folder = baseline_folder(ws, info.name, info.version)
    with staged_folder(folder, overwrite=True) as stage:
        data = _measure(ws, info, Path(training_set), stage, progress)
        (stage / BASELINE_FILE).write_text(json.dumps(data, indent=2, default=str) + "\n")
    if info.run_id:
        c = tracking.client(ws)
        c.log_artifacts(info.run_id, str(folder), "monitoring/baseline")
        c.set_model_version_tag(info.name, info.version, "kiln.monitor_baseline", str(folder))
    return Baseline(folder, data), True


def summarize_baseline(ws: Workspace, model_ref: str, rebaseline: bool = False,
                       progress: Progress = no_progress) -> BaselineSummary:
    """`create_baseline`, in brief."""
    return BaselineSummary.of(*create_baseline(ws, model_ref, rebaseline, progress))


def _measure(ws: Workspace, info: Any, training_set: Path, out: Path, progress: Progress) -> dict[str, Any]:
    data = load_training_set(training_set)
    model_uri = f"models:/{info.name}/{info.version}"
    progress(f"profiling {len(data.frame)} rows of {training_set.name}")
    kinds = feature_kinds(data.frame, data.features)
    sample = data.frame.sample(n=min(REFERENCE_ROWS, len(data.frame)), random_state=0)
    sample[data.features].reset_index(drop=True).to_parquet(out / REFERENCE_FILE, index=False)
    holdout = split(data, int(info.tags.get("kiln.seed", "7"))).test.reset_index(drop=True)
    progress(f"scoring {len(holdout)} held-out rows")
    scored = predict_with(model_uri, holdout)
    return {
        "model": f"{info.name}/{info.version}",
        "model_uri": model_uri,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "training_set": str(training_set),
        "label": data.label,
        "task": data.task.to_dict(),
        "key": data.key,
        "rows": len(data.frame),
        "reference_rows": len(sample),
        "features": feature_statistics(data.frame, kinds),
        "model_quality": _quality(data.task, holdout[data.label], scored),
        "bias": _bias(ws, data, holdout, scored["prediction"].to_numpy(), progress),
        "attribution": _attribution(model_uri, holdout[data.features], progress),
    }


def _quality(task: Task, labels: "pd.Series", scored: "pd.DataFrame") -> dict[str, Any]:
    labelled = scored.reset_index(drop=True).assign(**{LABEL: labels.to_numpy()})
    return {"rows": len(labels), "threshold": THRESHOLD, **model_quality(task, labelled, THRESHOLD)[0]}


def _bias(ws: Workspace, data: Any, holdout: "pd.DataFrame", predicted: Any, progress: Progress) -> dict[str, Any]:
    from kiln.clarify.bias import bias_by_facet
    progress("post-training bias by facet on the held-out rows")
    try:
        _, protected = facets_service(ws, data)
        frame = favourable_outcomes(data.task, with_facets(ws, data, holdout), data.label, predicted)
    except InputError as exc:
        return {"protected": [], "facets": [], "note": str(exc)}
    return {"protected": protected,
            "facets": bias_by_facet(frame, data.label, protected, ws.settings.monitoring.min_facet_rows)}


def _attribution(model_uri: str, features: "pd.DataFrame", progress: Progress) -> dict[str, Any]:
    rows = features.sample(n=min(SHAP_ROWS, len(features)), random_state=0).reset_index(drop=True)
    progress(f"SHAP global ranking on {len(rows)} held-out rows")
    return global_ranking(model_uri, rows)
