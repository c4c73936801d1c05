"""Point-in-time correct training sets from the offline store, with Feast's historical retrieval."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.errors import DatasetError, InputError
from kiln.features.repo import open_store, plan_by_service
from kiln.files import staged_file
from kiln.workspace import Workspace

if TYPE_CHECKING:
    import pandas as pd

ROW_ID = "__kiln_row"


@dataclass
class TrainingSet:
    path: str
    rows: int
    service: str
    features: list[str]
    label: str
    task: dict[str, Any]  # {"kind": binary | multiclass | regression, "classes": [...]}
    label_rate: float | None  # binary: the positive share; regression: the mean; multiclass: none
    null_share: dict[str, float]
    lineage: dict[str, Any]


def read_labels(path: Path, key: str, label: str) -> "pd.DataFrame":
    """Labels from a dataset folder (its labels.parquet) or a parquet/CSV file."""
    import pandas as pd

    if path.is_dir():
        path = path / "labels.parquet"
    if not path.is_file():
        raise DatasetError(f"{path}: no such labels file", hint="pass a dataset folder or a labels parquet/CSV file")
    try:
        frame = pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)
    except Exception as exc:  # any reader failure means an unreadable file
        raise DatasetError(f"{path}: unreadable labels file: {exc}") from exc
    for col in (key, "label_timestamp", label):
        if col not in frame.columns:
            raise InputError(f"{path}: labels need a column '{col}' (found: {', '.join(frame.columns)})")
    frame["label_timestamp"] = pd.to_datetime(frame["label_timestamp"], utc=True, errors="coerce")
    problems = []
    if frame[key].isna().any():
        problems.append(f"column '{key}' has {int(frame[key].isna().sum())} empty ids")
    if frame["label_timestamp"].isna().any():
        problems.append(f"column 'label_timestamp' has {int(frame['label_timestamp'].isna().sum())} empty or unparsable times")
    future = frame["label_timestamp"] > pd.Timestamp.now(tz="UTC")
    if future.any():
        problems.append(f"column 'label_timestamp' has {int(future.sum())} times in the future")
    if problems:
        raise InputError(f"{path}: " + "; ".join(problems))
    return frame[[key, "label_timestamp", label]]


def build_training_set(ws: Workspace, labels_path: Path, service: str, out: Path) -> TrainingSet:
    """Join each label row with the feature values known at its label time; write parquet + a lineage file."""

    plan, dataset = plan_by_service(ws, service)
    label = dataset.schema.label
    task = dataset.schema.learning_task()
    labels = read_labels(labels_path, plan.join_key, label)
    if out.exists() and out.is_dir():
        raise InputError(f"--out {out} is a folder; give a file name ending in .parquet")
    if not out.parent.exists():
        raise InputError(f"--out {out}: folder {out.parent} does not exist")
    entity_df = labels.rename(columns={"label_timestamp": "event_timestamp"}).reset_index(drop=True)
    entity_df[ROW_ID] = range(len(entity_df))
    store = open_store(ws)
    features = store.get_feature_service(service)
    joined = store.get_historical_features(entity_df=entity_df, features=features).to_df()
    names = [p.name for proj in features.feature_view_projections for p in proj.features]
    # Some Feast offline stores drop a label row whose every match is past the TTL; put it back with nulls.
    joined = entity_df.merge(joined[[ROW_ID, *names]], on=ROW_ID, how="left").sort_values(ROW_ID)
    result = joined.rename(columns={"event_timestamp": "label_timestamp"})[
        [plan.join_key, "label_timestamp", *names, label]].reset_index(drop=True)
    with staged_file(out) as stage:
        result.to_parquet(stage, index=False)
        lineage = {
            "feature_service": service,
            "feature_views": plan.views,
            "dataset": plan.dataset,
            "dataset_content_hash": dataset.manifest.get("content_hash"),
            "labels": str(labels_path.resolve()),
            "labels_sha256": _sha256(labels_path / "labels.parquet" if labels_path.is_dir() else labels_path),
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
    meta = out.with_name(out.name + ".json")
    summary = TrainingSet(
        path=str(out.resolve()), rows=len(result), service=service, features=names, label=label,
        task=task.to_dict(),
        label_rate=round(float(result[label].mean()), 4) if len(result) and task.kind != "multiclass" else None,
        null_share={n: round(float(result[n].isna().mean()), 4) for n in names}, lineage=lineage,
    )
    meta.write_text(json.dumps(summary.__dict__, indent=2) + "\n")
    return summary


def _sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
