"""Model inputs made straight from the churn generator (events aggregated as ingestion does, no feature store),
so drift tests can draw many independent windows quickly."""

from __future__ import annotations

from datetime import date

import pandas as pd

from kiln.data.generate import Drift, GenerateOptions, LabelBias, generate_churn
from kiln.features.aggregates import activity

END = date(2026, 10, 1)
PROFILE = ["contract", "payment_method", "plan", "monthly_charges"]


def feature_rows(seed: int, drift: tuple[Drift, ...] = (), customers: int = 5000, days: int = 90,
                 from_day: int = 45, rows: int = 5000) -> pd.DataFrame:
    """``rows`` model-input rows sampled from days ``from_day``.. of a generated dataset (the 30-day windows full)."""
    frames, _ = generate_churn(GenerateOptions(customers=customers, days=days, seed=seed, end=END, drift=drift))
    entities = frames["entities"]
    act = activity(frames["events"], entities, "customer_id")
    act = act[act["event_timestamp"] >= act["event_timestamp"].min() + pd.Timedelta(days=from_day)]
    out = act.merge(entities[["customer_id", *PROFILE]], on="customer_id")
    out["usage_minutes_per_dollar"] = out["usage_minutes_30d_mean"] / out["monthly_charges"]
    return out.sample(n=min(rows, len(out)), random_state=seed).reset_index(drop=True)


def labelled_rows(seed: int, bias: tuple[LabelBias, ...] = (), customers: int = 1500,
                  noise: float = 0.15) -> pd.DataFrame:
    """Churn labels with gender, and the predictions of a model that knows the unbiased labels but for ``noise``.

    With ``bias`` the labels move and the predictions do not: the model has not seen the shift.
    """
    import numpy as np

    opts = dict(customers=customers, days=120, seed=seed, end=END)
    clean, _ = generate_churn(GenerateOptions(**opts))
    shifted, _ = generate_churn(GenerateOptions(**opts, label_bias=bias)) if bias else (clean, None)
    rows = shifted["labels"].merge(shifted["entities"][["customer_id", "gender"]], on="customer_id")
    truth = clean["labels"]["churned"].to_numpy()
    flip = np.random.default_rng(seed).random(len(truth)) < noise
    rows["label"] = rows["churned"].astype(int)
    rows["__kiln_predicted"] = np.where(flip, 1 - truth, truth).astype(int)
    return rows
