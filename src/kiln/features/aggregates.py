"""Windowed aggregates of events: per entity and active day, over the last 7 and 30 days."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from kiln.features.definitions import ACTIVITY_FEATURES

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

WINDOWS = (7, 30)
HISTORY_DAYS = max(WINDOWS) - 1  # days before a day that its longest window reaches back


def activity(events: "pd.DataFrame", entities: "pd.DataFrame", key: str, emit_days: "pd.DatetimeIndex | None" = None) -> "pd.DataFrame":
    """One row per (entity, day with events): aggregates over the windows ending that day.

    Rows are stamped at the end of their day (the next midnight, UTC): a label at midnight sees
    the previous day's aggregates and nothing later. ``emit_days`` limits which days get rows
    (the others only feed the windows).
    """
    import numpy as np
    import pandas as pd

    columns = [key, "event_timestamp", *[n for n, _, _ in ACTIVITY_FEATURES]]
    if events.empty:
        return pd.DataFrame(columns=columns)
    ev = events.assign(day=events["event_timestamp"].dt.floor("D"))
    daily = ev.groupby([key, "day"]).agg(
        usage_sum=("usage_minutes", "sum"), usage_n=("usage_minutes", "count"),
        data_sum=("data_gb", "sum"), data_n=("data_gb", "count"),
        support=("support_calls", "sum"), delay=("payment_delay_days", "max"),
        dropped=("dropped_calls", "sum"), events=("event_timestamp", "size"),
    )
    ids = daily.index.get_level_values(0).unique()
    first, last = daily.index.get_level_values(1).min(), daily.index.get_level_values(1).max()
    days = pd.date_range(first, last, freq="D")
    full = pd.MultiIndex.from_product([ids, days], names=[key, "day"])
    dense = daily.reindex(full)
    n_ids, n_days = len(ids), len(days)

    def grid(col: str, fill: float) -> "np.ndarray":
        return cast("np.ndarray", dense[col].astype("float64").fillna(fill).to_numpy().reshape(n_ids, n_days))

    sums = {c: grid(c, 0.0) for c in ("usage_sum", "usage_n", "data_sum", "data_n", "support", "dropped")}
    active = (grid("events", 0.0) > 0).astype("float64")
    delay = grid("delay", -np.inf)
    out: dict[str, "np.ndarray"] = {}
    for w in WINDOWS:
        s = {c: _window_sum(m, w) for c, m in sums.items()}
        with np.errstate(invalid="ignore", divide="ignore"):
            out[f"usage_minutes_{w}d_mean"] = np.where(s["usage_n"] > 0, s["usage_sum"] / s["usage_n"], np.nan)
            out[f"data_gb_{w}d_mean"] = np.where(s["data_n"] > 0, s["data_sum"] / s["data_n"], np.nan)
        out[f"support_calls_{w}d"] = s["support"]
        mx = _window_max(delay, w)
        out[f"payment_delay_days_{w}d_max"] = np.where(np.isfinite(mx), mx, np.nan)
    out["dropped_calls_30d"] = _window_sum(sums["dropped"], 30)
    out["active_days_30d"] = _window_sum(active, 30)
    with np.errstate(invalid="ignore", divide="ignore"):
        m7, m30 = out["usage_minutes_7d_mean"], out["usage_minutes_30d_mean"]
        out["usage_trend_7d_vs_30d"] = np.where(m30 > 0, m7 / m30 - 1.0, np.nan)

    frame = pd.DataFrame({name: values.reshape(-1) for name, values in out.items()}, index=full)
    frame = frame[active.reshape(-1) > 0].reset_index()
    if emit_days is not None:
        frame = frame[frame["day"].isin(emit_days)]
    signup = entities.set_index(key)["signup_date"] if "signup_date" in entities else None
    frame["event_timestamp"] = frame["day"] + pd.Timedelta(days=1)
    if signup is not None:
        frame["tenure_days"] = (frame["event_timestamp"] - frame[key].map(signup)).dt.days
    else:
        frame["tenure_days"] = np.nan
    for name, ftype, _ in ACTIVITY_FEATURES:
        frame[name] = frame[name].round(0).astype("Int64") if ftype == "Int64" else frame[name].astype("float64")
    return frame[columns].reset_index(drop=True)


def _window_sum(m: "np.ndarray", w: int) -> "np.ndarray":
    return cast("np.ndarray", _window(m, w, 0.0).sum(axis=-1))


def _window_max(m: "np.ndarray", w: int) -> "np.ndarray":
    import numpy as np

    return cast("np.ndarray", _window(m, w, -np.inf).max(axis=-1))


def _window(m: "np.ndarray", w: int, fill: float) -> "np.ndarray":
    """For each day, a view of the ``w`` days ending there (days before the first are ``fill``)."""
    import numpy as np
    from numpy.lib.stride_tricks import sliding_window_view

    padded = np.pad(m, ((0, 0), (w - 1, 0)), constant_values=fill)
    return sliding_window_view(padded, w, axis=1)
