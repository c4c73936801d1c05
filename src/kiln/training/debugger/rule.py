"""A Debugger rule: what it needs to see, where it applies, and when it fires."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from kiln.data.task import Task
from kiln.settings import RuleSettings
from kiln.training.debugger.observation import Observation

if TYPE_CHECKING:
    import numpy as np

S = TypeVar("S", bound=RuleSettings)


class Rule(Generic[S]):
    """A built-in rule with its settings (action and parameters); ``check`` answers a message when it fires."""

    name: ClassVar[str]  # SageMaker Debugger's name
    key: ClassVar[str]  # its key under debugger.rules in the settings
    needs: ClassVar[frozenset[str]] = frozenset()  # what the probe must show (layers, relu, trees)
    classification_only: ClassVar[bool] = False

    def __init__(self, settings: S) -> None:
        self.settings = settings

    @property
    def action(self) -> str:
        return self.settings.action

    def params(self) -> dict[str, Any]:
        return self.settings.model_dump(exclude={"action"})

    def applies(self, task: Task, shows: frozenset[str]) -> bool:
        """Whether the rule means something for this task and for what the learner's probe shows."""
        return self.needs <= shows and (task.is_classification or not self.classification_only)

    def at_start(self, task: Task, labels: "np.ndarray") -> str | None:
        """Checked once, before the first step, on the training labels."""
        return None

    def check(self, history: Sequence[Observation], loss: str) -> str | None:
        """Checked after every step on the observations so far (the newest last)."""
        return None
