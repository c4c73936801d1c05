"""A training set as training reads it: features, label, key and time, checked before any fit."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.data.task import Task, infer_task
from kiln.errors import DatasetError, InputError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

TIME_COLUMN = "label_timestamp"


@dataclass
class TrainingData:
    """Rows of one training set; ``features`` are the model's inputs in a fixed order."""

    frame: "pd.DataFrame"
    features: list[str]
    label: str
    key: str | None
    path: Path
    task: Task
    lineage: dict[str, Any] = field(default_factory=dict)

    def labels(self, frame: "pd.DataFrame") -> "np.ndarray":
        """The label of ``frame``'s rows as a model learns it: class indexes, or numbers for regression."""
        return self.task.codes(frame[self.label], f"{self.path}: label column '{self.label}'")

    @property
    def categorical(self) -> list[str]:
        import pandas as pd

        return [f for f in self.features if not pd.api.types.is_numeric_dtype(self.frame[f])
                or pd.api.types.is_bool_dtype(self.frame[f])]


def load_training_set(path: Path, task: str | None = None) -> TrainingData:
    """Read a training set written by `kiln features training-set` (parquet + its .json lineage file).

    The task is the one the training set records, or ``task`` (binary, multiclass, regression) when given.
    """
    import pandas as pd

    meta_path = path.with_name(path.name + ".json")
    if not path.is_file():
        raise DatasetError(f"{path}: no such training set", hint="build one with `kiln features training-set`")
    if not meta_path.is_file():
        raise DatasetError(f"{path}: its lineage file {meta_path.name} is missing",
                           hint="training sets come from `kiln features training-set`, which writes both")
    try:
        meta = json.loads(meta_path.read_text())
        frame = pd.read_parquet(path)
    except Exception as exc:  # any reader failure means an unreadable training set
        raise DatasetError(f"{path}: unreadable training set: {exc}") from exc
    features, label = list(meta.get("features", [])), meta.get("label")
    missing = [c for c in [*features, label] if c not in frame.columns]
    if not label or not features or missing:
        raise DatasetError(f"{path}: the training set does not hold the columns its lineage names "
                           f"(missing: {', '.join(map(str, missing)) or 'features/label entries'})")
    key = next((c for c in frame.columns if c not in features and c not in (label, TIME_COLUMN)), None)
    lineage = dict(meta.get("lineage", {}))
    lineage["training_set_sha256"] = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    where = f"{path}: label column '{label}'"
    if frame[label].isna().any():
        raise InputError(f"{where} has {int(frame[label].isna().sum())} empty values")
    recorded = meta.get("task")
    learning = Task.from_dict(recorded) if task is None and recorded else infer_task(frame[label], where, task)
    data = TrainingData(frame=frame, features=features, label=label, key=key, path=path, task=learning,
                        lineage=lineage)
    check_training_data(data)
    return data


def check_training_data(data: TrainingData) -> None:
    """Refuse what no model can learn from: no rows, one class, labels outside the task, infinite or empty features."""
    import numpy as np
    import pandas as pd

    frame, label, where = data.frame, data.label, str(data.path)
    if frame.empty:
        raise InputError(f"{where}: the training set has no rows", hint="check the labels file and the feature data")
    if data.task.is_classification:
        codes = data.labels(frame)
        seen = {data.task.classes[i] for i in set(codes.tolist())}
        if len(seen) < 2:
            raise InputError(f"{where}: label column '{label}' has only the class {', '.join(map(str, seen))}; "
                             "a classifier needs at least two classes", hint="use more labels or a longer window")
    else:
        y = frame[label]
        if not pd.api.types.is_numeric_dtype(y):
            raise InputError(f"{where}: label column '{label}' must be numeric for a regression task")
        if not np.isfinite(y.to_numpy(dtype="float64")).all():
            raise InputError(f"{where}: label column '{label}' has infinite values")
        if y.nunique() < 2:
            raise InputError(f"{where}: label column '{label}' has one value only; there is nothing to predict")
    problems = []
    for name in data.features:
        column = frame[name]
        if column.isna().all():
            problems.append(f"'{name}' is empty in every row")
        elif pd.api.types.is_float_dtype(column) and np.isinf(column.to_numpy()).any():
            problems.append(f"'{name}' has {int(np.isinf(column.to_numpy()).sum())} infinite values")
    if problems:
        raise InputError(f"{where}: feature columns unusable for training: " + "; ".join(problems))
