"""The churn demo data: customers, their daily activity, and churn labels with plausible causes.

How the data is made:

* Each customer has a contract, plan, payment method, charges, tenure and a hidden
  dissatisfaction score. Together they give a 30-day churn probability (short tenure,
  month-to-month contracts, high charges, electronic checks and dissatisfaction raise it).
* A churner's last 30 days show it: usage falls, support calls and payment delays rise.
  Events stop on the day the customer leaves.
* Labels are taken at snapshot days every two weeks: for each customer active then,
  ``churned`` is 1 if they leave within the horizon (30 days by default).

The same seed gives the same values; timestamps are anchored at ``end`` (default: today).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.data.dataset import staged_dataset, write_dataset
from kiln.data.schema import CHURN_SCHEMA, CONTRACTS, EVENT_FEATURES, GENDERS, PAYMENT_METHODS, PLANS
from kiln.errors import InputError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

SNAPSHOT_EVERY_DAYS = 14
MIN_HISTORY_DAYS = 30
BASE_LOGIT = -1.9  # sets the mean churn rate of the labels near 0.21


@dataclass(frozen=True)
class Drift:
    """Shift ``feature`` by ``shift`` standard deviations from ``day`` (0-based) onwards."""

    feature: str
    shift: float
    day: int | None = None

    @property
    def text(self) -> str:
        """As the option takes it: FEATURE=SHIFT[@DAY]."""
        return f"{self.feature}={self.shift:g}" + (f"@{self.day}" if self.day is not None else "")


@dataclass(frozen=True)
class LabelBias:
    """Raise (or lower, if negative) the churn rate of rows where ``facet == value`` by ``delta``."""

    facet: str
    value: str
    delta: float

    @property
    def text(self) -> str:
        """As the option takes it: FACET=VALUE:DELTA."""
        return f"{self.facet}={self.value}:{self.delta:g}"


@dataclass(frozen=True)
class GenerateOptions:
    customers: int = 5000
    days: int = 120
    seed: int = 0
    end: date | None = None
    horizon: int = 30
    drift: tuple[Drift, ...] = field(default_factory=tuple)
    label_bias: tuple[LabelBias, ...] = field(default_factory=tuple)
    missing: float = 0.0

    def check(self) -> None:
        if self.customers < 1:
            raise InputError(f"--customers must be at least 1, got {self.customers}")
        if self.horizon < 1:
            raise InputError(f"--horizon must be at least 1 day, got {self.horizon}")
        if self.days < self.horizon + 1:
            raise InputError(
                f"--days must be at least {self.horizon + 1} (the {self.horizon}-day churn horizon plus one day "
                f"of history), got {self.days}"
            )
        if not 0.0 <= self.missing < 1.0:
            raise InputError(f"--missing must be a share from 0 up to (not including) 1, got {self.missing}")
        today = datetime.now(UTC).date()
        if self.end is not None and self.end > today:
            raise InputError(f"--end {self.end} is in the future; data may not be stamped after today ({today})")
        for d in self.drift:
            if d.feature not in EVENT_FEATURES:
                raise InputError(f"--drift: '{d.feature}' is not an event feature; choose one of {', '.join(EVENT_FEATURES)}")
            if d.day is not None and not 0 <= d.day < self.days:
                raise InputError(f"--drift {d.feature}: day {d.day} is outside the window 0..{self.days - 1}")
        facets = {"gender": GENDERS, "senior_citizen": ["0", "1"], "contract": CONTRACTS,
                  "payment_method": PAYMENT_METHODS, "plan": PLANS}
        for b in self.label_bias:
            if b.facet not in facets:
                raise InputError(f"--label-bias: '{b.facet}' is not a facet; choose one of {', '.join(facets)}")
            if b.value not in facets[b.facet]:
                raise InputError(f"--label-bias {b.facet}: unknown value '{b.value}'; choose one of {', '.join(facets[b.facet])}")
            if not -1.0 < b.delta < 1.0:
                raise InputError(f"--label-bias {b.facet}={b.value}: delta {b.delta} must lie between -1 and 1")


def parse_drift(text: str) -> Drift:
    """``FEATURE=SHIFT[@DAY]``: SHIFT in standard deviations, DAY 0-based (default: mid-window)."""
    m = re.fullmatch(r"\s*([a-z_]+)\s*=\s*([-+]?\d+(?:\.\d+)?)\s*(?:@\s*(\d+))?\s*", text)
    if not m:
        raise InputError(f"--drift '{text}': expected FEATURE=SHIFT[@DAY], e.g. usage_minutes=-1.5@60")
    return Drift(m.group(1), float(m.group(2)), int(m.group(3)) if m.group(3) else None)


def parse_label_bias(text: str) -> LabelBias:
    """``FACET=VALUE:DELTA``, e.g. ``gender=female:0.1`` raises women's churn rate by 10 points."""
    m = re.fullmatch(r"\s*([a-z_]+)\s*=\s*([^:]+?)\s*:\s*([-+]?\d+(?:\.\d+)?)\s*", text)
    if not m:
        raise InputError(f"--label-bias '{text}': expected FACET=VALUE:DELTA, e.g. gender=female:0.1")
    return LabelBias(m.group(1), m.group(2), float(m.group(3)))


