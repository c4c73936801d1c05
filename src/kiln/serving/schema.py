"""Request validation against a model's input schema: each problem names the field, nothing reaches the model."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

MAX_INSTANCES = 1000
NUMERIC = {"double", "float", "long", "integer"}


class RequestError(ValueError):
    """A request the model cannot take; the message names the field and what is wrong with it."""


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # MLflow's type name: double, long, string, boolean, ...


@dataclass(frozen=True)
class InputSchema:
    columns: tuple[Column, ...]

    @classmethod
    def from_mlflow(cls, schema: Any) -> "InputSchema":
        return cls(tuple(Column(c.name, str(c.type).removeprefix("DataType.")) for c in schema.inputs))

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def frame(self, instances: Any) -> "pd.DataFrame":
        """Rows as a frame in schema order: a list of objects keyed by feature, or of lists in schema order."""
        import pandas as pd

        return pd.DataFrame(self.rows(instances), columns=self.names)

    def rows(self, instances: Any) -> list[list[Any]]:
        """The validated rows, each a list in schema order (what frame() holds, for runtimes that need no frame)."""
        if not isinstance(instances, list) or not instances:
            raise RequestError("'instances' must be a non-empty list of rows")
        if len(instances) > MAX_INSTANCES:
            raise RequestError(f"'instances' has {len(instances)} rows; at most {MAX_INSTANCES} per request")
        return [self._row(i, row) for i, row in enumerate(instances)]

    def _row(self, i: int, row: Any) -> list[Any]:
        if isinstance(row, list):
            if len(row) != len(self.columns):
                raise RequestError(f"instances[{i}] has {len(row)} values; the model takes {len(self.columns)}: "
                                   f"{', '.join(self.names)}")
            row = dict(zip(self.names, row))
        if not isinstance(row, dict):
            raise RequestError(f"instances[{i}] must be an object of feature values or a list in schema order")
        missing = [n for n in self.names if n not in row]
        extra = [str(n) for n in row if n not in self.names]
        if missing:
            raise RequestError(f"instances[{i}]: missing feature(s) {', '.join(missing)}")
        if extra:
            raise RequestError(f"instances[{i}]: unknown feature(s) {', '.join(extra[:5])}")
        return [self._value(i, c, row[c.name]) for c in self.columns]

    @staticmethod
    def _value(i: int, column: Column, value: Any) -> Any:
        if value is None:
            return None  # a missing value: the model's feature pipeline fills it
        if column.type in NUMERIC:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise RequestError(f"instances[{i}].{column.name} must be a number or null; got {type(value).__name__}")
            if isinstance(value, float) and not math.isfinite(value):
                raise RequestError(f"instances[{i}].{column.name} must be finite")
            return float(value) if column.type in ("double", "float") else value
        if column.type == "string":
            if not isinstance(value, str):
                raise RequestError(f"instances[{i}].{column.name} must be text or null; got {type(value).__name__}")
            return value
        if column.type == "boolean" and not isinstance(value, bool):
            raise RequestError(f"instances[{i}].{column.name} must be true, false or null")
        return value
