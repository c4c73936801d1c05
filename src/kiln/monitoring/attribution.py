"""Attribution drift: the SHAP global ranking of live rows against the baseline's, scored by NDCG.

As SageMaker defines it: with F the baseline attributions and x_1..x_n the features ordered by their live
attributions, DCG = sum_i F(x_i) / log2(i + 1); iDCG is the same sum in the baseline's own order; NDCG =
DCG / iDCG. 1 means the same ranking; below the threshold (0.9 by default) is drift.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from kiln.clarify.explain import load_predictor, shap_values
from kiln.errors import InputError

if TYPE_CHECKING:
    import pandas as pd


def ndcg(baseline: dict[str, float], live: dict[str, float]) -> float:
    """NDCG of the live ranking, weighted by the baseline's attributions (features of the baseline only)."""
    features = list(baseline)
    missing = [f for f in features if f not in live]
    if missing:
        raise InputError(f"no live attribution for feature(s) {', '.join(missing)}")
    ideal = sorted(features, key=lambda f: -baseline[f])
    observed = sorted(features, key=lambda f: -live[f])

    def dcg(order: list[str]) -> float:
        return sum(baseline[f] / math.log2(i + 2) for i, f in enumerate(order))

    best = dcg(ideal)
    return dcg(observed) / best if best > 0 else 1.0


def global_ranking(model_uri: str, rows: "pd.DataFrame", seed: int = 7) -> dict[str, Any]:
    """Mean |SHAP| per feature over ``rows`` (probability scale), most important first."""
    import numpy as np

    predictor = load_predictor(model_uri)
    values, _, explainer = shap_values(predictor, rows[predictor.encoder.order], seed)
    mean_abs = np.abs(values).mean(axis=0)
    order = np.argsort(-mean_abs)
    ranking = [{"feature": predictor.encoder.order[i], "mean_abs_shap": float(mean_abs[i]), "rank": r + 1}
               for r, i in enumerate(order)]
    return {"explainer": explainer, "rows": len(rows), "ranking": ranking}


def importances(attribution: dict[str, Any]) -> dict[str, float]:
    return {r["feature"]: r["mean_abs_shap"] for r in attribution["ranking"]}
