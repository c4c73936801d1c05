"""Per-feature statistics of a frame: what a baseline records and what constraint checks compare against."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
HISTOGRAM_BINS = 10


def feature_kinds(frame: "pd.DataFrame", features: list[str]) -> dict[str, str]:
    """name -> "numeric" or "categorical", from the column's dtype (bools count as categories)."""
    import pandas as pd

    return {f: "numeric" if pd.api.types.is_numeric_dtype(frame[f]) and not pd.api.types.is_bool_dtype(frame[f])
            else "categorical" for f in features}


def feature_statistics(frame: "pd.DataFrame", kinds: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Type, missing share, and range and quantiles (numbers) or categories and their shares (categories)."""
    import numpy as np

    stats: dict[str, dict[str, Any]] = {}
    for name, kind in kinds.items():
        column = frame[name]
        entry: dict[str, Any] = {"type": kind, "dtype": str(column.dtype),
                                 "missing_share": float(column.isna().mean()) if len(column) else 0.0}
        present = column.dropna()
        if kind == "numeric" and len(present):
            values = present.astype("float64").to_numpy()
            counts, edges = np.histogram(values, bins=HISTOGRAM_BINS)
            entry.update(min=float(values.min()), max=float(values.max()), mean=float(values.mean()),
                         std=float(values.std()),
                         quantiles={f"p{int(q * 100):02d}": float(v)
                                    for q, v in zip(QUANTILES, np.quantile(values, QUANTILES))},
                         histogram={"edges": edges.round(6).tolist(), "counts": counts.tolist()})
        elif kind == "categorical":
            shares = present.astype(str).value_counts(normalize=True)
            entry.update(categories=sorted(shares.index.tolist()),
                         shares={str(k): round(float(v), 6) for k, v in shares.items()})
        stats[name] = entry
    return stats
