"""Data drift: Evidently's drift preset, per column, between the baseline's reference sample and live rows.

Distances, not p-values: Wasserstein distance (normed by the reference's deviation) for numbers and
Jensen-Shannon distance for categories, as Evidently picks by default for large data. A p-value test on
every one of about 20 columns flags some column in most clean windows; a distance measures how far a
distribution moved, which is what a violation should mean.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kiln.monitoring.violations import Violation

if TYPE_CHECKING:
    import pandas as pd

NUM_METHOD, CAT_METHOD = "wasserstein", "jensenshannon"
METHOD_NAMES = {NUM_METHOD: "wasserstein_distance_normed", CAT_METHOD: "jensen_shannon_distance"}


@dataclass
class DriftResult:
    columns: list[dict[str, Any]]  # {"feature", "type", "method", "score", "threshold", "drifted"}
    rows: int  # rows measured
    sampled_from: int | None  # the rows in the window, when drift was measured on a sample of them
    snapshot: Any  # the Evidently snapshot (HTML report, workspace history)

    @property
    def drifted(self) -> list[str]:
        return [c["feature"] for c in self.columns if c["drifted"]]


def measure_drift(reference: "pd.DataFrame", current: "pd.DataFrame", kinds: dict[str, str], threshold: float,
                  max_rows: int, seed: int = 0) -> DriftResult:
    """Per-column drift of ``current`` from ``reference``; at most ``max_rows`` rows of ``current`` (a sample)."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    usable = [c for c in kinds if c in reference.columns and c in current.columns
              and current[c].notna().any() and reference[c].notna().any()]
    sampled_from = None
    if len(current) > max_rows:
        sampled_from = len(current)
        current = current.sample(n=max_rows, random_state=seed)
    numeric = [c for c in usable if kinds[c] == "numeric"]
    categorical = [c for c in usable if kinds[c] == "categorical"]
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)

    def dataset(frame: "pd.DataFrame") -> Any:
        part = frame[usable].copy()
        for c in numeric:
            part[c] = part[c].astype("float64")
        for c in categorical:
            part[c] = part[c].astype(object).where(part[c].notna(), None)
        return Dataset.from_pandas(part, definition)

    preset = DataDriftPreset(columns=usable, num_method=NUM_METHOD, cat_method=CAT_METHOD, threshold=threshold)
    snapshot = Report([preset]).run(dataset(current), dataset(reference))
    columns = []
    for m in snapshot.dict()["metrics"]:
        config = m["config"]
        if not config["type"].endswith(":ValueDrift"):
            continue
        column, score = config["column"], float(m["value"])
        kind = kinds[column]
        method = NUM_METHOD if kind == "numeric" else CAT_METHOD
        columns.append({"feature": column, "type": kind, "method": METHOD_NAMES[method], "score": round(score, 6),
                        "threshold": threshold, "drifted": score >= threshold})
    return DriftResult(columns=columns, rows=len(current), sampled_from=sampled_from, snapshot=snapshot)


def drift_violations(result: DriftResult, reference: "pd.DataFrame", current: "pd.DataFrame") -> list[Violation]:
    out = []
    for c in result.columns:
        if not c["drifted"]:
            continue
        name = c["feature"]
        if c["type"] == "numeric":
            detail = (f"mean {reference[name].astype('float64').mean():.4g} in the baseline, "
                      f"{current[name].astype('float64').mean():.4g} now")
        else:
            top = reference[name].dropna().astype(str).value_counts(normalize=True)
            now = current[name].dropna().astype(str).value_counts(normalize=True)
            k = top.index[0] if len(top) else "?"
            detail = f"'{k}' was {top.get(k, 0):.1%} of rows, now {now.get(k, 0):.1%}"
        out.append(Violation("data_drift", name, c["method"], None, c["score"], c["threshold"], detail))
    return out
