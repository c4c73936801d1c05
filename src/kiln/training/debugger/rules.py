"""SageMaker Debugger's built-in rules that mean something for Kiln's families, and how settings choose them."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from kiln.data.task import Task
from kiln.errors import InputError
from kiln.settings import (
    RULE_ACTIONS,
    ClassImbalanceRule,
    DeadReluRule,
    DebuggerRules,
    DebuggerSettings,
    FeatureImportanceOverweightRule,
    LossNotDecreasingRule,
    OverfitRule,
    OvertrainingRule,
    TreeDepthRule,
    VanishingGradientRule,
)
from kiln.training.debugger.observation import Observation
from kiln.training.debugger.probe import LAYERS, RELU, TREES
from kiln.training.debugger.rule import Rule

if TYPE_CHECKING:
    import numpy as np


def _n(value: float) -> str:
    return f"{value:.4g}"


class Overfit(Rule[OverfitRule]):
    """Validation loss rises while training loss falls, ``patience`` steps in a row."""

    name, key = "Overfit", "overfit"

    def check(self, history: Sequence[Observation], loss: str) -> str | None:
        p = self.settings.patience
        if len(history) < p + 1 or history[-p - 1].step < self.settings.start_step:
            return None
        window = history[-p - 1:]
        if not all(b.valid_loss > a.valid_loss and b.train_loss < a.train_loss for a, b in itertools.pairwise(window)):
            return None
        first, last = window[0], window[-1]
        rise = (last.valid_loss - first.valid_loss) / first.valid_loss if first.valid_loss > 0 else float("inf")
        if rise < self.settings.min_rise:
            return None
        return (f"validation {loss} rose {p} steps in a row ({_n(first.valid_loss)} → {_n(last.valid_loss)}, "
                f"+{rise:.1%}) while training {loss} fell ({_n(first.train_loss)} → {_n(last.train_loss)})")


class Overtraining(Rule[OvertrainingRule]):
    """Validation loss has made no new best for ``patience_validation`` steps."""

    name, key = "Overtraining", "overtraining"

    def check(self, history: Sequence[Observation], loss: str) -> str | None:
        if not history:
            return None
        best, best_step = history[0].valid_loss, history[0].step
        for obs in history[1:]:
            if obs.valid_loss < best * (1 - self.settings.delta):
                best, best_step = obs.valid_loss, obs.step
        now = history[-1]
        idle = now.step - best_step
        if idle < self.settings.patience_validation:
            return None
        return (f"validation {loss} has not improved by {self.settings.delta:.1%} for {idle} steps (best "
                f"{_n(best)} at step {best_step}, now {_n(now.valid_loss)})")


class LossNotDecreasing(Rule[LossNotDecreasingRule]):
    """Training loss fell by less than ``diff_percent`` percent over the last ``num_steps`` steps."""

    name, key = "LossNotDecreasing", "loss_not_decreasing"

    def check(self, history: Sequence[Observation], loss: str) -> str | None:
        n = self.settings.num_steps
        if len(history) <= n:
            return None
        before, now = history[-n - 1].train_loss, history[-1].train_loss
        fall = (before - now) / before * 100 if before > 0 else 0.0
        if fall >= self.settings.diff_percent:
            return None
        moved = f"fell {fall:.2f}%" if fall >= 0 else f"rose {-fall:.2f}%"
        return (f"training {loss} {moved} over {n} steps ({_n(before)} → {_n(now)}), less than the "
                f"{self.settings.diff_percent:g}% it must fall")


class ClassImbalance(Rule[ClassImbalanceRule]):
    """The smallest class's share of the training labels is under ``threshold`` (checked at the start)."""

    name, key = "ClassImbalance", "class_imbalance"
    classification_only = True

    def at_start(self, task: Task, labels: "np.ndarray") -> str | None:
        import numpy as np

        counts = np.bincount(labels.astype(int), minlength=len(task.classes))
        smallest = int(counts.argmin())
        share = counts[smallest] / counts.sum()
        if share >= self.settings.threshold:
            return None
        return (f"class '{task.classes[smallest]}' is {share:.1%} of the {int(counts.sum())} training rows "
                f"({int(counts[smallest])} rows), under {self.settings.threshold:.1%}")


class VanishingGradient(Rule[VanishingGradientRule]):
    """A layer's mean absolute weight gradient is under ``threshold``."""

    name, key = "VanishingGradient", "vanishing_gradient"
    needs = frozenset({LAYERS})

    def check(self, history: Sequence[Observation], loss: str) -> str | None:
        low = [(s, s.mean_abs_gradient) for s in history[-1].layers
               if s.mean_abs_gradient is not None and s.mean_abs_gradient < self.settings.threshold]
        if not low:
            return None
        return "; ".join(f"layer {s.layer} ({s.units} units): mean |gradient| {g:.2e}" for s, g in low) \
            + f", under {self.settings.threshold:.0e}"


