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

from kiln.errors import InputError
from kiln.files import staged_file
from kiln.monitoring.endpoint import served_version
from kiln.registry.versions import get_version
from kiln.training.data import load_training_set
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
    positive_rate: float
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
    """Check and store a file of ground-truth labels; nothing is stored unless every row is usable."""
    import pandas as pd

    frame = _read(path)
    if label is None:
        label = LABEL if LABEL in frame.columns else _model_label(ws, endpoint)
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
    bad = [v for v in pd.unique(values) if not (pd.notna(v) and v in (0, 1, True, False))]
    if bad:
        shown = ", ".join(repr(v.item() if hasattr(v, "item") else v) for v in bad[:MAX_SHOWN])
        raise InputError(f"{path}: label column '{label}' must hold 0 or 1; it holds {shown}",
                         hint="map the positive outcome to 1 and the rest to 0")
    out = frame.rename(columns={id_column: ID, label: LABEL})
    out[ID] = out[ID].astype(str)
    out[LABEL] = out[LABEL].astype(int)
    folder = labels_folder(ws, endpoint)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    target = folder / f"labels-{stamp}.parquet"
    with staged_file(target) as stage:
        out.to_parquet(stage, index=False)
    return IngestedLabels(endpoint, len(out), round(float(out[LABEL].mean()), 4), str(target), str(path))


def read_labels(ws: Workspace, endpoint: str) -> "pd.DataFrame | None":
    """Every label given for ``endpoint``, the latest per inference id; None when there are none."""
    import pandas as pd

    files = sorted(labels_folder(ws, endpoint).glob("labels-*.parquet"))
    if not files:
        return None
    frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    return frame.drop_duplicates(ID, keep="last").reset_index(drop=True)


def _model_label(ws: Workspace, endpoint: str) -> str:
    """The label column of the training set behind the endpoint's model."""

    info = get_version(ws, served_version(ws, endpoint))
    training_set = info.tags.get("kiln.training_set")
    if training_set:
        try:
            return load_training_set(Path(training_set)).label
        except Exception:  # noqa: BLE001 - an unreadable training set only means the label must be named
            pass
    raise InputError("the labels file has no 'label' column and the model's label could not be read",
                     hint="name the label column with --label")
