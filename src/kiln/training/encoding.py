"""The feature pipeline in front of every model: imputation and one-hot encoding to one float matrix.

Encodings live here rather than in the model graph so the exported ONNX keeps to standard operators
(TVM's ONNX frontend does not take the ai.onnx.ml domain).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kiln.errors import InputError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

MAX_CATEGORIES = 50


@dataclass
class Encoder:
    """Numeric columns: missing values become the training median. Text columns: one column per known category."""

    numeric: dict[str, float]  # column -> median used for missing values
    categories: dict[str, list[str]]  # column -> categories seen in training, in output order
    order: list[str]  # the input columns, in the order the caller gave them

    @classmethod
    def fit(cls, frame: "pd.DataFrame", features: list[str], categorical: list[str]) -> "Encoder":
        numeric, categories = {}, {}
        for name in features:
            if name in categorical:
                counts = frame[name].dropna().astype(str).value_counts()
                categories[name] = sorted(counts.index[:MAX_CATEGORIES].tolist())
            else:
                median = frame[name].astype("float64").median()
                numeric[name] = 0.0 if median is None or math.isnan(median) else float(median)
        return cls(numeric=numeric, categories=categories, order=list(features))

    @property
    def output_names(self) -> list[str]:
        names = []
        for name in self.order:
            names.extend([f"{name}={c}" for c in self.categories[name]] if name in self.categories else [name])
        return names

    def transform(self, frame: "pd.DataFrame") -> "np.ndarray":
        """The float32 matrix the models take; a missing input column is an InputError naming it."""
        import numpy as np

        missing = [name for name in self.order if name not in frame.columns]
        if missing:
            raise InputError(f"missing feature columns: {', '.join(missing)}")
        parts: list["np.ndarray"] = []
        for name in self.order:
            column = frame[name]
            if name in self.categories:
                text = column.astype("string")
                parts.extend((text == c).fillna(False).to_numpy(dtype=np.float32) for c in self.categories[name])
            else:
                try:
                    values = column.astype("float64").to_numpy()
                except (TypeError, ValueError) as exc:
                    raise InputError(f"feature '{name}' must be numeric: {exc}") from None
                values = np.where(np.isnan(values), self.numeric[name], values)
                parts.append(values.astype(np.float32))
        return np.column_stack(parts) if parts else np.zeros((len(frame), 0), dtype=np.float32)

    def transform_rows(self, rows: list[list[Any]]) -> "np.ndarray":
        """transform() for rows already checked against the input schema, each a list in ``order``, without a
        frame: pandas costs more than a compiled model at one row. A value of the wrong type is an InputError."""
        import numpy as np

        out = np.zeros((len(rows), len(self.output_names)), dtype=np.float32)
        col = 0
        for j, name in enumerate(self.order):
            known = self.categories.get(name)
            if known is not None:
                index = {c: k for k, c in enumerate(known)}
                for r, row in enumerate(rows):
                    k = index.get(str(row[j])) if row[j] is not None else None
                    if k is not None:
                        out[r, col + k] = 1.0
                col += len(known)
                continue
            for r, row in enumerate(rows):
                value = row[j]
                if value is None or (isinstance(value, float) and math.isnan(value)):
                    value = self.numeric[name]
                try:
                    out[r, col] = float(value)
                except (TypeError, ValueError):
                    raise InputError(f"feature '{name}' must be numeric; got {value!r}") from None
            col += 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"numeric": self.numeric, "categories": self.categories, "order": self.order}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Encoder":
        return cls(numeric=dict(data["numeric"]), categories=dict(data["categories"]), order=list(data["order"]))