@dataclass(frozen=True)
class GeneratedDataset:
    """A churn dataset as generate_dataset wrote it: where, its content hash, and what it holds."""

    path: Path
    content_hash: str
    customers: int
    events: int
    labels: int
    churn_rate: float | None
    window_start: str  # ISO times
    window_end: str


def generate_dataset(opts: GenerateOptions, out: Path, *, overwrite: bool = False) -> GeneratedDataset:
    """Generate the churn dataset into the folder ``out``: written whole or, on any failure, not at all."""
    opts.check()
    with staged_dataset(out, overwrite) as stage:
        frames, stats = generate_churn(opts)
        source = {"generator": "kiln.data.generate", "customers": opts.customers, "days": opts.days,
                  "seed": opts.seed, "end": str(opts.end) if opts.end else None, "horizon": opts.horizon,
                  "drift": [d.text for d in opts.drift], "label_bias": [b.text for b in opts.label_bias],
                  "missing": opts.missing}
        manifest = write_dataset(stage, "churn", CHURN_SCHEMA, frames, source, stats)
    return GeneratedDataset(path=out.resolve(), content_hash=manifest["content_hash"], customers=stats["customers"],
                            events=stats["events"], labels=stats["labels"], churn_rate=stats["churn_rate"],
                            window_start=stats["window_start"], window_end=stats["window_end"])


def generate_churn(opts: GenerateOptions) -> tuple[dict[str, "pd.DataFrame"], dict[str, Any]]:
    """The three tables (entities, events, labels) and summary statistics."""
    import numpy as np

    opts.check()
    rng = np.random.default_rng(opts.seed)
    end = opts.end or datetime.now(UTC).date()
    start = datetime(end.year, end.month, end.day, tzinfo=UTC) - timedelta(days=opts.days)

    cust = _customers(rng, opts.customers, opts.days)
    churn_day = _churn_days(rng, cust, opts.days)
    events = _events(rng, cust, churn_day, opts.days)
    labels = _labels(cust, churn_day, opts.days, opts.horizon)

    for bias in opts.label_bias:
        _apply_label_bias(rng, cust, labels, bias)
    for i, drift in enumerate(opts.drift):
        # A generator of its own per drift: drifting changes no other value of the dataset.
        _apply_drift(np.random.default_rng([opts.seed, 1, i]), events, drift, opts.days)
    masks = _missing_masks(rng, opts.customers, len(events["idx"]), opts.missing) if opts.missing > 0 else {}

    frames = _to_frames(cust, events, labels, start)
    for table in ("entities", "events"):
        frame = frames[table]
        for col in frame.columns.intersection(list(masks)):
            frame[col] = _with_nulls(frame[col], masks[col])
    stats = {
        "customers": int(opts.customers),
        "events": len(frames["events"]),
        "labels": len(frames["labels"]),
        "churn_rate": round(float(frames["labels"]["churned"].mean()), 4) if len(frames["labels"]) else None,
        "window_start": start.isoformat(),
        "window_end": (start + timedelta(days=opts.days)).isoformat(),
    }
    return frames, stats


def _customers(rng: "np.random.Generator", n: int, days: int) -> dict[str, "np.ndarray"]:
    import numpy as np

    # 12% join during the window; the rest have been customers for days to six years.
    joins_in_window = rng.random(n) < 0.12
    tenure = np.where(rng.random(n) < 0.35, rng.exponential(120, n), rng.uniform(0, 2190, n))
    signup_day = np.where(joins_in_window, rng.integers(0, max(1, int(days * 0.8)), n), -np.ceil(tenure)).astype(np.int64)
    tenure_years = np.clip(-signup_day, 0, None) / 365.0
    # Long-standing customers tend to be on longer contracts.
    p_m2m = np.clip(0.70 - 0.08 * tenure_years, 0.25, 0.70)
    u = rng.random(n)
    contract = np.where(u < p_m2m, 0, np.where(u < p_m2m + (1 - p_m2m) * 0.5, 1, 2))
    payment = rng.choice(4, n, p=[0.34, 0.22, 0.22, 0.22])
    plan = rng.choice(3, n, p=[0.4, 0.4, 0.2])
    charges = np.round(np.clip(np.array([25.0, 60.0, 95.0])[plan] + rng.normal(0, 9, n), 10, None), 2)
    return {
        "customer_id": np.arange(1, n + 1, dtype=np.int64),
        "signup_day": signup_day,
        "contract": contract,
        "payment": payment,
        "plan": plan,
        "charges": charges,
        "gender": rng.integers(0, 2, n),
        "senior": (rng.random(n) < 0.16).astype(np.int64),
        "dissatisfaction": rng.normal(0, 1, n),
        "usage_base": rng.gamma(4.0, 12.0, n),
        "data_base": rng.gamma(2.0, 0.3, n) * (1 + plan),
    }


