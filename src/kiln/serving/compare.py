"""Shadow test results: production and shadow answers to the same captured requests, side by side."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from kiln.errors import InputError
from kiln.serving.capture import read_capture

Side = Literal["production", "shadow"]


@dataclass(frozen=True)
class Latency:
    """One side's latency over the compared requests."""

    p50_ms: float
    p99_ms: float


@dataclass(frozen=True)
class ShadowComparison:
    """Production against shadow on the requests both answered (`kiln endpoint compare`)."""

    endpoint: str
    requests: int  # requests with both a production and a shadow answer
    rows: int  # rows of those whose answers both sides gave as Kiln answers of the same length
    production_variants: list[str]
    shadow_variant: str
    label_agreement: float | None  # share of rows with the same predicted class; None for numbers or no rows
    score_mean_abs_diff: float | None  # of the probability (classification) or the predicted value (regression)
    score_max_abs_diff: float | None
    server_errors: dict[Side, int]  # 5xx answers per side
    latency: dict[Side, Latency]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _scores(response: Any) -> list[tuple[float, Any]] | None:
    """(score, prediction) per row of a V1 or V2 answer: the score is the probability of a classifier's answer, the
    predicted number of a regression's; None when it is not a Kiln answer."""
    if not isinstance(response, dict):
        return None
    try:
        if "predictions" in response:
            rows = response["predictions"]
            return [(float(p.get("probability", p["prediction"])), p["prediction"]) for p in rows]
        outputs: dict[Any, Any] = {o.get("name"): o.get("data") for o in response.get("outputs", [])
                                   if isinstance(o, dict)}
        if "prediction" in outputs:
            scores = outputs.get("probability", outputs["prediction"])
            return [(float(p), y) for p, y in zip(scores, outputs["prediction"])]
    except (TypeError, ValueError, KeyError, AttributeError):
        return None  # another server's answer, not a Kiln one
    return None


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def compare(capture_root: Path | str, endpoint: str, since: datetime | None = None,
            until: datetime | None = None, endpoint_url: str | None = None) -> ShadowComparison:
    """Agreement of predicted classes, score differences and latency of production against shadow."""
    production: dict[str, dict[str, Any]] = {}
    shadow: dict[str, dict[str, Any]] = {}
    for rec in read_capture(capture_root, endpoint, since, until, endpoint_url):
        (shadow if rec["shadow"] else production)[rec["inference_id"]] = rec
    pairs = [(production[i], shadow[i]) for i in production if i in shadow]
    if not pairs:
        raise InputError(f"endpoint {endpoint}: no captured request has both a production and a shadow answer",
                         hint="the endpoint needs a shadow variant and capture on, and traffic through it")
    rows = agree = classes = 0
    diffs: list[float] = []
    failed: dict[Side, int] = {"production": 0, "shadow": 0}
    for prod, shad in pairs:
        a, b = _scores(prod["response"]), _scores(shad["response"])
        failed["production"] += prod["status"] >= 500
        failed["shadow"] += shad["status"] >= 500
        if a is None or b is None or len(a) != len(b):
            continue
        for (pa, ya), (pb, yb) in zip(a, b):
            rows += 1
            if not isinstance(ya, float):  # a class, not a predicted number
                classes += 1
                agree += ya == yb
            diffs.append(abs(pa - pb))
    sides: tuple[tuple[Side, int], ...] = (("production", 0), ("shadow", 1))
    latency = {side: Latency(p50_ms=_percentile([pair[k]["latency_ms"] for pair in pairs], 50),
                             p99_ms=_percentile([pair[k]["latency_ms"] for pair in pairs], 99))
               for side, k in sides}
    return ShadowComparison(
        endpoint=endpoint, requests=len(pairs), rows=rows,
        production_variants=sorted({p["variant"] for p, _ in pairs}),
        shadow_variant=pairs[0][1]["variant"],
        label_agreement=agree / classes if classes else None,
        score_mean_abs_diff=sum(diffs) / len(diffs) if diffs else None,
        score_max_abs_diff=max(diffs) if diffs else None,
        server_errors=failed, latency=latency,
    )
