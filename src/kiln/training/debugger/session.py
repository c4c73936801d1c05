"""A Debugger session: the rules of one training (or tuning trial), its observations, findings and profile."""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any

from kiln.settings import DebuggerSettings
from kiln.training.debugger.mlp_probe import MlpProbe
from kiln.training.debugger.observation import Finding, LayerStats, Observation, TreeStats
from kiln.training.debugger.probe import OutputProbe, Probe
from kiln.training.debugger.profiler import Profiler, ProfileSummary
from kiln.training.debugger.rule import Rule
from kiln.training.debugger.rules import build_rules
from kiln.training.debugger.tree_probe import LgbmProbe, XgbProbe
from kiln.training.family import Learner
from kiln.training.lgbm import LgbmLearner
from kiln.training.metrics import Metrics
from kiln.training.mlp import MlpLearner
from kiln.training.xgb import XgbLearner

if TYPE_CHECKING:
    from kiln.training.prepare import Prepared


def probe_for(learner: Learner, prep: "Prepared", settings: DebuggerSettings) -> Probe:
    """The probe of the learner's family; any other learner is measured through its outputs."""
    names = prep.encoder.output_names
    if isinstance(learner, LgbmLearner):
        return LgbmProbe(learner, prep, names, settings.sample_rows)
    if isinstance(learner, XgbLearner):
        return XgbProbe(learner, prep, names, settings.sample_rows)
    if isinstance(learner, MlpLearner):
        return MlpProbe(learner, prep, settings.sample_rows)
    return OutputProbe(prep, settings.sample_rows)


