"""Ray's HyperBandScheduler, changed so that a paused trial is never left waiting in a settled bracket.

Ray pauses a trial that reaches its bracket's milestone before the others. When the last of the others
reaches it while the paused trial is still saving (or finishes on its own), Ray settles the bracket without
the paused trial, which then waits for ever, and the tuning job never ends (seen on two busy cores). Here a
bracket whose live trials are all paused is settled again: its trials stopped if it is done, halved if not.
"""

from __future__ import annotations

from typing import Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import HyperBandScheduler


class SettlingHyperBand(HyperBandScheduler):
    def choose_trial_to_run(self, tune_controller: Any) -> Trial | None:
        for band in self._hyperbands:
            for bracket in band:
                live = bracket.current_trials() if bracket is not None else []
                if not live or not all(t.status == Trial.PAUSED and not t.is_saving
                                       and t not in bracket.trials_to_unpause for t in live):
                    continue
                if bracket.finished():
                    bracket.cleanup_full(tune_controller)
                elif bracket.cur_iter_done():
                    self._process_bracket(tune_controller, bracket)
        return super().choose_trial_to_run(tune_controller)
