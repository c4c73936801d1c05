"""Model Monitor on a locally deployed endpoint: churn traffic that drifts halfway, ground truth from the replay
log, a monitor run with a webhook alert and retraining on violation; empty windows and bad labels."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import ClassVar

import pandas as pd
import pytest

from kiln.monitoring.simulate import drift_halfway
from tests.conftest import END, run_kiln
from tests.test_stack import serving_base_port

pytestmark = pytest.mark.slow
DRIFTED = ["usage_minutes_7d_mean", "usage_minutes_30d_mean"]
USAGE = {*DRIFTED, "usage_trend_7d_vs_30d", "usage_minutes_per_dollar"}
SPEC = """
name: churn
variants:
  - {name: primary, model: "models:/churn@challenger"}
capture: {flush_seconds: 0.2}
"""


def ok(*args, timeout: float = 600) -> dict:
    res = run_kiln(*args, "--json", timeout=timeout)
    assert res.code == 0, res.stderr[-3000:]
    return json.loads(res.stdout)


@pytest.fixture(scope="module")
def monitored(tmp_path_factory: pytest.TempPathFactory):
    """churn/1 (LightGBM on generated churn data) behind endpoint `churn`, 800 requests whose second half has
    usage shifted down by 1.5 deviations, and the replay log's labels ingested as ground truth."""
    root = tmp_path_factory.mktemp("monitor") / "ws"
    assert run_kiln("init", root).code == 0
    (root / "kiln.yaml").write_text((root / "kiln.yaml").read_text() + f"serving:\n  base_port: {serving_base_port()}\n")
    data = root / "data" / "churn"
    ok("data", "generate", "--out", data, "--customers", "1000", "--days", "120", "--seed", "1", "--end", str(END))
    ok("features", "ingest", data, "-w", root)
    ok("features", "training-set", "--labels", data, "--out", root / "data" / "ts.parquet", "-w", root)
    run = ok("train", "-t", root / "data" / "ts.parquet", "-f", "lgbm", "--iterations", "20", "-w", root)
    registered = ok("models", "register", run["run_id"], "--name", "churn", "-w", root)["version"]
    assert registered["gate"] == "passed", registered["tags"].get("kiln.gate_reasons")
    ok("models", "approve", "churn/1", "--reason", "reviewed for the monitor tests", "-w", root)
    (root / "churn.yaml").write_text(SPEC)
    ok("endpoint", "deploy", root / "churn.yaml", "-w", root)
    rows = pd.read_parquet(root / "data" / "ts.parquet").tail(800)
    drift_halfway(rows, dict.fromkeys(DRIFTED, -1.5)).to_parquet(root / "traffic.parquet", index=False)
    sent = ok("endpoint", "replay", "churn", "-d", root / "traffic.parquet", "--rps", "400", "-w", root)
    assert sent["statuses"] == {"200": 800}
    ok("monitor", "labels", sent["log"], "-e", "churn", "-w", root)
    yield root
    run_kiln("down", "-w", root)


class Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict]] = []

    def do_POST(self) -> None:  # the http.server interface
        Hook.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_a_run_over_drifting_traffic_reports_alerts_and_retrains(monitored: Path) -> None:
    from evidently.ui.workspace import Workspace
    from prometheus_client.parser import text_string_to_metric_families

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{server.server_port}/alerts"
    try:
        result = ok("monitor", "run", "-e", "churn", "--webhook", hook, "--on-violation", "retrain", "-w", monitored)
    finally:
        server.shutdown()
    assert result["status"] == "violations" and result["baseline_made"]
    assert (result["records"], result["rows"]) == (800, 800)
    drift = [v for v in result["violations"] if v["monitor"] == "data_drift"]
    assert set(DRIFTED) <= {v["feature"] for v in drift} <= USAGE
    monitors = result["monitors"]
    assert monitors["model_quality"]["rows"] == 800 and monitors["model_quality"]["observed"]["roc_auc"] > 0.7
    assert all(f["judged"] for f in monitors["bias_drift"]["facets"])  # facets from the feature store
    assert 0.0 < monitors["attribution_drift"]["ndcg"] <= 1.0
    # Outputs: the report beside Evidently's, the violations file, Prometheus text, the Evidently workspace.
    out = Path(result["outputs"])
    assert "violation" in (out / "report.html").read_text()
    assert (out / "data_drift.html").stat().st_size > 10_000 and (out / "model_quality.html").is_file()
    assert json.loads((out / "violations.json").read_text()) == result["violations"]
    families = {f.name: f for f in text_string_to_metric_families((out / "metrics.prom").read_text())}
    counts = {s.labels["monitor"]: s.value for s in families["kiln_monitor_violations"].samples}
    assert counts["data_drift"] == len(drift)
    assert (monitored / "monitoring" / "metrics" / "churn.prom").read_text() == (out / "metrics.prom").read_text()
    evidently = Workspace(str(monitored / "monitoring" / "evidently"))
    [project] = evidently.search_project("endpoint churn")
    assert len(evidently.list_runs(project.id)) == 2
    # The alert carried the violations; retraining registered a new challenger from a fresh training set.
    assert [a["ok"] for a in result["alerts"]] == [True]
    assert Hook.received[-1]["violations"] == result["violations"]
    assert result["retrain"]["version"] == "churn/2" and "challenger" in result["retrain"]["aliases"]
    assert Path(result["retrain"]["training_set"]).is_file()


