"""What a label asks a model to do: tell two classes apart, pick one of several, or predict a number.

A classification task keeps its classes in a fixed order; models learn and answer class indexes, which
``classes`` turns back into the label's own values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from kiln.errors import InputError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

TaskKind = Literal["binary", "multiclass", "regression"]
TASK_KINDS: tuple[TaskKind, ...] = ("binary", "multiclass", "regression")
MAX_CLASSES = 100  # a label with more distinct values than this is a number to predict, or an id by mistake


@dataclass(frozen=True)
class Task:
    kind: TaskKind
    classes: tuple[Any, ...] = ()  # the label's values in class-index order; for binary, (negative, positive)

    @property
    def is_classification(self) -> bool:
        return self.kind != "regression"

    @property
    def positive(self) -> Any:
        """The class a binary model gives the probability of."""
        return self.classes[1] if self.kind == "binary" else None

    def codes(self, values: "pd.Series", where: str) -> "np.ndarray":
        """Class indexes (int64) for a classification label, the values as float64 for regression."""
        import numpy as np

        if not self.is_classification:
            return np.asarray(values.to_numpy(dtype="float64"))
        index = {_plain(c): i for i, c in enumerate(self.classes)}
        plain = [_plain(v) for v in values.tolist()]
        unknown = sorted({str(v) for v in plain if v not in index})
        if unknown:
            raise InputError(f"{where}: label values {unknown[:10]} are not classes of this {self.kind} task "
                             f"({list(self.classes)})")
        return np.array([index[v] for v in plain], dtype="int64")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "classes": [_plain(c) for c in self.classes]}

    @classmethod
    def from_dict(cls, doc: dict[str, Any] | None) -> "Task":
        """A task as to_dict wrote it; none recorded (a model from before tasks) is the binary 0/1 task."""
        if not doc:
            return BINARY_01
        return cls(kind=doc["kind"], classes=tuple(doc.get("classes") or ()))


BINARY_01 = Task("binary", (0, 1))


def _plain(value: Any) -> Any:
    """numpy scalars as Python values, so classes compare and serialize alike wherever they come from."""
    return value.item() if hasattr(value, "item") else value


def infer_task(values: "pd.Series", where: str, requested: str | None = None) -> Task:
    """The task a label column asks for: ``requested`` when given (and possible), else read from its values.

    Two distinct values are binary; a text label, or whole numbers with at most MAX_CLASSES values that are not
    mostly distinct, is multiclass; other numbers are regression.
    """
    import pandas as pd

    if requested is not None and requested not in TASK_KINDS:
        raise InputError(f"--task {requested}: choose one of {', '.join(TASK_KINDS)}")
    present = values.dropna()
    distinct = sorted({_plain(v) for v in present.tolist()}, key=lambda v: (str(type(v)), v))
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    if requested == "regression" or (requested is None and numeric and not _looks_like_classes(present, distinct)):
        if not numeric:
            raise InputError(f"{where}: a regression label must be numeric; found values such as {distinct[:5]}")
        return Task("regression")
    if len(distinct) < 2:
        raise InputError(f"{where}: the label has {len(distinct)} distinct value(s) {distinct}; a classifier needs "
                         "at least two classes")
    if len(distinct) > MAX_CLASSES:
        raise InputError(f"{where}: the label has {len(distinct)} distinct values, more than {MAX_CLASSES} classes",
                         hint="pass --task regression if it is a number to predict")
    kind: TaskKind = "binary" if len(distinct) == 2 else "multiclass"
    if requested is not None and requested != kind:
        raise InputError(f"{where}: --task {requested} needs {'two' if requested == 'binary' else 'three or more'} "
                         f"classes; the label has {len(distinct)}: {distinct[:10]}")
    return Task(kind, tuple(distinct))


def _looks_like_classes(present: "pd.Series", distinct: list[Any]) -> bool:
    """Whole numbers with few distinct values, each used by several rows, read as classes."""
    if len(distinct) <= 2:
        return True
    whole = all(float(v).is_integer() for v in distinct)
    return whole and len(distinct) <= min(MAX_CLASSES, 20) and len(distinct) * 5 <= len(present)
