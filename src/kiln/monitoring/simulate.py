"""Synthetic traffic that drifts halfway: feature rows whose second half has named features shifted.

The shift follows the data generator's drift knob (SHIFT standard deviations of the feature, clipped at 0
for quantities that cannot be negative), applied to feature rows rather than raw events, so any feature
table (a training set's rows, say) can be turned into traffic a monitor should flag.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kiln.errors import InputError

if TYPE_CHECKING:
    import pandas as pd


def drift_halfway(frame: "pd.DataFrame", shifts: dict[str, float], seed: int = 0) -> "pd.DataFrame":
    """``frame`` shuffled, with each feature in ``shifts`` moved by SHIFT deviations in the second half."""
    import numpy as np

    missing = [f for f in shifts if f not in frame.columns]
    if missing:
        raise InputError(f"cannot drift column(s) {', '.join(missing)}: not in the rows "
                         f"(columns: {', '.join(map(str, frame.columns))})")
    out = frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    half = len(out) // 2
    for feature, shift in shifts.items():
        column = out[feature]
        if not np.issubdtype(column.dtype, np.number):
            raise InputError(f"cannot drift '{feature}': it is not numeric")
        values = column.astype("float64").to_numpy().copy()
        std = float(np.nanstd(values)) or 1.0
        moved = values[half:] + shift * std
        values[half:] = np.clip(moved, 0, None) if np.nanmin(values) >= 0 else moved
        out[feature] = values
    return out