def test_baseline_is_kept_unless_rebaselined(monitored: Path) -> None:
    kept = ok("monitor", "baseline", "churn/1", "-w", monitored)
    assert kept["made"] is False and kept["features"] == 18
    made = ok("monitor", "baseline", "churn/1", "--rebaseline", "-w", monitored)
    assert made["made"] is True and made["facets"] and made["top_features"]


def test_an_empty_window_is_no_data_not_a_failure(monitored: Path) -> None:
    res = run_kiln("monitor", "run", "-e", "churn", "--since", "2020-01-01", "--until", "2020-01-02",
                   "-w", monitored)
    assert res.code == 0, res.stderr[-2000:]
    assert "no data" in res.stdout and "no captured requests" in res.stdout


def test_bad_labels_are_refused_and_nothing_is_stored(monitored: Path) -> None:
    folder = monitored / "monitoring" / "labels" / "churn"
    before = sorted(folder.iterdir())
    bad = monitored / "bad.csv"
    bad.write_text("inference_id,label\na,1\nb,yes\n")
    res = run_kiln("monitor", "labels", bad, "-e", "churn", "-w", monitored)
    assert res.code != 0 and "label column 'label'" in res.stderr and "'yes'" in res.stderr
    bad.write_text("id,label\na,1\n")
    res = run_kiln("monitor", "labels", bad, "-e", "churn", "-w", monitored)
    assert res.code != 0 and "no inference id column 'inference_id'" in res.stderr
    assert sorted(folder.iterdir()) == before


def test_bad_options_are_named(monitored: Path) -> None:
    res = run_kiln("monitor", "run", "-e", "churn", "--since", "yesterday", "-w", monitored)
    assert res.code != 0 and "--since 'yesterday'" in res.stderr
    res = run_kiln("monitor", "run", "-e", "churn", "--on-violation", "page-someone", "-w", monitored)
    assert res.code != 0 and "--on-violation 'page-someone'" in res.stderr
    res = run_kiln("monitor", "run", "-e", "nope", "-w", monitored)
    assert res.code != 0 and "nope" in res.stderr


def test_a_schedule_runs_in_the_background_and_stops(monitored: Path) -> None:
    import time

    import httpx

    made = ok("monitor", "schedule", "-e", "churn", "--every", "3s", "-w", monitored)
    try:
        sent = ok("endpoint", "replay", "churn", "-d", monitored / "traffic.parquet", "-n", "120", "--rps", "200",
                  "-w", monitored)
        assert sent["statuses"] == {"200": 120}
        deadline, seen = time.monotonic() + 120, 0
        while time.monotonic() < deadline and seen < 120:
            time.sleep(1)
            runs = (monitored / "reports" / "monitor" / "churn").glob("*/result.json")
            results = [json.loads(p.read_text()) for p in runs]
            seen = sum(r["rows"] for r in results if r["window"]["since"] is not None)
        assert seen == 120  # every request lands in exactly one scheduled window
        status = httpx.get(f"{made['url']}/v1/status", timeout=5).json()
        assert status["runs"] >= 1 and status["endpoint"] == "churn"
        listed = ok("monitor", "schedule", "--list", "-w", monitored)
        assert [(s["endpoint"], s["state"]) for s in listed] == [("churn", "running")]
        assert "monitor-churn" in run_kiln("status", "-w", monitored).stdout
    finally:
        ok("monitor", "schedule", "-e", "churn", "--stop", "-w", monitored)
    assert ok("monitor", "schedule", "--list", "-w", monitored) == []
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{made['url']}/health", timeout=2)


def test_a_schedule_renders_as_a_valid_cronjob(monitored: Path) -> None:
    import kubernetes_validate

    cronjob = ok("monitor", "schedule", "-e", "churn", "--every", "15m", "--render")
    assert cronjob["spec"]["schedule"] == "*/15 * * * *"
    assert cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"][:4] == \
        ["kiln", "monitor", "run", "--endpoint"]
    kubernetes_validate.validate(cronjob, "1.30", strict=True)
    res = run_kiln("monitor", "schedule", "-e", "churn", "--every", "7m", "--render")
    assert res.code != 0 and "--every 7m" in res.stderr
