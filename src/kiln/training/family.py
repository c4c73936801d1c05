"""What a model family is: how it learns step by step, what it may be tuned over, and how it is saved.

Every family learns in iterations (boosting rounds, epochs) so tuning can stop a poor trial early.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from kiln.data.task import Task
from kiln.errors import InputError

if TYPE_CHECKING:
    import numpy as np


class Fitted(Protocol):
    """A trained model as evaluation and logging see it."""

    def output(self, x: "np.ndarray") -> "np.ndarray":
        """The task's output for encoded rows: P(positive) for binary, class probabilities [N, K] for multiclass,
        values for regression."""
        ...
    def save(self, folder: Path) -> str: ...


class Learner(Fitted, Protocol):
    """A built-in family's model while it learns: a step at a time, checkpointed."""

    def step(self) -> None: ...
    def state(self) -> bytes: ...
    def restore(self, state: bytes) -> None: ...


@dataclass(frozen=True)
class Param:
    """One tunable parameter: a range (log scale where it spans orders of magnitude) or a set of choices."""

    kind: str  # "float", "int" or "choice"
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    def check(self, name: str, value: Any) -> Any:
        if self.kind == "choice":
            if value not in self.choices:
                raise InputError(f"parameter '{name}': {value!r} is not one of {list(self.choices)}")
            return value
        try:
            number = int(value) if self.kind == "int" else float(value)
        except (TypeError, ValueError):
            raise InputError(f"parameter '{name}' must be {'an integer' if self.kind == 'int' else 'a number'}; "
                             f"got {value!r}") from None
        assert self.low is not None and self.high is not None  # a numeric Param is always built with its range
        if not self.low <= number <= self.high:
            raise InputError(f"parameter '{name}' = {number} lies outside [{self.low}, {self.high}]")
        return number


@dataclass(frozen=True)
class Family:
    name: str
    description: str
    max_iterations: int  # a full training's length; tuning's per-trial ceiling
    unit: str  # what one iteration is
    params: dict[str, Param]
    defaults: dict[str, Any]
    start: Callable[[dict[str, Any], "np.ndarray", "np.ndarray", int, Task], Learner]
    model_file: str
    exports_onnx: bool

    def config(self, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """The defaults with ``overrides`` checked against the parameter ranges; unknown names are an error."""
        out = dict(self.defaults)
        for name, value in (overrides or {}).items():
            if name not in self.params:
                raise InputError(f"family {self.name} has no parameter '{name}'; it has: {', '.join(self.params)}")
            out[name] = self.params[name].check(name, value)
        return out


def parse_params(items: list[str]) -> dict[str, Any]:
    """``NAME=VALUE`` pairs; values are read as JSON where they parse (numbers), else kept as text."""
    out: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise InputError(f"--param '{item}': expected NAME=VALUE, e.g. learning_rate=0.05")
        try:
            out[name] = json.loads(value)
        except json.JSONDecodeError:
            out[name] = value
    return out
