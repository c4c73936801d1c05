"""The churn generator keeps its promises: rate, determinism, plausible causes, and each knob."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from kiln.data.generate import (
    Drift,
    GenerateOptions,
    LabelBias,
    generate_churn,
    parse_drift,
    parse_label_bias,
)
from kiln.errors import InputError
from tests.conftest import END

BASE = GenerateOptions(customers=3000, days=120, seed=11, end=END)


@pytest.fixture(scope="module")
def base() -> dict[str, pd.DataFrame]:
    frames, _ = generate_churn(BASE)
    return frames


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_churn_rate_is_realistic(seed: int) -> None:
    _, stats = generate_churn(replace(BASE, seed=seed))
    assert 0.15 <= stats["churn_rate"] <= 0.30


def test_same_seed_same_data_other_seed_other_data(base: dict[str, pd.DataFrame]) -> None:
    again, _ = generate_churn(BASE)
    for name in base:
        pd.testing.assert_frame_equal(base[name], again[name])
    other, _ = generate_churn(replace(BASE, seed=12))
    assert not base["entities"]["monthly_charges"].equals(other["entities"]["monthly_charges"])


def test_timestamps_are_anchored_at_end(base: dict[str, pd.DataFrame]) -> None:
    end = pd.Timestamp(END, tz="UTC")
    assert base["events"]["event_timestamp"].max() < end
    assert base["events"]["event_timestamp"].min() >= end - pd.Timedelta(days=BASE.days)
    assert base["labels"]["label_timestamp"].max() <= end - pd.Timedelta(days=BASE.horizon)


def _labelled(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    merged = frames["labels"].merge(frames["entities"], on="customer_id")
    merged["tenure_days"] = (merged["label_timestamp"] - merged["signup_date"]).dt.days
    return merged


def test_contract_tenure_and_charges_drive_churn(base: dict[str, pd.DataFrame]) -> None:
    m = _labelled(base)
    by_contract = m.groupby("contract")["churned"].mean()
    assert by_contract["month-to-month"] > by_contract["one-year"] > by_contract["two-year"]
    assert m[m.tenure_days < 180]["churned"].mean() > m[m.tenure_days > 730]["churned"].mean() + 0.03
    high = m["monthly_charges"] > m["monthly_charges"].quantile(0.75)
    low = m["monthly_charges"] < m["monthly_charges"].quantile(0.25)
    assert m[high]["churned"].mean() > m[low]["churned"].mean() + 0.03


def _window_means(frames: dict[str, pd.DataFrame], days: int) -> pd.DataFrame:
    """Per label row: mean of each event feature over the `days` before the label time."""
    ev, lab = frames["events"], frames["labels"]
    joined = lab.merge(ev, on="customer_id")
    before = joined[(joined.event_timestamp < joined.label_timestamp)
                    & (joined.event_timestamp >= joined.label_timestamp - pd.Timedelta(days=days))]
    return before.groupby(["customer_id", "label_timestamp", "churned"])[
        ["usage_minutes", "support_calls", "payment_delay_days"]].mean().reset_index()


def test_churners_show_it_before_they_leave(base: dict[str, pd.DataFrame]) -> None:
    w = _window_means(base, 14)
    churners, stayers = w[w.churned == 1], w[w.churned == 0]
    assert churners["support_calls"].mean() > 1.5 * stayers["support_calls"].mean()
    assert churners["payment_delay_days"].mean() > 1.5 * stayers["payment_delay_days"].mean()
    assert churners["usage_minutes"].mean() < 0.95 * stayers["usage_minutes"].mean()


def test_events_stop_when_a_customer_leaves(base: dict[str, pd.DataFrame]) -> None:
    last_event = base["events"].groupby("customer_id")["event_timestamp"].max()
    churned = base["labels"][base["labels"].churned == 1]
    deadline = churned["label_timestamp"] + pd.Timedelta(days=BASE.horizon)
    assert (last_event.loc[churned["customer_id"]].to_numpy() < deadline.to_numpy()).all()


def test_keys_are_unique(base: dict[str, pd.DataFrame]) -> None:
    assert not base["entities"]["customer_id"].duplicated().any()
    assert not base["events"].duplicated(["customer_id", "event_timestamp"]).any()
    assert not base["labels"].duplicated(["customer_id", "label_timestamp"]).any()


@pytest.mark.parametrize("feature,shift", [("usage_minutes", 1.5), ("support_calls", 2.0), ("usage_minutes", -0.5),
                                           ("data_gb", 1.0)])
def test_drift_shifts_the_feature_by_about_shift_stds_from_its_day(base: dict[str, pd.DataFrame], feature: str,
                                                                    shift: float) -> None:
    day = 70
    drifted, _ = generate_churn(replace(BASE, drift=(Drift(feature, shift, day),)))
    start = pd.Timestamp(END, tz="UTC") - pd.Timedelta(days=BASE.days)
    after = base["events"]["event_timestamp"] >= start + pd.Timedelta(days=day)
    before_std = base["events"].loc[~after, feature].std()
    moved = drifted["events"][feature] - base["events"][feature]
    assert (moved[~after] == 0).all(), "values before the drift day must not change"
    # Clipping at zero and rounding counts take a little off a negative or count shift.
    assert moved[after].mean() == pytest.approx(shift * before_std, rel=0.12)
    pd.testing.assert_frame_equal(drifted["labels"], base["labels"])


def test_drift_defaults_to_mid_window(base: dict[str, pd.DataFrame]) -> None:
    drifted, _ = generate_churn(replace(BASE, drift=(Drift("usage_minutes", 1.0),)))
    moved = drifted["events"]["usage_minutes"] != base["events"]["usage_minutes"]
    first_moved = drifted["events"].loc[moved, "event_timestamp"].min()
    start = pd.Timestamp(END, tz="UTC") - pd.Timedelta(days=BASE.days)
    assert first_moved.floor("D") == start + pd.Timedelta(days=BASE.days // 2)


@pytest.mark.parametrize("delta", [0.10, -0.08])
def test_label_bias_moves_one_groups_churn_rate(base: dict[str, pd.DataFrame], delta: float) -> None:
    biased, _ = generate_churn(replace(BASE, label_bias=(LabelBias("gender", "female", delta),)))
    before = _labelled(base).groupby("gender")["churned"].mean()
    after = _labelled(biased).groupby("gender")["churned"].mean()
    assert after["female"] - before["female"] == pytest.approx(delta, abs=0.025)
    assert after["male"] == before["male"]


def test_label_bias_on_senior_citizens(base: dict[str, pd.DataFrame]) -> None:
    biased, _ = generate_churn(replace(BASE, label_bias=(parse_label_bias("senior_citizen=1:0.2"),)))
    before = _labelled(base).groupby("senior_citizen")["churned"].mean()
    after = _labelled(biased).groupby("senior_citizen")["churned"].mean()
    assert after[1] - before[1] == pytest.approx(0.2, abs=0.04)
    assert after[0] == before[0]


def test_missing_rate_empties_about_that_share_of_features_only() -> None:
    frames, _ = generate_churn(replace(BASE, customers=1500, missing=0.1))
    for col in ["usage_minutes", "data_gb", "support_calls", "payment_delay_days", "dropped_calls"]:
        assert frames["events"][col].isna().mean() == pytest.approx(0.1, abs=0.01), col
    for col in ["contract", "payment_method", "plan", "monthly_charges", "gender", "senior_citizen"]:
        assert frames["entities"][col].isna().mean() == pytest.approx(0.1, abs=0.03), col
    for table, cols in {"entities": ["customer_id", "signup_date"], "events": ["customer_id", "event_timestamp"],
                        "labels": ["customer_id", "label_timestamp", "churned"]}.items():
        assert not frames[table][cols].isna().any().any(), table
    assert frames["events"]["support_calls"].dtype == "Int64"


@pytest.mark.parametrize("opts,needle", [
    (GenerateOptions(days=20), "--days must be at least 31"),
    (GenerateOptions(customers=0), "--customers"),
    (GenerateOptions(missing=1.0), "--missing"),
    (GenerateOptions(drift=(Drift("monthly_charges", 1.0),)), "'monthly_charges' is not an event feature"),
    (GenerateOptions(drift=(Drift("usage_minutes", 1.0, 500),)), "day 500 is outside"),
    (GenerateOptions(label_bias=(LabelBias("region", "north", 0.1),)), "'region' is not a facet"),
    (GenerateOptions(label_bias=(LabelBias("gender", "other", 0.1),)), "unknown value 'other'"),
    (GenerateOptions(label_bias=(LabelBias("gender", "female", 1.5),)), "must lie between -1 and 1"),
])
def test_bad_options_are_named(opts: GenerateOptions, needle: str) -> None:
    with pytest.raises(InputError, match=needle.replace("(", r"\(")):
        generate_churn(opts)


def test_knob_syntax() -> None:
    assert parse_drift("usage_minutes=-1.5@60") == Drift("usage_minutes", -1.5, 60)
    assert parse_drift("data_gb=2") == Drift("data_gb", 2.0, None)
    assert parse_label_bias("gender=female:0.1") == LabelBias("gender", "female", 0.1)
    for bad in ["usage_minutes", "usage_minutes=lots", "=1"]:
        with pytest.raises(InputError, match="FEATURE=SHIFT"):
            parse_drift(bad)
    with pytest.raises(InputError, match="FACET=VALUE:DELTA"):
        parse_label_bias("gender=female")


def test_signup_dates_and_history_are_consistent(base: dict[str, pd.DataFrame]) -> None:
    first_event = base["events"].groupby("customer_id")["event_timestamp"].min()
    signup = base["entities"].set_index("customer_id")["signup_date"]
    assert (first_event >= signup.loc[first_event.index]).all()
    assert np.isin(base["labels"]["churned"].unique(), [0, 1]).all()
