"""Bias drift: post-training bias metrics by facet on labelled live predictions, against the baseline's.

As SageMaker's bias drift monitor does, the live value's bootstrap confidence interval is compared with
the allowed range (the baseline's value, plus or minus a tolerance): only an interval wholly outside the
range is a violation. A recall difference on a few dozen positives moves by 0.1 by chance alone; a
plain "moved by more than the tolerance" check flags that noise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kiln.errors import InputError
from kiln.monitoring.violations import Violation
from kiln.training.scoring import PREDICTED

if TYPE_CHECKING:
    import pandas as pd

    from kiln.settings import MonitoringSettings

BOOTSTRAP_SAMPLES = 100
CONFIDENCE = 0.95


def _intervals(frame: "pd.DataFrame", column: str, value: Any, metrics: list[str],
               seed: int) -> dict[str, tuple[float, float] | None]:
    """Bootstrap CONFIDENCE intervals of each metric for facet ``column`` = ``value``."""
    import numpy as np

    from kiln.clarify.bias import Facet, post_training

    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {m: [] for m in metrics}
    facet = Facet(column, (value,))
    for _ in range(BOOTSTRAP_SAMPLES):
        sample = frame.iloc[rng.integers(0, len(frame), len(frame))]
        try:
            measured = post_training(sample, "label", PREDICTED, facet)
        except InputError:  # a resample without one of the facets
            continue
        for m in measured:
            if m.name in draws and m.value is not None:
                draws[m.name].append(m.value)
    tail = (1 - CONFIDENCE) / 2 * 100
    return {m: (float(np.percentile(v, tail)), float(np.percentile(v, 100 - tail))) if len(v) >= 20 else None
            for m, v in draws.items()}


def bias_drift(baseline: dict[str, Any], labelled: "pd.DataFrame",
               limits: "MonitoringSettings") -> tuple[list[dict[str, Any]], list[Violation], str]:
    """(per-facet results, violations, note); ``labelled`` has 'label', the predicted label and facet columns."""
    from kiln.clarify.bias import bias_by_facet

    protected = [c for c in baseline.get("protected", []) if c in labelled.columns]
    if not protected:
        return [], [], "no facet values for the labelled rows: give protected columns in the labels file, " \
                       "or an entity key and label time the feature store can look them up by"
    live = bias_by_facet(labelled, "label", protected, limits.min_facet_rows)
    base = {g["facet"]: g for g in baseline.get("facets", [])}
    results, violations = [], []
    tol = limits.bias_tolerance
    for i, group in enumerate(live):
        before = base.get(group["facet"])
        others = len(labelled) - group["rows"]
        judged = before is not None and group["rows"] >= limits.min_facet_rows and others >= limits.min_facet_rows
        entry = {"facet": group["facet"], "rows": group["rows"], "judged": judged, "metrics": {}}
        column, _, value = group["facet"].partition("=")
        ci = _intervals(labelled, column, _typed(labelled[column], value), limits.bias_metrics, seed=i) \
            if judged else {}
        for name in limits.bias_metrics:
            now = group["metrics"].get(name)
            was = before["metrics"].get(name) if before else None
            interval = ci.get(name)
            entry["metrics"][name] = {"baseline": was, "observed": now, "interval": interval}
            if not (judged and now is not None and was is not None and interval is not None):
                continue
            lo, hi = interval
            if lo > was + tol or hi < was - tol:
                violations.append(Violation(
                    "bias_drift", group["facet"], name, round(was, 6), round(now, 6), tol,
                    f"{name} {now:+.3f} (95% interval {lo:+.3f}..{hi:+.3f}) on {group['rows']} labelled rows of "
                    f"{group['facet']}; allowed {was - tol:+.3f}..{was + tol:+.3f}"))
        results.append(entry)
    return results, violations, ""


def _typed(column: "pd.Series", text: str) -> Any:
    """The facet value as the column holds it (bias_by_facet names facets by their text)."""
    for v in column.dropna().unique():
        if str(v) == text:
            return v
    return text
