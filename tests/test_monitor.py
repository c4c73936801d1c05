"""Monitors on generated data: drift injected by the generator is flagged on its features and clean data is
not; a label-bias shift on one facet is flagged; SageMaker's NDCG example trips; bad capture rows are counted
as data-quality violations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kiln.clarify.bias import bias_by_facet
from kiln.data.generate import Drift, LabelBias
from kiln.monitoring.attribution import ndcg
from kiln.monitoring.bias_drift import bias_drift
from kiln.monitoring.constraints import check_constraints
from kiln.monitoring.drift import drift_violations, measure_drift
from kiln.monitoring.profile import feature_kinds, feature_statistics
from kiln.monitoring.traffic import read_traffic
from kiln.settings import MonitoringSettings
from tests.monitor_data import feature_rows, labelled_rows

FEATURES = ["usage_minutes_7d_mean", "usage_minutes_30d_mean", "usage_trend_7d_vs_30d", "data_gb_7d_mean",
            "data_gb_30d_mean", "support_calls_7d", "support_calls_30d", "payment_delay_days_7d_max",
            "payment_delay_days_30d_max", "dropped_calls_30d", "active_days_30d", "tenure_days", "contract",
            "payment_method", "plan", "monthly_charges", "usage_minutes_per_dollar"]
LIMITS = MonitoringSettings()
DERIVED = {"usage_minutes": ("usage_trend_7d_vs_30d", "usage_minutes_per_dollar")}


@pytest.fixture(scope="module")
def reference():
    rows = feature_rows(seed=100)
    return rows[FEATURES], feature_kinds(rows, FEATURES)


def drifted_features(reference, current) -> list[str]:
    frame, kinds = reference
    result = measure_drift(frame, current[FEATURES], kinds, LIMITS.drift_threshold, LIMITS.drift_sample_rows)
    assert len(result.columns) == len(FEATURES)
    return sorted(v.feature for v in drift_violations(result, frame, current))


@pytest.mark.parametrize("drift, expected", [
    ((Drift("usage_minutes", -1.5, 30),), {"usage_minutes_7d_mean", "usage_minutes_30d_mean"}),
    ((Drift("support_calls", 2.0, 30), Drift("data_gb", 1.5, 30)),
     {"support_calls_7d", "support_calls_30d", "data_gb_7d_mean", "data_gb_30d_mean"}),
])
def test_drift_injected_by_the_generator_is_flagged_on_those_features(reference, drift, expected) -> None:
    flagged = set(drifted_features(reference, feature_rows(seed=7, drift=drift)))
    assert expected <= flagged
    # Features computed from the drifted ones may move too (usage per dollar, the trend); nothing else does.
    derived = {f for d in drift for f in DERIVED.get(d.feature, ())}
    assert flagged <= expected | derived, flagged


def test_clean_data_raises_no_drift_violation_in_at_least_19_of_20_seeds(reference) -> None:
    flagged = {seed: drifted_features(reference, feature_rows(seed=seed)) for seed in range(20)}
    dirty = {seed: f for seed, f in flagged.items() if f}
    assert len(dirty) <= 1, dirty


def test_drift_on_a_sample_says_so(reference) -> None:
    frame, kinds = reference
    current = feature_rows(seed=3, rows=6000)[FEATURES]
    result = measure_drift(frame, current, kinds, LIMITS.drift_threshold, max_rows=2000)
    assert (result.rows, result.sampled_from) == (2000, 6000)
    assert not result.drifted


def facet_baseline(rows) -> dict:
    return {"protected": ["gender"], "facets": bias_by_facet(rows, "label", ["gender"], LIMITS.min_facet_rows)}


def test_a_label_bias_shift_on_one_facet_is_flagged_and_clean_labels_are_not() -> None:
    baseline = facet_baseline(labelled_rows(seed=1))
    _, clean, _ = bias_drift(baseline, labelled_rows(seed=2), LIMITS)
    assert clean == []
    facets, found, note = bias_drift(baseline, labelled_rows(seed=2, bias=(LabelBias("gender", "female", 0.25),)),
                                     LIMITS)
    assert note == "" and found
    assert {v.feature for v in found} <= {"gender=female", "gender=male"}
    assert {v.monitor for v in found} == {"bias_drift"}
    # The shift is on the labels: accuracy and recall differences between the facets move.
    assert {"AD", "RD"} & {v.metric for v in found}
    assert all(f["judged"] for f in facets)


def test_bias_drift_without_facet_values_is_a_note_not_a_violation() -> None:
    rows = labelled_rows(seed=1)
    facets, found, note = bias_drift(facet_baseline(rows), rows.drop(columns=["gender"]), LIMITS)
    assert (facets, found) == ([], []) and "no facet values" in note


def test_ndcg_sagemaker_example_trips_and_an_unchanged_ranking_does_not() -> None:
    baseline = {"x1": 0.70, "x2": 0.50, "x3": 0.05}
    moved = {"x1": 0.10, "x2": 0.20, "x3": 0.70}
    assert ndcg(baseline, moved) == pytest.approx(0.6877, abs=1e-4)
    assert ndcg(baseline, moved) < LIMITS.ndcg_threshold
    assert ndcg(baseline, {"x1": 0.9, "x2": 0.3, "x3": 0.01}) == 1.0  # other values, the same order
    assert ndcg(baseline, baseline) == 1.0


def write_capture(root: Path, records: list[dict | str]) -> None:
    folder = root / "endpoint=toy" / "hour=2026-11-22T10"
    folder.mkdir(parents=True)
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    (folder / "capture-1.jsonl").write_text("\n".join(lines) + "\n")


def record(i: int, request, status: int = 200, shadow: bool = False) -> dict:
    response = {"predictions": [{"probability": 0.3, "prediction": 0}]} if status == 200 else {"error": "bad"}
    return {"inference_id": f"r{i}", "timestamp": f"2026-11-22T10:00:{i % 60:02d}.000000+00:00", "endpoint": "toy",
            "variant": "primary", "shadow": shadow, "request": request, "response": response, "status": status,
            "latency_ms": 1.0}


def test_capture_rows_that_break_the_schema_are_violations_not_crashes(tmp_path: Path) -> None:
    train = feature_rows(seed=1, rows=500)[["tenure_days", "plan", "monthly_charges"]]
    kinds = feature_kinds(train, list(train.columns))
    stats = feature_statistics(train, kinds)
    good = {"tenure_days": 400, "plan": "basic", "monthly_charges": 30.5}
    records = [record(i, {"instances": [good]}) for i in range(40)]
    records += [
        record(40, {"instances": [{**good, "tenure_days": "four hundred"}]}, 400),  # wrong type
        record(41, {"instances": [{"plan": "basic", "monthly_charges": 20.0}]}, 400),  # a missing column
        record(42, {"instances": [{**good, "coupon": "X1"}]}, 400),  # an unknown column
        record(43, {"instances": [{**good, "plan": "platinum"}]}),  # a category never seen
        record(44, {"instances": [{**good, "monthly_charges": -500.0}]}),  # out of range
        record(45, {"unparsed": "<xml>not json</xml>"}, 400),  # not a prediction body
        record(46, [1, 2, 3], 400),
        record(47, {"instances": [[410, "standard", 61.0]]}),  # a row as a list in schema order
        record(50, {"instances": [[410, "standard", 61.0, 7]]}, 400),  # one value too many
        record(48, {"inputs": [{"name": "tenure_days", "datatype": "INT64", "shape": [1], "data": [12]},
                               {"name": "plan", "datatype": "BYTES", "shape": [1], "data": ["basic"]},
                               {"name": "monthly_charges", "datatype": "FP64", "shape": [1], "data": [25.0]}]}),
        record(49, {"instances": [good]}, shadow=True),  # a shadow answer repeats a request: not counted
        '{"inference_id": "torn", "timest',  # a crash mid-append tears the last line
    ]
    write_capture(tmp_path, records)
    traffic = read_traffic(tmp_path, "toy", kinds)
    assert (traffic.records, traffic.shadow_records, traffic.unparseable, traffic.rows) == (50, 1, 2, 48)
    found, observed = check_constraints(stats, traffic, LIMITS)
    by = {(v.feature, v.metric): v for v in found}
    assert by[("tenure_days", "wrong_type")].observed == pytest.approx(1 / 48, abs=1e-6)
    assert "four hundred" in by[("tenure_days", "wrong_type")].detail
    assert ("tenure_days", "missing_column") in by
    assert ("coupon", "new_column") in by and ("value[3]", "new_column") in by
    assert "'platinum' (1)" in by[("plan", "new_category")].detail
    assert by[("monthly_charges", "out_of_range_share")].observed == pytest.approx(1 / 48, abs=1e-6)
    assert by[("*", "unparseable_requests")].observed == 2
    # The bad value and the missing column are not counted again as missing values sent as null.
    assert observed["tenure_days"]["missing_share"] == 0.0
    assert traffic.frame["tenure_days"].notna().sum() == 46


def test_an_empty_capture_reads_as_no_rows(tmp_path: Path) -> None:
    traffic = read_traffic(tmp_path, "toy", {"x": "numeric"})
    assert (traffic.records, traffic.rows) == (0, 0)
    assert check_constraints({"x": {"type": "numeric", "missing_share": 0.0}}, traffic, LIMITS)[0] == []


def test_metrics_do_not_depend_on_an_environment_feast_changed(tmp_path: Path) -> None:
    """Feast's import sets PROMETHEUS_MULTIPROC_DIR; a run's metrics are still written once that variable is gone."""
    import subprocess
    import sys

    script = f"""
