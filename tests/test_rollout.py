"""Rollout decisions on metric sequences: canary, linear and all-at-once, and the guardrails that roll back."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from kiln.errors import InputError
from kiln.serving.rollout import VariantStats, advance, alarm, hold, start
from kiln.serving.spec import Guardrails, Policy, parse_spec, single_model_spec

G = Guardrails(max_error_rate=0.05, max_p99_increase_ms=25, min_requests=20)
HEALTHY = {"stable": VariantStats(180, 0, 10.0), "new": VariantStats(20, 0, 11.0)}


def run(policy: Policy, sequence: list[tuple[float, dict[str, VariantStats]]]):
    r = start("stable", "new", policy, G, now=0.0)
    for now, stats in sequence:
        r = advance(r, stats, now)
    return r


def test_canary_takes_its_step_bakes_and_is_promoted() -> None:
    r = start("stable", "new", Policy(type="canary", step_percent=10, bake_seconds=60), G, now=0.0)
    assert (r.phase, r.share) == ("baking", 0.1)
    r = advance(r, HEALTHY, 30.0)
    assert (r.phase, r.share) == ("baking", 0.1), "nothing is due before the bake time is over"
    r = advance(r, HEALTHY, 60.0)
    assert (r.phase, r.share) == ("promoted", 1.0)
    assert advance(r, {"new": VariantStats(100, 100, 900.0)}, 500.0) is r, "a finished rollout stays finished"


def test_a_paused_rollout_holds_its_share_but_still_rolls_back_on_an_alarm() -> None:
    policy = Policy(type="linear", step_percent=25, interval_seconds=10, bake_seconds=20)
    r = hold(advance(start("stable", "new", policy, G, now=0.0), HEALTHY, 10.0), True, "traffic peak", 12.0)
    assert (r.phase, r.share, r.paused) == ("shifting", 0.5, True)
    assert advance(r, HEALTHY, 500.0) is r, "no step while paused, however long"
    resumed = hold(r, False, "peak over", 600.0)
    assert advance(resumed, HEALTHY, 605.0) is resumed, "the interval starts again at the resume"
    assert advance(resumed, HEALTHY, 610.0).share == 0.75
    broken = advance(r, {"stable": VariantStats(180, 0, 10.0), "new": VariantStats(100, 50, 10.0)}, 20.0)
    assert broken.phase == "rolled-back", "an alarm still rolls a paused rollout back"
    assert [h.get("paused") for h in resumed.history][-2:] == [True, False]
    from kiln.serving.controller import dump_rollout, load_rollout

    assert load_rollout(json.loads(json.dumps(dump_rollout(r)))) == r, "a cluster's annotation keeps it paused"
    older = {k: v for k, v in dump_rollout(resumed).items() if k != "paused"}  # written before pausing existed
    assert load_rollout(older).paused is False


def test_linear_steps_every_interval_then_bakes() -> None:
    policy = Policy(type="linear", step_percent=25, interval_seconds=10, bake_seconds=20)
    r = run(policy, [(10, HEALTHY), (20, HEALTHY), (30, HEALTHY)])
    assert (r.phase, r.share) == ("baking", 1.0)
    assert [h["share"] for h in r.history] == [0.25, 0.5, 0.75, 1.0]
    assert run(policy, [(10, HEALTHY), (20, HEALTHY), (30, HEALTHY), (50, HEALTHY)]).phase == "promoted"


def test_all_at_once_moves_everything_and_rolls_back_on_errors() -> None:
    policy = Policy(type="all-at-once", bake_seconds=60)
    r = start("stable", "new", policy, G, now=0.0)
    assert r.share == 1.0
    r = advance(r, {"new": VariantStats(40, 20, 9.0)}, 15.0)
    assert (r.phase, r.share) == ("rolled-back", 0.0)
    assert "error rate 50.0%" in r.reason


def test_a_candidate_50_ms_slower_is_rolled_back_within_one_bake_period() -> None:
    slow = {"stable": VariantStats(300, 0, 12.0), "new": VariantStats(30, 0, 62.0)}
    r = run(Policy(type="canary", bake_seconds=60), [(20.0, slow)])
    assert r.phase == "rolled-back" and r.history[-1]["at"] <= 60
    assert "more than 25 ms over the stable variant's 12.0 ms" in r.reason


def test_too_few_requests_are_not_judged_and_limits_are_inclusive() -> None:
    assert alarm(G, VariantStats(19, 19, 999.0), None) is None
    assert alarm(G, VariantStats(20, 1, 10.0), VariantStats(100, 0, 10.0)) is None  # exactly 5%
    assert alarm(G, VariantStats(20, 2, 10.0), None).startswith("error rate 10.0%")
    assert alarm(Guardrails(max_p99_ms=50), VariantStats(50, 0, 51.0), None) == "p99 51.0 ms over the limit of 50.0 ms"
    g = Guardrails(custom_metric="drift_score", custom_max=0.3)
    assert alarm(g, VariantStats(50, 0, 5.0, custom=0.4), None) == "drift_score 0.4 over 0.3"


def test_specs_are_checked_by_field() -> None:
    spec = parse_spec({"name": "churn", "variants": [
        {"name": "blue", "model": "models:/churn@champion", "weight": 9},
        {"name": "green", "model": "models:/churn/3", "weight": 1}],
        "shadow": {"name": "shadow", "model": "models:/churn@challenger", "sample_percent": 10}})
    assert spec.shares() == {"blue": 0.9, "green": 0.1}
    assert single_model_spec("churn", "models:/churn@champion").shares() == {"primary": 1.0}
    bad = [({"name": "Churn!", "variants": [{"name": "a", "model": "models:/m@x"}]}, "name: String should match"),
           ({"name": "e", "variants": []}, "variants: List should have at least 1 item"),
           ({"name": "e", "variants": [{"name": "a", "model": "s3://x"}]}, "variants.0.model: Value error, expected"),
           ({"name": "e", "variants": [{"name": "a", "model": "models:/m@x", "weight": 0}]}, "weight above 0"),
           ({"name": "e", "variants": [{"name": "a", "model": "models:/m@x"}], "shadow":
             {"name": "a", "model": "models:/m@y"}}, "repeated: a"),
           ({"name": "e", "variants": [{"name": "a", "model": "models:/m@x"}], "polcy": {}}, "polcy: Extra inputs"),
           ({"name": "e", "variants": [{"name": "a", "model": "models:/m@x"}],
             "guardrails": {"custom_metric": "x"}}, "custom_metric and custom_max go together")]
    for data, needle in bad:
        with pytest.raises(InputError, match=needle.replace("(", r"\(")):
            parse_spec(data)


def test_windows_count_since_a_change_and_forget_old_answers() -> None:
    from kiln.serving.window import HORIZON_SECONDS, Windows

    now = [0.0]
    w = Windows(clock=lambda: now[0])
    for i in range(100):
        now[0] = i * 0.1
        w.add("blue", latency_ms=float(i + 1), error=i % 10 == 0)
    s = w.stats("blue", since=5.0)
    assert (s.requests, s.errors, s.p99_ms) == (50, 5, 100.0)
    summary = w.summary("blue", seconds=10.0)
    assert summary.requests == 100 and summary.requests_per_second == 10.0
    assert summary.p50_ms == pytest.approx(50.0, rel=0.02), "percentiles come from bins 2% wide"
    now[0] = HORIZON_SECONDS + 20
    w.add("blue", 1.0, False)
    assert w.stats("blue", since=0.0).requests == 1
    assert w.stats("green", since=0.0).requests == 0


def test_windows_hold_the_same_memory_however_many_answers_pass() -> None:
    from kiln.serving.window import Windows

    now = [0.0]
    w = Windows(clock=lambda: now[0])
    for i in range(200_000):  # 20 minutes at about 170 requests a second
        now[0] = i * 0.006
        w.add("blue", latency_ms=1.0 + (i % 100), error=False)
    slices = [*w._slices["blue"], *w._coarse["blue"]]
    assert len(slices) <= 90 / 0.25 + 900 / 10 + 2 and all(len(s.bins) <= 100 for s in slices)
    assert w.stats("blue", since=now[0] - 600).requests == pytest.approx(100_000, abs=2_000), "coarse slices count"
    s = w.summary("blue", seconds=60.0)
    assert s.requests == pytest.approx(10_000, abs=170) and s.p99_ms == pytest.approx(100.0, rel=0.02)


def test_a_series_covers_the_horizon_in_order_and_counts_every_answer() -> None:
    from kiln.serving.window import Windows

    now = [0.0]
    w = Windows(clock=lambda: now[0])
    for i in range(3000):  # 5 minutes at 10 a second; a slow minute in the middle, errors in the last
        now[0] = i * 0.1
        w.add("blue", latency_ms=50.0 if 1200 <= i < 1800 else 5.0, error=i >= 2900)
    points = w.series("blue")
    assert [p.seconds_ago for p in points] == sorted((p.seconds_ago for p in points), reverse=True), "oldest first"
    assert sum(p.requests for p in points) == 3000 and sum(p.errors for p in points) == 100
    slow = [p for p in points if p.p99_ms is not None and p.p99_ms > 40]
    assert 5 <= len(slow) <= 7, "the slow minute shows as about six 10-second points"
    assert points[-1].errors > 0 and points[0].errors == 0
    assert w.series("green") == []


def test_the_cluster_controller_stops_at_once_on_sigterm_while_it_waits(tmp_path: Path) -> None:
    """A replaced controller pod's process ends when Kubernetes asks (SIGTERM), not at the end of its grace period:
    here its API answers nothing, so it logs that it made no decision and waits its 60 s interval."""
    import signal
    import subprocess
    import sys
    import time

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}], "users": [{"name": "u", "user": {}}]}))
    proc = subprocess.Popen([sys.executable, "-m", "kiln.serving.controller", "--endpoint", "churn", "--namespace",
                             "kiln", "--prometheus", "http://127.0.0.1:9", "--interval", "60"],
                            env={**os.environ, "KUBECONFIG": str(kubeconfig)}, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    try:
        lines = []
        while not lines or "churn: no decision" not in lines[-1]:  # the client's retries come first
            lines.append(proc.stderr.readline())
            assert lines[-1], lines  # the controller did not exit
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert time.monotonic() - started < 5
        assert "churn: stopped" in proc.stderr.read()
    finally:
        proc.kill()  # a failed check leaves no controller behind
        proc.wait()