def churn_probability_30d(cust: dict[str, "np.ndarray"]) -> "np.ndarray":
    """The 30-day churn probability each customer's attributes give."""
    import numpy as np

    tenure_days = np.clip(-cust["signup_day"], 0, None)
    logit = (
        BASE_LOGIT
        + 1.2 * (cust["contract"] == 0)
        - 0.9 * (cust["contract"] == 2)
        + 1.0 * np.exp(-tenure_days / 180.0)
        + 0.015 * (cust["charges"] - 60.0)
        + 0.35 * (cust["payment"] == 0)
        + 0.25 * cust["senior"]
        + 0.9 * cust["dissatisfaction"]
    )
    probability: "np.ndarray" = 1.0 / (1.0 + np.exp(-logit))
    return probability


def _churn_days(rng: "np.random.Generator", cust: dict[str, "np.ndarray"], days: int) -> "np.ndarray":
    """The day each customer leaves (first day without service), or ``days`` if not in the window."""
    import numpy as np

    p30 = churn_probability_30d(cust)
    daily = 1.0 - (1.0 - p30) ** (1.0 / 30.0)
    first = np.clip(cust["signup_day"], 0, None) + 1  # nobody leaves on the day they join
    leave = first + rng.geometric(daily) - 1
    churn_day: "np.ndarray" = np.minimum(leave, days).astype(np.int64)
    return churn_day


def _events(rng: "np.random.Generator", cust: dict[str, "np.ndarray"], leave: "np.ndarray", days: int) -> dict[str, "np.ndarray"]:
    import numpy as np

    first = np.clip(cust["signup_day"], 0, None)
    counts = np.clip(leave - first, 0, None)
    idx = np.repeat(np.arange(len(first)), counts)
    # Day numbers: first[i], first[i]+1, ..., leave[i]-1 for each customer i.
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    day = first[idx] + offsets
    churner = leave[idx] < days
    # 0 until 30 days before leaving, then rising to 1 on the last day.
    ramp = np.where(churner, np.clip((day - (leave[idx] - 30)) / 30.0, 0, 1), 0.0)
    unhappy = np.clip(cust["dissatisfaction"][idx], 0, None)
    n = len(idx)
    usage = cust["usage_base"][idx] * (1 - 0.6 * ramp) * (1 - 0.1 * unhappy).clip(0.5) * rng.lognormal(0, 0.35, n)
    data = cust["data_base"][idx] * (1 - 0.5 * ramp) * rng.lognormal(0, 0.5, n)
    support = rng.poisson(0.03 + 0.05 * unhappy + 0.35 * ramp)
    delay = rng.poisson(0.1 + 0.3 * (cust["payment"][idx] == 0) + 2.0 * ramp)
    dropped = rng.poisson(0.05 + 0.1 * ramp)
    return {
        "idx": idx,
        "day": day,
        "seconds": rng.integers(0, 86400, n),
        "usage_minutes": np.round(np.clip(usage, 0, 1440), 2),
        "data_gb": np.round(np.clip(data, 0, 1000), 3),
        "support_calls": support.astype(np.int64),
        "payment_delay_days": delay.astype(np.int64),
        "dropped_calls": dropped.astype(np.int64),
    }


def _labels(cust: dict[str, "np.ndarray"], leave: "np.ndarray", days: int, horizon: int) -> dict[str, "np.ndarray"]:
    import numpy as np

    last = days - horizon
    snapshots = list(range(last, min(MIN_HISTORY_DAYS, last) - 1, -SNAPSHOT_EVERY_DAYS))[::-1]
    idx_parts, day_parts, y_parts = [], [], []
    for s in snapshots:
        active = (cust["signup_day"] < s) & (leave > s)
        ids = np.flatnonzero(active)
        idx_parts.append(ids)
        day_parts.append(np.full(len(ids), s, dtype=np.int64))
        # leave == days means "still a customer when the window ends": not a churn.
        y_parts.append(((leave[ids] <= s + horizon) & (leave[ids] < days)).astype(np.int64))
    return {"idx": np.concatenate(idx_parts), "day": np.concatenate(day_parts), "churned": np.concatenate(y_parts)}


