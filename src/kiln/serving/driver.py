"""Runs a rollout inside the endpoint's front: shifts shares as the policy says, rolls back on an alarm.

The decisions are kiln.serving.rollout's (the same the cluster controller makes); this applies them to the
router's shares and records the state where `kiln endpoint status` reads it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from kiln.files import write_text_atomic
from kiln.serving.errors import Conflict
from kiln.serving.rollout import Rollout, RolloutReport, advance, force, hold, start
from kiln.serving.router import Route, Router
from kiln.serving.spec import Guardrails, Policy


class RolloutDriver:
    """The front's one rollout at a time: begun, ticked, forced; refusals are Conflict errors (409)."""

    def __init__(self, router: Router, policy: Policy, guardrails: Guardrails, state_path: Path | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.router, self.policy, self.guardrails = router, policy, guardrails
        self.state_path, self.clock = state_path, clock
        self.rollout: Rollout | None = None
        self.base_share = 0.0
        self.candidate_url = ""

    def begin(self, variant: str, candidate: str, url: str, policy: Policy | None = None) -> Rollout:
        """The candidate (at ``url``) starts taking part of ``variant``'s share."""
        st = self.router.state
        if self.rollout is not None and not self.rollout.done:
            raise Conflict(f"a rollout of {self.rollout.candidate} is under way; promote or roll it back first")
        if variant not in st.variants:
            raise Conflict(f"no production variant '{variant}'; variants: {', '.join(st.variants)}")
        self.base_share, self.candidate_url = st.shares[variant], url
        st.variants[candidate] = Route(candidate, url)
        self.rollout = start(variant, candidate, policy or self.policy, self.guardrails, self.clock())
        self._apply()
        return self.rollout

    def tick(self) -> None:
        """Judge the candidate on its answers since the last change; apply what the policy says next."""
        r = self.rollout
        if r is None or r.done:
            return
        stats = {n: self.router.windows.stats(n, r.since) for n in (r.stable, r.candidate)}
        nxt = advance(r, stats, self.clock())
        if nxt is not r:
            self.rollout = nxt
            self._apply()

    def force(self, action: str, reason: str) -> Rollout:
        """Promote or roll back now (`kiln endpoint promote|rollback`)."""
        r = self.rollout
        if r is None or r.done:
            raise Conflict("no rollout is under way")
        self.rollout = force(r, action, reason, self.clock())
        self._apply()
        return self.rollout

    def hold(self, pause: bool, reason: str) -> Rollout:
        """Pause the rollout where it is, or resume it (`kiln endpoint pause|resume`)."""
        r = self.rollout
        if r is None or r.done:
            raise Conflict("no rollout is under way")
        if r.paused == pause:
            raise Conflict(f"the rollout of {r.candidate} is {'already paused' if pause else 'not paused'}")
        self.rollout = hold(r, pause, reason, self.clock())
        self._apply()
        return self.rollout

    def _apply(self) -> None:
        r, st = self.rollout, self.router.state
        if r is None:
            return
        shares = dict(st.shares)
        if r.phase == "promoted":
            # The variant keeps its name and now points at the candidate's server.
            st.variants[r.stable] = Route(r.stable, self.candidate_url)
            st.variants.pop(r.candidate, None)
            shares.pop(r.candidate, None)
            shares[r.stable] = self.base_share
        elif r.phase == "rolled-back":
            st.variants.pop(r.candidate, None)
            shares.pop(r.candidate, None)
            shares[r.stable] = self.base_share
        else:
            shares[r.stable] = self.base_share * (1 - r.share)
            shares[r.candidate] = self.base_share * r.share
        st.shares = shares
        if self.state_path is not None:
            write_text_atomic(self.state_path, json.dumps(self._report(r).to_dict(), indent=2))

    def describe(self) -> RolloutReport | None:
        """The rollout under way or last run, or None before the first."""
        return self._report(self.rollout) if self.rollout is not None else None

    def _report(self, r: Rollout) -> RolloutReport:
        return RolloutReport(stable=r.stable, candidate=r.candidate, candidate_url=self.candidate_url, phase=r.phase,
                             share=r.share, reason=r.reason, policy=r.policy,
                             history=[dict(h, at=round(h["at"], 3)) for h in r.history], done=r.done,
                             updated=time.time(), paused=r.paused)
