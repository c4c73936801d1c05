"""What a label asks a model to do: tell two classes apart, pick one of several, or predict a number.

A classification task keeps its classes in a fixed order; models learn and answer class indexes, which
``classes`` turns back into the label's own values. Bias metrics need outcomes that are favourable or not: a
binary task's positive class, a multiclass task's favourable classes, a regression's values above or below a
threshold (SageMaker Clarify's label_values_or_threshold).
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
class Favourable:
    """Which label values are the favourable outcome: some classes, or numbers above (or below) a threshold."""

    values: tuple[Any, ...] = ()
    above: float | None = None
    below: float | None = None

    def __str__(self) -> str:
        if self.above is not None:
            return f">{self.above:g}"
        if self.below is not None:
            return f"<{self.below:g}"
        return ",".join(map(str, self.values))

    def mask(self, values: "pd.Series | np.ndarray") -> "np.ndarray":
        """1 where a value (a label, or a prediction in the label's own values) is favourable, else 0."""
        import numpy as np

        arr = np.asarray(values)
        if self.above is not None:
            return np.asarray(arr.astype("float64") > self.above, dtype="int64")
        if self.below is not None:
            return np.asarray(arr.astype("float64") < self.below, dtype="int64")
        wanted = {str(_plain(v)) for v in self.values}
        return np.array([str(_plain(v)) in wanted for v in arr.tolist()], dtype="int64")


@dataclass(frozen=True)
class Task:
    kind: TaskKind
    classes: tuple[Any, ...] = ()  # the label's values in class-index order; for binary, (negative, positive)
    favourable: Favourable | None = None  # for bias metrics; binary's is its positive class

    @property
    def outcome(self) -> Favourable | None:
        """The favourable outcome bias is measured by: given, or a binary task's positive class."""
        if self.favourable is None and self.kind == "binary":
            return Favourable(values=(self.classes[1],))
        return self.favourable

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
        out: dict[str, Any] = {"kind": self.kind, "classes": [_plain(c) for c in self.classes]}
        if self.favourable is not None:
            out["favourable"] = str(self.favourable)
        return out

    @classmethod
    def from_dict(cls, doc: dict[str, Any] | None) -> "Task":
        """A task as to_dict wrote it; none recorded (a model from before tasks) is the binary 0/1 task."""
        if not doc:
            return BINARY_01
        task = cls(kind=doc["kind"], classes=tuple(doc.get("classes") or ()))
        return task.with_favourable(doc["favourable"], "favourable") if doc.get("favourable") else task

    def with_favourable(self, text: str | None, where: str) -> "Task":
        """The task with its favourable outcome read from ``text``: classes (``A,B``) for classification, ``>X`` or
        ``<X`` for regression."""
        if not text:
            return self
        text = text.strip()
        if self.kind == "regression":
            try:
                if text[:1] in "<>":
                    number = float(text[1:])
                    return Task(self.kind, self.classes, Favourable(above=number if text[0] == ">" else None,
                                                                    below=number if text[0] == "<" else None))
            except ValueError:
                pass
            raise InputError(f"{where} '{text}': a regression's favourable outcome is a threshold, '>X' or '<X' "
                             "(e.g. '<140')")
        known = {str(c): c for c in self.classes}
        chosen = [v.strip() for v in text.split(",") if v.strip()]
        unknown = [v for v in chosen if v not in known]
        if not chosen or unknown:
            raise InputError(f"{where} '{text}': {', '.join(map(repr, unknown)) or 'no value'} "
                             f"{'is' if len(unknown) == 1 else 'are'} not a class of the label; classes: "
                             f"{', '.join(known)}")
        if len(chosen) == len(known):
            raise InputError(f"{where} '{text}': every class is favourable; leave at least one out to compare with")
        return Task(self.kind, self.classes, Favourable(values=tuple(known[v] for v in chosen)))


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