def _facet_values(cust: dict[str, "np.ndarray"], facet: str) -> "np.ndarray":
    import numpy as np

    names = {
        "gender": (cust["gender"], GENDERS),
        "senior_citizen": (cust["senior"], ["0", "1"]),
        "contract": (cust["contract"], CONTRACTS),
        "payment_method": (cust["payment"], PAYMENT_METHODS),
        "plan": (cust["plan"], PLANS),
    }
    codes, values = names[facet]
    named: "np.ndarray" = np.asarray(values, dtype=object)[codes]
    return named


def _apply_label_bias(rng: "np.random.Generator", cust: dict[str, "np.ndarray"], labels: dict[str, "np.ndarray"], bias: LabelBias) -> None:
    """Flip labels in the group so its churn rate moves by ``delta`` in expectation."""
    import numpy as np

    in_group = _facet_values(cust, bias.facet)[labels["idx"]] == bias.value
    y = labels["churned"]
    rate = y[in_group].mean() if in_group.any() else 0.0
    u = rng.random(len(y))
    if bias.delta >= 0:
        q = min(1.0, bias.delta / max(1e-9, 1 - rate))
        flip = in_group & (y == 0) & (u < q)
        y[flip] = 1
    else:
        q = min(1.0, -bias.delta / max(1e-9, rate))
        flip = in_group & (y == 1) & (u < q)
        y[flip] = 0
    labels["churned"] = np.asarray(y)


def _apply_drift(rng: "np.random.Generator", events: dict[str, "np.ndarray"], drift: Drift, days: int) -> None:
    import numpy as np

    day0 = drift.day if drift.day is not None else days // 2
    values = events[drift.feature].astype(np.float64)
    before = values[events["day"] < day0]
    std = float(before.std()) if len(before) > 1 else float(values.std())
    after = events["day"] >= day0
    shifted = values.copy()
    shifted[after] = np.clip(values[after] + drift.shift * std, 0, None)
    if events[drift.feature].dtype.kind == "i":
        # Stochastic rounding keeps the mean shift of a count at shift * std, not a whole step.
        events[drift.feature] = np.floor(shifted + rng.random(len(shifted))).astype(np.int64)
    else:
        events[drift.feature] = np.round(shifted, 3)


def _missing_masks(rng: "np.random.Generator", n_customers: int, n_events: int, rate: float) -> dict[str, "np.ndarray"]:
    """For about ``rate`` of every feature value, True (missing); keys, times and labels never."""
    masks = {c.name: rng.random(n_customers) < rate
             for c in CHURN_SCHEMA.table("entities").columns if c.role in ("feature", "protected")}
    masks.update({name: rng.random(n_events) < rate for name in EVENT_FEATURES})
    return masks


def _to_frames(cust: dict[str, Any], events: dict[str, Any], labels: dict[str, Any], start: datetime) -> dict[str, "pd.DataFrame"]:
    import numpy as np
    import pandas as pd

    t0_us = int(pd.Timestamp(start).value // 1000)
    day_us = 86_400_000_000

    def stamp(micros: "np.ndarray") -> "pd.DatetimeIndex":
        return pd.to_datetime(t0_us + micros, unit="us", utc=True)

    entities = pd.DataFrame({
        "customer_id": cust["customer_id"],
        "signup_date": stamp(cust["signup_day"] * day_us),
        "contract": np.asarray(CONTRACTS, dtype=object)[cust["contract"]],
        "payment_method": np.asarray(PAYMENT_METHODS, dtype=object)[cust["payment"]],
        "plan": np.asarray(PLANS, dtype=object)[cust["plan"]],
        "monthly_charges": cust["charges"],
        "gender": np.asarray(GENDERS, dtype=object)[cust["gender"]],
        "senior_citizen": cust["senior"],
    })
    ev = pd.DataFrame({
        "customer_id": cust["customer_id"][events["idx"]],
        "event_timestamp": stamp(events["day"] * day_us + events["seconds"] * 1_000_000),
        **{f: events[f] for f in EVENT_FEATURES},
    })
    lab = pd.DataFrame({
        "customer_id": cust["customer_id"][labels["idx"]],
        "label_timestamp": stamp(labels["day"] * day_us),
        "churned": labels["churned"],
    })
    ev = ev.sort_values(["event_timestamp", "customer_id"], kind="stable").reset_index(drop=True)
    lab = lab.sort_values(["label_timestamp", "customer_id"], kind="stable").reset_index(drop=True)
    return {"entities": entities, "events": ev, "labels": lab}


def _with_nulls(series: "pd.Series", mask: "np.ndarray") -> "pd.Series":
    if series.dtype.kind == "i":
        series = series.astype("Int64")
    return series.mask(mask)
