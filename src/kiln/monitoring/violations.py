"""A violation: what a monitor found out of bounds, in the shape every output (JSON, HTML, alerts) uses."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

MONITORS = ("data_quality", "data_drift", "model_quality", "bias_drift", "attribution_drift")


@dataclass(frozen=True)
class Violation:
    monitor: str  # one of MONITORS
    feature: str  # the feature, facet or "*" (the whole window)
    metric: str
    baseline: float | str | None  # the baseline's value; None where the metric is a distance from the baseline
    observed: float | str | None
    threshold: float | None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