class Debugger:
    """Evaluates the rules after every step and profiles the process; ``begin``, ``after_step`` and ``end`` are
    called by the training loop, which stops when ``after_step`` answers True (a rule whose action is stop fired).

    A session's observations and findings can be carried over a checkpoint (``state``/``restore``).
    """

    def __init__(self, settings: DebuggerSettings | None = None, *, profile: bool = True, alerts: bool = True) -> None:
        """``alerts=False`` evaluates only the rules whose action is stop: for a training whose findings nobody
        reads, only their effect counts."""
        self.settings = settings or DebuggerSettings()
        self.alerts = alerts
        self.rules: list[Rule[Any]] = build_rules(self.settings.rules)
        self.active: list[Rule[Any]] = []
        self.history: list[Observation] = []
        self.findings: list[Finding] = []
        self.stopped: Finding | None = None
        self.family = ""
        self.task = ""
        self.loss = ""
        self.profiler = Profiler(self.settings.profiler_interval) if profile else None
        self.profile: ProfileSummary | None = None
        self._probe: Probe | None = None
        self._looked = self._internals = False
        self.seconds = 0.0  # spent in begin, after_step and end: the Debugger's own cost on the training's thread

    def begin(self, family: str, learner: Learner, prep: "Prepared") -> bool:
        """Before the first step: pick the rules that apply, check the labels, start the profiler. True when a
        rule checked here stops the training (it then ends after its first step)."""
        started = time.perf_counter()
        try:
            return self._begin(family, learner, prep)
        finally:
            self.seconds += time.perf_counter() - started

    def _begin(self, family: str, learner: Learner, prep: "Prepared") -> bool:
        self.family, self.task = family, prep.task.kind
        self._probe = probe_for(learner, prep, self.settings)
        self.loss = self._probe.loss
        self.active = [r for r in self.rules if (r.action == "stop" or (r.action == "alert" and self.alerts))
                       and r.applies(prep.task, self._probe.shows)]
        self._internals = any(r.needs for r in self.active)  # else no look at the model's internals is needed
        if not self.history:  # a restored session checked the labels before its checkpoint
            for rule in self.active:
                message = rule.at_start(prep.task, prep.y["train"])
                if message is not None:
                    self._fire(rule, 0, message)
        if self.profiler is not None:
            self.profiler.start()
        return self.stopped is not None

    def _fire(self, rule: Rule[Any], step: int, message: str, stops: bool = True) -> None:
        finding = Finding(rule=rule.name, step=step, action=rule.action, message=message)
        self.findings.append(finding)
        if stops and rule.action == "stop" and self.stopped is None:
            self.stopped = finding

    def _evaluate(self, stops: bool) -> None:
        fired = {f.rule for f in self.findings}
        for rule in self.active:
            if rule.name not in fired:
                message = rule.check(self.history, self.loss)
                if message is not None:
                    self._fire(rule, self.history[-1].step, message, stops)

    def after_step(self, step: int, learner: Learner, last: bool = False, valid: Metrics | None = None) -> bool:
        """Observe the learner after ``step`` and evaluate the rules; True: stop the training here. Its internals
        are looked at every ``model_every`` steps and at the ``last``. ``valid``: the task's metrics of every
        validation row, when the caller has them (their log-loss or RMSE is then the validation loss)."""
        assert self._probe is not None, "begin() comes first"
        started = time.perf_counter()
        self._looked = self._internals and (last or step % self.settings.model_every == 0)
        known = valid.get("log_loss" if self.task != "regression" else "rmse") if valid else None
        self.history.append(self._probe.observe(learner, step, self._looked, known))
        self._evaluate(stops=True)
        self.seconds += time.perf_counter() - started
        return self.stopped is not None

    def end(self, learner: Learner) -> None:
        """After the last step: a look at the model's internals if that step had none, and the profile."""
        started = time.perf_counter()
        if self._probe is not None and self.history and self._internals and not self._looked:
            now = self.history[-1]
            self.history[-1] = self._probe.observe(learner, now.step, True, now.valid_loss)
            self._evaluate(stops=False)  # the training is over: a stop rule firing now stops nothing
        if self.profiler is not None:
            self.profile = self.profiler.stop()
        self.seconds += time.perf_counter() - started

    @property
    def cost_seconds(self) -> float:
        """The Debugger's own cost: its calls on the training's thread and its profiler thread's CPU time."""
        return self.seconds + (self.profile.cpu_seconds if self.profile else 0.0)

    @property
    def steps(self) -> int:
        """The steps observed: the training's length, or where a rule stopped it."""
        return self.history[-1].step if self.history else 0

    def state(self) -> dict[str, Any]:
        """Observations (losses and the newest internals) and findings, as JSON for a checkpoint."""
        return {"history": [dataclasses.asdict(o) for o in self.history],
                "findings": [dataclasses.asdict(f) for f in self.findings],
                "stopped": dataclasses.asdict(self.stopped) if self.stopped else None}

    def restore(self, state: dict[str, Any]) -> None:
        """Carry on from ``state()`` of an earlier process; ``begin`` comes after."""
        self.history = [_observation(o) for o in state.get("history", [])]
        self.findings = [Finding(**f) for f in state.get("findings", [])]
        self.stopped = Finding(**state["stopped"]) if state.get("stopped") else None

    def to_dict(self) -> dict[str, Any]:
        """The session as findings.json holds it: rules with their parameters, findings, losses and profile."""
        active = {r.name for r in self.active}
        fired = {f.rule for f in self.findings}
        return {
            "family": self.family, "task": self.task, "loss": self.loss, "steps": self.steps,
            "stopped_by": self.stopped.rule if self.stopped else None,
            "stopped_at": self.stopped.step if self.stopped else None,
            "rules": [{"name": r.name, "action": r.action, "params": r.params(), "evaluated": r.name in active,
                       "fired": r.name in fired} for r in self.rules],
            "findings": [dataclasses.asdict(f) for f in self.findings],
            "losses": [{"step": o.step, "train": o.train_loss, "valid": o.valid_loss} for o in self.history],
            "profile": self.profile.to_dict() if self.profile else None,
            "debugger_seconds": round(self.cost_seconds, 4),
            "profile_samples": [[round(s.seconds, 3), round(s.cpu_percent, 1), round(s.rss_mb, 1)]
                                for s in (self.profiler.samples if self.profiler else [])],
        }


def _observation(data: dict[str, Any]) -> Observation:
    trees = data.get("trees")
    return Observation(step=data["step"], train_loss=data["train_loss"], valid_loss=data["valid_loss"],
                       layers=tuple(LayerStats(**s) for s in data.get("layers", ())),
                       trees=TreeStats(**trees) if trees else None)
