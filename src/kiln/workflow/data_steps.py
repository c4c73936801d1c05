"""Data steps of a pipeline: validate a dataset, ingest it into the feature store, build a training set."""

from __future__ import annotations

import shutil
from pathlib import Path

from kiln.data.validate import validate_dataset
from kiln.errors import InputError
from kiln.features.ingest import ingest
from kiln.features.training import build_training_set
from kiln.workflow.result import StepResult, say, step
from kiln.workspace import open_workspace

TRAINING_SET_FILE = "training_set.parquet"


@step
def validate_step(workspace: str, data: str, out: str) -> StepResult:
    """Validate the dataset folder ``data`` and hand a copy on as the pipeline's dataset artifact."""

    source = Path(data).expanduser()
    if "://" in data:
        raise InputError(f"data '{data}': the pipelines read a dataset folder on the workspace's volume, not a URI",
                         hint="copy the dataset into the workspace (kiln data import) and give its path")
    if not source.is_dir():
        raise InputError(f"data '{data}': give a dataset folder (made by `kiln data generate` or `kiln data import`)")
    open_workspace(Path(workspace))  # a wrong workspace fails here, before anything is copied
    say(f"validating {source}")
    report = validate_dataset(source)
    shutil.copytree(source, out, dirs_exist_ok=True)
    say(f"valid: {', '.join(f'{t} {n} rows' for t, n in report.tables.items())}")
    return StepResult(metrics={f"{table}_rows": rows for table, rows in report.tables.items()},
                      metadata={"source": str(source.resolve()), "kind": report.kind,
                                "content_hash": report.content_hash})


@step
def ingest_step(workspace: str, dataset: str) -> StepResult:
    """Ingest the validated dataset into the workspace's feature store; the value is the feature service's name."""

    report = ingest(open_workspace(Path(workspace)), Path(dataset), say)
    say(f"feature service {report.feature_service}: {sum(report.online_rows.values())} entities online")
    return StepResult(value=report.feature_service,
                      metrics={**{f"offline_rows_{v}": n for v, n in report.offline_rows.items()},
                               **{f"online_entities_{v}": n for v, n in report.online_rows.items()}},
                      metadata={"feature_service": report.feature_service, "feature_views": report.feature_views})


@step
def training_set_step(workspace: str, labels: str, feature_service: str, out: str) -> StepResult:
    """A point-in-time training set: each label of ``labels`` joined with the features known at its time."""

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    say(f"joining labels of {labels} with {feature_service} at each label's time")
    built = build_training_set(open_workspace(Path(workspace)), Path(labels), feature_service,
                               folder / TRAINING_SET_FILE)
    say(f"{built.rows} rows, {len(built.features)} features")
    return StepResult(metrics={"rows": built.rows, "features": len(built.features),
                               **({"label_rate": built.label_rate} if built.label_rate is not None else {})},
                      metadata={"path": built.path, "feature_service": built.service, "label": built.label})


def training_set_file(artifact: str) -> Path:
    """The parquet file inside a training-set artifact folder (or the file itself when given one)."""
    path = Path(artifact)
    return path / TRAINING_SET_FILE if path.is_dir() else path
