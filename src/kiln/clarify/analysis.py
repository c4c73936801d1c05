"""`kiln clarify bias`: pre-training bias of a training set's labels and post-training bias of a model's predictions."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln import tracking
from kiln.clarify.facets import with_facets
from kiln.errors import InputError
from kiln.progress import Progress, no_progress
from kiln.registry.versions import get_version
from kiln.training.data import load_training_set
from kiln.training.scoring import PREDICTED, predict_with
from kiln.training.split import split
from kiln.workspace import Workspace

if TYPE_CHECKING:
    from kiln.clarify.bias import BiasMetric


@dataclass
class BiasReport:
    """Bias metrics of one facet: pre-training on the training set's labels; with a model, post-training on its
    predictions for its held-out rows."""

    facet: str
    group: str | None
    training_set: str
    label: str
    rows: int
    pre_training: list[BiasMetric]
    model: str | None = None
    holdout_rows: int | None = None
    post_training: list[BiasMetric] = field(default_factory=list)
    report: str = ""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.model is None:
            for key in ("model", "holdout_rows", "post_training"):
                del data[key]
        return data


def bias_report(ws: Workspace, facet_text: str, training_set: Path | None = None, model_ref: str | None = None,
                group: str | None = None, progress: Progress = no_progress) -> BiasReport:
    """Metrics for facet d = ``facet_text``; with a model, post-training metrics on its held-out rows too."""
    from kiln.clarify.bias import parse_facet, post_training, pre_training

    facet = parse_facet(facet_text)
    info = get_version(ws, model_ref) if model_ref else None
    if training_set is None:
        if info is None:
            raise InputError("give --training-set, --model, or both")
        training_set = Path(info.tags.get("kiln.training_set", ""))
    data = load_training_set(training_set)
    progress(f"reading facets for {len(data.frame)} rows")
    frame = with_facets(ws, data, data.frame)
    result = BiasReport(facet=str(facet), group=group, training_set=str(data.path), label=data.label, rows=len(frame),
                        pre_training=pre_training(frame, data.label, facet, group))
    if info is not None:
        holdout = split(data, int(info.tags.get("kiln.seed", "7"))).test
        scored = with_facets(ws, data, holdout)
        scored[PREDICTED] = predict_with(f"models:/{info.name}/{info.version}", holdout)["prediction"].to_numpy()
        result.model = f"{info.name}/{info.version}"
        result.holdout_rows = len(holdout)
        result.post_training = post_training(scored, data.label, PREDICTED, facet, group)
    out = ws.folder("reports") / "bias"
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{facet.column}-{'_'.join(map(str, facet.values))}" + (f"-{info.name}-v{info.version}" if info else "")
    path = out / f"{stem}.json"
    written = result.to_dict()
    del written["report"]
    path.write_text(json.dumps(written, indent=2, default=str) + "\n")
    result.report = str(path)
    if info is not None and info.run_id:
        tracking.client(ws).log_dict(info.run_id, result.to_dict(), f"bias/{stem}.json")
    return result
