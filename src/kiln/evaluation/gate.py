"""The promotion gate: a policy from settings applied to a challenger's held-out metrics and bias."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from kiln.settings import GateSettings


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


def decide(policy: GateSettings, challenger_auc: float | None, champion_auc: float | None,
           bias: list[dict[str, Any]]) -> GateDecision:
    """Every check of the policy; the gate passes only when all of them pass.

    ``bias`` holds, per facet group with enough rows, {"facet": "gender=female", "rows": n, "metrics": {name: value}}.
    """
    checks = [Check("test AUC", challenger_auc, f">= {policy.min_auc}",
                    challenger_auc is not None and challenger_auc >= policy.min_auc)]
    if champion_auc is not None:
        drop = None if challenger_auc is None else champion_auc - challenger_auc
        checks.append(Check("AUC drop against the champion", drop, f"<= {policy.max_auc_drop}",
                            drop is not None and drop <= policy.max_auc_drop,
                            note=f"champion {_fmt(champion_auc)}, challenger {_fmt(challenger_auc)}"))
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
