"""Ground truth: labels that arrive after the fact, joined to captured predictions by inference id.

Each `kiln monitor labels` call adds one parquet file under WS/monitoring/labels/ENDPOINT/; a later file's
label wins for an inference id labelled twice. Extra columns (an entity key, the label's time, protected
attributes) are kept: the bias monitor reads facets from them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.data.task import BINARY_01
from kiln.errors import InputError
from kiln.files import staged_file
from kiln.monitoring.endpoint import served_version
from kiln.registry.versions import get_version
from kiln.training.data import TrainingData, load_training_set
from kiln.workspace import Workspace

if TYPE_CHECKING:
    import pandas as pd

ID, LABEL = "inference_id", "label"
MAX_SHOWN = 5


@dataclass(frozen=True)
class IngestedLabels:
    """A labels file stored for an endpoint: how many labels, their positive rate, where they went and came from."""

    endpoint: str
    rows: int
    positive_rate: float | None  # binary models' labels only
    file: str
    source: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def labels_folder(ws: Workspace, endpoint: str) -> Path:
    return ws.folder("monitoring") / "labels" / endpoint


def _read(path: Path) -> "pd.DataFrame":
    import pandas as pd

    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.suffix not in (".csv", ".parquet"):
        raise InputError(f"{path}: labels must be a .csv or .parquet file")
    try:
        return pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - any reader failure means an unreadable file
        raise InputError(f"{path}: unreadable: {exc}") from None


def ingest_labels(ws: Workspace, endpoint: str, path: Path, label: str | None = None,
                  id_column: str = ID) -> IngestedLabels:
    """Check and store a file of ground-truth labels (in the served model's label values: 0/1, classes or numbers);
    nothing is stored unless every row is usable."""
    import numpy as np
    import pandas as pd

    frame = _read(path)
    data = _model_training_set(ws, endpoint)
    if label is None:
        if LABEL not in frame.columns and data is None:
            raise InputError("the labels file has no 'label' column and the model's label could not be read",
                             hint="name the label column with --label")
        label = LABEL if LABEL in frame.columns else data.label if data is not None else LABEL
    task = data.task if data is not None else BINARY_01
    for role, column in (("inference id", id_column), ("label", label)):
        if column not in frame.columns:
            raise InputError(f"{path}: no {role} column '{column}'; its columns: {', '.join(map(str, frame.columns))}",
                             hint="name it with --id-column or --label")
    if frame.empty:
        raise InputError(f"{path}: no rows")
    ids = frame[id_column]
    if ids.isna().any():
        raise InputError(f"{path}: column '{id_column}' has {int(ids.isna().sum())} empty value(s)")
    duplicated = ids[ids.duplicated()].astype(str).unique().tolist()
    if duplicated:
        raise InputError(f"{path}: inference id(s) {', '.join(duplicated[:MAX_SHOWN])} appear more than once")
    values = frame[label]
    if values.isna().any():
        raise InputError(f"{path}: label column '{label}' has {int(values.isna().sum())} empty value(s)")
    if task.kind == "regression":
        numbers = pd.to_numeric(values, errors="coerce")
        bad = values[numbers.isna() | ~np.isfinite(numbers.fillna(0))].astype(str).unique().tolist()
        if bad:
            raise InputError(f"{path}: label column '{label}' must hold numbers (a regression model's label); it "
                             f"holds {', '.join(map(repr, bad[:MAX_SHOWN]))}")
        values = numbers.astype("float64")
    elif task.kind == "binary" and set(task.classes) == {0, 1}:
        bad = [v for v in pd.unique(values) if v not in (0, 1, True, False)]
        if bad:
            shown = ", ".join(repr(v.item() if hasattr(v, "item") else v) for v in bad[:MAX_SHOWN])
            raise InputError(f"{path}: label column '{label}' must hold 0 or 1; it holds {shown}",
                             hint="map the positive outcome to 1 and the rest to 0")
        values = values.astype(int)
    else:
        values = pd.Series([task.classes[i] for i in task.codes(values, f"{path}: label column '{label}'")],
                           index=values.index)
    out = frame.rename(columns={id_column: ID, label: LABEL})
    out[ID] = out[ID].astype(str)
    out[LABEL] = values.to_numpy()
    folder = labels_folder(ws, endpoint)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    target = folder / f"labels-{stamp}.parquet"
    with staged_file(target) as stage:
        out.to_parquet(stage, index=False)
    rate = round(float(task.codes(out[LABEL], "labels").mean()), 4) if task.kind == "binary" else None
    return IngestedLabels(endpoint, len(out), rate, str(target), str(path))


def read_labels(ws: Workspace, endpoint: str) -> "pd.DataFrame | None":
    """Every label given for ``endpoint``, the latest per inference id; None when there are none."""
    import pandas as pd

    files = sorted(labels_folder(ws, endpoint).glob("labels-*.parquet"))
    if not files:
        return None
    frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    return frame.drop_duplicates(ID, keep="last").reset_index(drop=True)


def _model_training_set(ws: Workspace, endpoint: str) -> "TrainingData | None":
    """The training set behind the endpoint's model (its label and task); None when it cannot be read."""

    try:
        training_set = get_version(ws, served_version(ws, endpoint)).tags.get("kiln.training_set")
        return load_training_set(Path(training_set)) if training_set else None
    except Exception:  # noqa: BLE001 - no readable training set only means the label must be named (and is 0/1)
        return None
