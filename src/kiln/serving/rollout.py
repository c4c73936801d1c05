"""Rollout decisions: how much traffic the candidate gets next, and whether the guardrails roll it back.

Pure logic on metric windows and a clock: the local endpoint and the cluster controller both call it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

from kiln.serving.spec import Guardrails, Policy

Phase = Literal["shifting", "baking", "promoted", "rolled-back"]
DONE: tuple[Phase, ...] = ("promoted", "rolled-back")


@dataclass(frozen=True)
class VariantStats:
    """One variant's answers in the window being judged."""

    requests: int
    errors: int = 0
    p99_ms: float | None = None
    custom: float | None = None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class Rollout:
    stable: str
    candidate: str
    policy: Policy
    guardrails: Guardrails
    phase: Phase
    share: float  # the candidate's share of production traffic, 0..1
    since: float  # when the share or phase last changed
    reason: str = ""
    history: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    paused: bool = False  # held where it is: no step and no promotion until resumed (alarms still roll it back)

    @property
    def done(self) -> bool:
        return self.phase in DONE

    def _to(self, now: float, phase: Phase, share: float, reason: str) -> "Rollout":
        entry = {"at": now, "phase": phase, "share": round(share, 4), "reason": reason}
        return replace(self, phase=phase, share=share, since=now, reason=reason, history=(*self.history, entry))


@dataclass(frozen=True)
class RolloutReport:
    """A rollout as the endpoint's front reports it (`/kiln/status`, `kiln endpoint update --json`)."""

    stable: str
    candidate: str
    candidate_url: str
    phase: Phase
    share: float
    reason: str
    policy: Policy
    history: list[dict[str, Any]]  # {"at", "phase", "share", "reason"} per change, "at" on the front's clock
    done: bool
    updated: float  # wall-clock time of the report
    paused: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values, keys in field order."""
        # Not dataclasses.asdict: it would copy the pydantic Policy instead of dumping it.
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        return {**out, "policy": self.policy.model_dump(), "history": [dict(h) for h in self.history]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RolloutReport:
        """The report from its JSON form (what ``to_dict`` gives)."""
        return cls(**{**data, "policy": Policy.model_validate(data["policy"])})


def start(stable: str, candidate: str, policy: Policy, guardrails: Guardrails, now: float) -> Rollout:
    """All at once: the candidate takes everything and bakes. Canary: one step, then bake. Linear: step by step."""
    first = 1.0 if policy.type == "all-at-once" else min(1.0, policy.step_percent / 100)
    phase: Phase = "shifting" if policy.type == "linear" and first < 1.0 else "baking"
    r = Rollout(stable, candidate, policy, guardrails, phase, 0.0, now)
    return r._to(now, phase, first, f"{policy.type}: candidate {candidate} takes {first:.0%}")


def alarm(g: Guardrails, candidate: VariantStats, stable: VariantStats | None) -> str | None:
    """Why the candidate must be rolled back, or None while it behaves (or has too few requests to judge)."""
    if candidate.requests < g.min_requests:
        return None
    if candidate.error_rate > g.max_error_rate:
        return f"error rate {candidate.error_rate:.1%} over {g.max_error_rate:.1%} ({candidate.errors} of " \
               f"{candidate.requests} requests)"
    if candidate.p99_ms is not None:
        if g.max_p99_ms is not None and candidate.p99_ms > g.max_p99_ms:
            return f"p99 {candidate.p99_ms:.1f} ms over the limit of {g.max_p99_ms:.1f} ms"
        if (g.max_p99_increase_ms is not None and stable is not None and stable.p99_ms is not None
                and stable.requests >= g.min_requests and candidate.p99_ms > stable.p99_ms + g.max_p99_increase_ms):
            return f"p99 {candidate.p99_ms:.1f} ms is more than {g.max_p99_increase_ms:.0f} ms over the stable " \
                   f"variant's {stable.p99_ms:.1f} ms"
    if g.custom_metric and candidate.custom is not None and candidate.custom > (g.custom_max or 0.0):
        return f"{g.custom_metric} {candidate.custom:g} over {g.custom_max:g}"
    return None


def advance(r: Rollout, stats: dict[str, VariantStats], now: float) -> Rollout:
    """The next state given each variant's stats since the last change; unchanged while nothing is due."""
    if r.done:
        return r
    candidate = stats.get(r.candidate, VariantStats(0))
    reason = alarm(r.guardrails, candidate, stats.get(r.stable))
    if reason:
        return r._to(now, "rolled-back", 0.0, f"rolled back: {reason}")
    if r.paused:
        return r
    elapsed = now - r.since
    if r.phase == "shifting" and elapsed >= r.policy.interval_seconds:
        share = min(1.0, round(r.share + r.policy.step_percent / 100, 6))  # ten 10% steps make exactly 100%
        return r._to(now, "shifting" if share < 1.0 else "baking", share, f"linear step to {share:.0%}")
    if r.phase == "baking" and elapsed >= r.policy.bake_seconds:
        return r._to(now, "promoted", 1.0, f"baked {r.policy.bake_seconds:g} s without an alarm: promoted")
    return r


def hold(r: Rollout, pause: bool, reason: str, now: float) -> Rollout:
    """Pause the rollout where it is, or resume it: the step interval or the bake starts again at the resume, so time
    spent paused never counts towards a promotion."""
    entry = {"at": now, "phase": r.phase, "share": round(r.share, 4), "reason": reason,
             "paused": pause}
    return replace(r, paused=pause, since=r.since if pause else now, reason=reason, history=(*r.history, entry))


def force(r: Rollout, action: str, reason: str, now: float) -> Rollout:
    """Promote or roll back now, whatever the guardrails would say (`kiln endpoint promote|rollback`)."""
    phase: Phase = "promoted" if action == "promote" else "rolled-back"
    return r._to(now, phase, 1.0 if phase == "promoted" else 0.0, reason)
