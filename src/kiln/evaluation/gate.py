"""The promotion gate: a policy from settings applied to a challenger's held-out metrics and bias."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from kiln.settings import LOWER_IS_BETTER, GateSettings, TaskGate
from kiln.training.metrics import METRIC_NAMES


@dataclass
class Check:
    name: str
    value: float | None
    limit: str
    passed: bool
    note: str = ""


@dataclass
class GateDecision:
    passed: bool
    checks: list[Check] = field(default_factory=list)

    @property
    def reasons(self) -> list[str]:
        """Why it failed, one line per failed check (empty when it passed)."""
        return [f"{c.name} = {_fmt(c.value)} (limit {c.limit})" + (f": {c.note}" if c.note else "")
                for c in self.checks if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "reasons": self.reasons, "checks": [asdict(c) for c in self.checks]}


def _fmt(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.4f}"


def quality_checks(gate: TaskGate, challenger: float | None, champion: float | None) -> list[Check]:
    """The task's metric against its limit and, when there is a champion, how much worse than it the challenger is."""
    title = METRIC_NAMES.get(gate.metric, gate.metric)
    lower = gate.metric in LOWER_IS_BETTER
    checks = [Check(f"test {title}", challenger, f"{'<=' if lower else '>='} {gate.limit}",
                    challenger is not None and (challenger <= gate.limit if lower else challenger >= gate.limit))]
    if champion is not None:
        worse = None if challenger is None else (challenger - champion if lower else champion - challenger)
        checks.append(Check(f"{title} {'rise' if lower else 'drop'} against the champion", worse,
                            f"<= {gate.max_drop}", worse is not None and worse <= gate.max_drop,
                            note=f"champion {_fmt(champion)}, challenger {_fmt(challenger)}"))
    return checks


def decide(policy: GateSettings, task: str, challenger: dict[str, float | None],
           champion: dict[str, float | None] | None, bias: list[dict[str, Any]]) -> GateDecision:
    """Every check of the policy for a ``task`` model's held-out metrics; the gate passes only when all pass.

    ``bias`` holds, per facet group with enough rows, {"facet": "gender=female", "rows": n, "metrics": {name: value}}.
    """
    gate = policy.for_task(task)
    checks = quality_checks(gate, challenger.get(gate.metric), None if champion is None else champion.get(gate.metric))
    for group in bias:
        metrics = group["metrics"]
        for name, limit in policy.max_abs_bias.items():
            value = metrics.get(name)
            if value is None:
                continue  # undefined for this group (an empty count): reported with the bias results, not gated
            checks.append(Check(f"{name} for {group['facet']}", value, f"|x| <= {limit}", abs(value) <= limit))
        di = metrics.get("DI")
        if policy.min_di is not None and di is not None:
            checks.append(Check(f"DI for {group['facet']}", di, f"in [{policy.min_di}, {1 / policy.min_di:.3g}]",
                                policy.min_di <= di <= 1 / policy.min_di))
    return GateDecision(passed=all(c.passed for c in checks), checks=checks)
