"""A challenger and the champion scored on the same held-out rows, with bias by facet and the gate's decision."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kiln.clarify.facets import facets_service, favourable_outcomes, with_facets
from kiln.errors import InputError
from kiln.evaluation.gate import GateDecision, decide
from kiln.progress import Progress, no_progress
from kiln.training.data import TrainingData
from kiln.training.metrics import Metrics, task_metrics
from kiln.training.scoring import output_of, predict_with
from kiln.workspace import Workspace

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class Evaluation:
    rows: int
    threshold: float
    task: str
    classes: tuple[Any, ...]
    metric: str  # the gate's quality metric for the task
    challenger: Metrics
    champion: dict[str, Any] | None  # {"uri", "metrics"} or {"uri", "note"} when it cannot score these rows
    bias: list[dict[str, Any]] = field(default_factory=list)
    decision: GateDecision | None = None
    # The held-out labels and the challenger's probabilities, for curves; not part of the recorded result.
    scores: tuple[Any, Any] | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "threshold": self.threshold, "task": self.task, "gate_metric": self.metric,
                "challenger": self.challenger,
                "champion": self.champion, "bias": self.bias,
                "gate": self.decision.to_dict() if self.decision else None}




def evaluate_candidate(ws: Workspace, data: TrainingData, holdout: "pd.DataFrame", model_uri: str,
                       champion_uri: str | None, threshold: float = 0.5,
                       progress: Progress = no_progress) -> Evaluation:
    """Score the challenger (and the champion, when there is one) on ``holdout``; measure bias; apply the gate."""
    from kiln.clarify.bias import bias_by_facet

    policy = ws.settings.gates
    task = data.task
    scored = predict_with(model_uri, holdout)
    y = data.labels(holdout)
    output = output_of(task, scored)
    challenger = task_metrics(task, y, output, threshold)
    champion: dict[str, Any] | None = None
    if champion_uri:
        try:
            theirs = output_of(task, predict_with(champion_uri, holdout))
            champion = {"uri": champion_uri, "metrics": task_metrics(task, y, theirs, threshold)}
        except KeyError as exc:
            champion = {"uri": champion_uri, "note": f"cannot score these rows as a {task.kind} model: it needs "
                                                     f"or lacks {exc.args[0]}"}
    progress("measuring bias by facet on the held-out rows")
    try:
        _, protected = facets_service(ws, data)
        frame = favourable_outcomes(task, with_facets(ws, data, holdout), data.label, scored["prediction"].to_numpy())
        bias = bias_by_facet(frame, data.label, protected, policy.min_facet_rows)
    except InputError as exc:
        bias = [{"facet": "-", "rows": 0, "metrics": {}, "note": str(exc)}]
    gated = [g for g in bias if "note" not in g]
    decision = decide(policy, task.kind, challenger, (champion or {}).get("metrics"), gated)
    return Evaluation(rows=len(holdout), threshold=threshold, task=task.kind, classes=task.classes,
                      metric=policy.for_task(task.kind).metric,
                      challenger=challenger,
                      champion=champion, bias=bias, decision=decision, scores=(y, output))