class DeadRelu(Rule[DeadReluRule]):
    """More than ``threshold_layer`` of a hidden layer's ReLUs output zero on every sampled training row."""

    name, key = "DeadRelu", "dead_relu"
    needs = frozenset({LAYERS, RELU})

    def check(self, history: Sequence[Observation], loss: str) -> str | None:
        dead = [s for s in history[-1].layers
                if s.dead_share is not None and s.dead_share > self.settings.threshold_layer]
        if not dead:
            return None
        return "; ".join(f"hidden layer {s.layer}: {round(s.dead_share * s.units)} of {s.units} ReLUs "
                         f"({s.dead_share:.0%}) output zero on every sampled training row"
                         for s in dead if s.dead_share is not None) \
            + f", above {self.settings.threshold_layer:.0%}"


class FeatureImportanceOverweight(Rule[FeatureImportanceOverweightRule]):
    """The ``nfeatures`` most important features hold more than ``threshold`` of the total gain."""

    name, key = "FeatureImportanceOverweight", "feature_importance_overweight"
    needs = frozenset({TREES})

    def check(self, history: Sequence[Observation], loss: str) -> str | None:
        now = history[-1]
        if now.trees is None or not now.trees.gain or now.step < self.settings.start_step:
            return None
        top = list(now.trees.gain.items())[:self.settings.nfeatures]
        share = sum(s for _, s in top)
        if share <= self.settings.threshold:
            return None
        who = f"feature '{top[0][0]}' holds" if len(top) == 1 else \
            "features " + ", ".join(f"'{n}'" for n, _ in top) + " hold"
        return f"{who} {share:.0%} of the total gain, above {self.settings.threshold:.0%}"


class TreeDepth(Rule[TreeDepthRule]):
    """At least ``threshold`` of the inspected trees reached the configured depth or leaf cap."""

    name, key = "TreeDepth", "tree_depth"
    needs = frozenset({TREES})

    def check(self, history: Sequence[Observation], loss: str) -> str | None:
        trees = history[-1].trees
        if trees is None or trees.inspected < self.settings.min_trees:
            return None
        share = trees.at_cap / trees.inspected
        if share < self.settings.threshold:
            return None
        return (f"{share:.0%} of the inspected trees ({trees.at_cap} of {trees.inspected}) reached {trees.cap}, "
                f"at or above {self.settings.threshold:.0%}: the cap limits the trees")


RULES: dict[str, type[Rule[Any]]] = {r.key: r for r in (
    Overfit, Overtraining, LossNotDecreasing, ClassImbalance, VanishingGradient, DeadRelu,
    FeatureImportanceOverweight, TreeDepth)}


def build_rules(rules: DebuggerRules) -> list[Rule[Any]]:
    """Every built-in rule with its settings, in a fixed order (rules that are off included)."""
    return [cls(getattr(rules, key)) for key, cls in RULES.items()]


def rule_key(name: str) -> str:
    """The settings key of a rule given by its SageMaker name (any case) or its key."""
    wanted = name.strip().lower().replace("-", "_")
    for key, cls in RULES.items():
        if wanted in (key, cls.name.lower()):
            return key
    raise InputError(f"unknown Debugger rule '{name}'",
                     hint=f"rules: {', '.join(cls.name for cls in RULES.values())}")


def configure(settings: DebuggerSettings, enabled: bool | None = None,
              items: Sequence[str] = ()) -> DebuggerSettings:
    """``settings`` with the Debugger switched on or off and rules changed by ``NAME=ACTION`` or
    ``NAME.PARAM=VALUE`` items (e.g. ``Overfit=stop``, ``overtraining.patience_validation=5``)."""
    rules = settings.rules.model_dump()
    for item in items:
        target, sep, value = item.partition("=")
        if not sep or not target or not value:
            raise InputError(f"--rule '{item}': expected NAME=ACTION or NAME.PARAM=VALUE, e.g. Overfit=stop")
        name, _, param = target.partition(".")
        key = rule_key(name)
        cls = RULES[key]
        param = param.strip() or "action"
        if param not in rules[key]:
            raise InputError(f"--rule '{item}': rule {cls.name} has no parameter '{param}'",
                             hint=f"it has: {', '.join(rules[key])}")
        if param == "action" and value not in RULE_ACTIONS:
            raise InputError(f"--rule '{item}': unknown action '{value}'", hint=f"actions: {', '.join(RULE_ACTIONS)}")
        try:
            rules[key][param] = json.loads(value)
        except json.JSONDecodeError:
            rules[key][param] = value
        try:
            DebuggerRules.model_validate({key: rules[key]})
        except ValidationError as exc:
            problem = "; ".join(e["msg"] for e in exc.errors())
            raise InputError(f"--rule '{item}': {cls.name}.{param}: {problem}") from None
    return settings.model_copy(update={
        "enabled": settings.enabled if enabled is None else enabled,
        "rules": DebuggerRules.model_validate(rules)})