import os
from datetime import datetime, UTC
from pathlib import Path
import feast.metrics  # sets PROMETHEUS_MULTIPROC_DIR, then prometheus_client keeps gauges in files there
import prometheus_client
os.environ.pop("PROMETHEUS_MULTIPROC_DIR")  # an environment put back, as a caller restoring its own does
from kiln.monitoring.metrics import write_metrics
from kiln.monitoring.run import MonitorRun
from kiln.monitoring.window import Window
run = MonitorRun(endpoint="e", run="r", model="m/1", baseline="b", baseline_made=False,
                 window=Window(None, datetime(2026, 1, 1, tzinfo=UTC)), records=3, rows=5, shadow_records_skipped=0,
                 variants={{}}, read_seconds=0.1, status="no_data", monitors=None, violations=[], finished_unix=17.0,
                 report=None, metrics="", violations_file="", outputs="")
write_metrics(run, Path({str(tmp_path / 'metrics.prom')!r}))
"""
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    text = (tmp_path / "metrics.prom").read_text()
    assert 'kiln_monitor_rows{endpoint="e"} 5.0' in text
    assert 'kiln_monitor_last_run_timestamp_seconds{endpoint="e"} 17.0' in text
    assert 'kiln_monitor_violations{endpoint="e",monitor="data_drift"} 0.0' in text
