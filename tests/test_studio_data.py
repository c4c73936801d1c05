"""Studio's page data for monitors, pipelines, features and edge: what a person sees for real workspace records, an
empty workspace as empty pages, and a damaged record counted rather than fatal."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kiln.workspace import Workspace, init_workspace
from tests.conftest import run_kiln

pytestmark = pytest.mark.slow  # a real pipeline run and a real feature ingestion (Feast) take seconds each


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return init_workspace(tmp_path / "ws")[0]


def test_an_empty_workspace_gives_empty_pages(ws: Workspace) -> None:
    from kiln.studio.edge import edge_page
    from kiln.studio.features import features_page
    from kiln.studio.monitors import monitors_page
    from kiln.studio.pipelines import pipelines_page

    monitors = monitors_page(ws)
    assert monitors.endpoints == () and monitors.unreadable == 0 and monitors.runs_total == 0
    pipelines = pipelines_page(ws)
    assert (pipelines.runs, pipelines.total, pipelines.unreadable) == ((), 0, 0)
    features = features_page(ws)
    assert (features.views, features.services, features.datasets, features.unreadable) == ((), (), (), 0)
    assert features.registry_error is None
    edge = edge_page(ws)
    assert (edge.devices, edge.artifacts, edge.devices_total, edge.artifacts_total) == ((), (), 0, 0)
    assert sorted(p.name for p in ws.root.iterdir()) == sorted(
        ["data", "features", "models", "artifacts", "capture", "reports", ".kiln", "kiln.yaml"]), "pages write nothing"


def test_the_pages_import_no_engine(ws: Workspace) -> None:
    """Building all four pages of a workspace without a feature registry imports none of the engines (seconds each),
    checked in a fresh process."""
    import subprocess
    import sys

    code = ("import sys; from pathlib import Path; from kiln.workspace import open_workspace\n"
            "from kiln.studio import edge, features, monitors, pipelines\n"
            f"ws = open_workspace(Path({str(ws.root)!r}))\n"
            "for page in (monitors.monitors_page, pipelines.pipelines_page, features.features_page, edge.edge_page):\n"
            "    page(ws)\n"
            "print(sorted(m for m in ('feast', 'evidently', 'kfp', 'mlflow', 'pandas', 'cryptography') "
            "if m in sys.modules))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip() == "[]"


# --- Monitors ---------------------------------------------------------------------------------------------------------

DRIFTED = ("usage_minutes_7d_mean", 0.42)
STEADY = ("monthly_charges", 0.03)


def write_monitor_run(ws: Workspace, endpoint: str, until: datetime, data: bool = True, drift: bool = False) -> Path:
    """A run's outputs as run_monitor writes them (its result with write_result, its page with write_report, the
    violations file), for a window with or without data; a real run needs a model, its baseline and traffic."""
    from kiln.monitoring.drift import METHOD_NAMES, NUM_METHOD
    from kiln.monitoring.endpoint import reports_folder
    from kiln.monitoring.report import write_report
    from kiln.monitoring.run import (
        AttributionDrift,
        BiasDrift,
        DataDrift,
        DataQuality,
        ModelQuality,
        MonitorRun,
        Monitors,
        write_result,
    )
    from kiln.monitoring.violations import Violation
    from kiln.monitoring.window import Window

    run = f"monitor-{until.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    out = reports_folder(ws, endpoint) / run
    out.mkdir(parents=True)
    method = METHOD_NAMES[NUM_METHOD]
    columns = [{"feature": name, "type": "numeric", "method": method, "score": score if drift else 0.01,
                "threshold": 0.1, "drifted": drift and score >= 0.1} for name, score in (DRIFTED, STEADY)]
    violations = [Violation("data_drift", c["feature"], method, None, c["score"], 0.1,
                            "mean 181.2 in the baseline, 96.4 now") for c in columns if c["drifted"]]
    monitors = Monitors(
        DataQuality(400, 0, {}), DataDrift(400, columns, [c["feature"] for c in columns if c["drifted"]]),
        ModelQuality(0, {"roc_auc": 0.8}, note="no ground-truth labels for this window's predictions"),
        BiasDrift(note="no ground-truth labels for this window's predictions"),
        AttributionDrift(400, 0.97, 0.9, [])) if data else None
    result = MonitorRun(
        endpoint=endpoint, run=run, model="churn/1", baseline=str(ws.root / "baselines" / "churn-1"),
        baseline_made=False, window=Window(until - timedelta(hours=1), until), records=400 if data else 0,
        rows=400 if data else 0, shadow_records_skipped=0, variants={"primary": 400} if data else {}, read_seconds=0.1,
        status="no_data" if not data else "violations" if violations else "ok", monitors=monitors,
        violations=violations, finished_unix=until.timestamp() + 3, report=str(out / "report.html") if data else None,
        metrics=str(out / "metrics.prom"), violations_file=str(out / "violations.json"), outputs=str(out),
        message=None if data else f"no captured requests for endpoint {endpoint} in the window",
        evidently_project="0197a1b2c3" if data else None)
    if data:
        write_report(result, out / "report.html")
        (out / "data_drift.html").write_text("<html>Evidently's drift report</html>")
    (out / "violations.json").write_text(json.dumps([v.to_dict() for v in violations], indent=2) + "\n")
    write_result(result, name_outputs=False)
    return out


def test_monitor_runs_show_drift_violations_reports_and_the_schedule(ws: Workspace) -> None:
    import psutil

    from kiln.files import write_json_atomic
    from kiln.monitoring.schedule import Schedule, schedule_file, state_file
    from kiln.process import pid_file
    from kiln.studio.monitors import monitor_detail, monitors_page

    t0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
    write_monitor_run(ws, "churn", t0)
    drifted = write_monitor_run(ws, "churn", t0 + timedelta(hours=1), drift=True)
    write_monitor_run(ws, "churn", t0 + timedelta(hours=2), data=False)  # the newest: a window without traffic
    torn = write_monitor_run(ws, "churn", t0 + timedelta(hours=3))
    (torn / "result.json").write_text('{"endpoint": "churn", "run": ')  # damaged
    (ws.folder("reports") / "monitor" / "churn" / "monitor-20261122T140000-abcdef").mkdir()  # a run under way
    write_monitor_run(ws, "fraud", t0)
    # churn's schedule, its scheduler running (this process stands for it) and the next tick it wrote
    write_json_atomic(schedule_file(ws, "churn"), Schedule("churn", "1h", 3600.0, [], "retrain", 6590).to_dict())
    next_tick = t0 + timedelta(hours=4)
    write_json_atomic(state_file(ws, "churn"), {"endpoint": "churn", "every": "1h", "runs": 3,
                                                "next_run": next_tick.isoformat(), "last_status": "no_data"})
    pid_file(ws.state_dir, "monitor-churn").parent.mkdir(parents=True, exist_ok=True)
    pid_file(ws.state_dir, "monitor-churn").write_text(json.dumps(
        {"pid": os.getpid(), "create_time": psutil.Process().create_time(), "host": "127.0.0.1", "port": 6590}))
    write_json_atomic(schedule_file(ws, "stopped"), Schedule("stopped", "15m", 900.0, ["http://x/"], None,
                                                             6591).to_dict())
    schedule_file(ws, "broken").write_text("{not json")

    page = monitors_page(ws)
    assert [e.endpoint for e in page.endpoints] == ["churn", "fraud", "stopped"]
    churn, fraud, stopped = page.endpoints
    # Newest first; the damaged record and the unfinished run are counted, not shown.
    assert [r.status for r in churn.runs] == ["no_data", "violations", "ok"]
    assert (churn.runs_total, churn.unreadable, churn.unfinished, churn.not_read) == (5, 1, 1, 0)
    assert page.unreadable == 2  # churn's damaged run and the broken schedule file
    empty, bad, good = churn.runs
    assert empty.message and "no captured requests" in empty.message and empty.report is None
    assert empty.monitors == () and empty.drift == ()
    # The run with drift: its violation, the drift score of every feature, its reports.
    assert bad.violations == 1 and bad.until == t0 + timedelta(hours=1) and bad.model == "churn/1"
    assert {d.feature: (d.score, d.drifted) for d in bad.drift} == {DRIFTED[0]: (0.42, True), STEADY[0]: (0.03, False)}
    assert {f.monitor: f.violations for f in bad.monitors}["data_drift"] == 1
    assert bad.report == str(drifted / "report.html") and Path(bad.report).is_file()
    assert [(r.title, r.path) for r in bad.evidently_reports] == [("Evidently data drift",
                                                                   str(drifted / "data_drift.html"))]
    # The latest violations are those of the newest run with data, not of the empty window after it.
    assert churn.latest_violations_run == bad.run and churn.latest_violations_total == 1
    [violation] = churn.latest_violations
    assert (violation.feature, violation.monitor) == (DRIFTED[0], "data_drift") and "baseline" in violation.detail
    assert good.violations == 0 and all(not d.drifted for d in good.drift)
    assert churn.evidently_project == "http://127.0.0.1:8000/projects/0197a1b2c3"
    # Schedules: the running one with its next run; a stopped one has none; an endpoint with a schedule and no runs.
    assert churn.schedule is not None and churn.schedule.state == "running"
    assert (churn.schedule.next_run, churn.schedule.every, churn.schedule.on_violation) == (next_tick, "1h", "retrain")
    assert stopped.runs == () and stopped.schedule is not None
    assert (stopped.schedule.state, stopped.schedule.next_run, stopped.schedule.webhooks) == ("stopped", None, 1)
    assert fraud.schedule is None and [r.status for r in fraud.runs] == ["ok"]
    # Bounded: only the newest runs are read, the others counted.
    bounded = monitors_page(ws, runs_per_endpoint=2).endpoints[0]
    assert [r.status for r in bounded.runs] == [] and (bounded.unfinished, bounded.unreadable, bounded.not_read) == (
        1, 1, 3)
    assert [r.status for r in monitors_page(ws, runs_per_endpoint=3).endpoints[0].runs] == ["no_data"]
    # One endpoint's page reads its own history; an endpoint never monitored has none.
    detail = monitor_detail(ws, "churn", runs=4)
    assert detail is not None and [r.run for r in detail.runs] == [r.run for r in churn.runs][:2]
    assert detail.not_read == 1 and detail.schedule == churn.schedule
    stopped_detail = monitor_detail(ws, "stopped")
    assert stopped_detail is not None and stopped_detail.runs == () and stopped_detail.schedule == stopped.schedule
    assert monitor_detail(ws, "nope") is None and monitor_detail(ws, "..") is None


# --- Pipelines --------------------------------------------------------------------------------------------------------

PIPELINE = '''
from kfp import dsl

from kiln import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def score(metrics: dsl.Output[dsl.Metrics], report: dsl.Output[dsl.HTML], card: dsl.Output[dsl.Markdown],
          data: dsl.Output[dsl.Dataset]) -> str:
    metrics.log_metric("roc_auc", 0.91)
    metrics.log_metric("rows", 400)
    with open(report.path, "w") as f:
        f.write("<!doctype html><html><body>curves</body></html>")
    with open(card.path, "w") as f:
        f.write("# Model card: churn version 1")
    with open(data.path, "w") as f:
        f.write("customer_id,churned\\n1,0\\n")
    return "churn/1"


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def publish(version: str):
    import time

    time.sleep(1.0)
    raise ValueError(f"refused {version}")


@dsl.pipeline(name="studio-probe")
def studio_probe():
    scored = score()
    publish(version=scored.outputs["Output"])
'''


def test_pipeline_runs_show_steps_with_status_duration_and_outputs(ws: Workspace, tmp_path: Path) -> None:
    from kiln.studio.pipelines import UNFINISHED, pipelines_page, runs_folder

    source = tmp_path / "studio_probe.py"
    source.write_text(PIPELINE)
    res = run_kiln("pipeline", "run", source, "-w", ws.root, timeout=300)
    assert res.code == 2 and "task publish failed: ValueError: refused churn/1" in res.stderr, res.stderr[-3000:]
    [real] = runs_folder(ws).iterdir()
    # Beside it: a copy that is still running (no run.json yet), and an older one whose record is damaged.
    later = "studio-probe-2099-01-01-00-00-00-000000"
    shutil.copytree(real, runs_folder(ws) / later)
    (runs_folder(ws) / later / "run.json").unlink()
    older = runs_folder(ws) / "studio-probe-2001-01-01-00-00-00-000000"
    shutil.copytree(real, older)
    (older / "run.json").write_text("{")

    page = pipelines_page(ws)
    assert (page.total, page.unreadable, page.not_read) == (3, 1, 0)
    unfinished, run = page.runs  # newest first
    assert (unfinished.status, unfinished.seconds, unfinished.pipeline) == (UNFINISHED, None, "studio-probe")
    assert [(t.name, t.status) for t in unfinished.tasks] == [("score", "SUCCESS")]
    assert (run.pipeline, run.run, run.status, run.runner) == ("studio-probe", real.name, "FAILURE", "subprocess")
    assert run.started is not None and abs((datetime.now(UTC) - run.started).total_seconds()) < 600
    assert run.seconds is not None and run.seconds >= 1.0 and run.log and Path(run.log).is_file()
    score, publish = run.tasks
    assert run.failed_tasks == ("publish",)
    assert publish.status == "FAILURE" and publish.seconds is not None and publish.seconds >= 1.0
    assert (score.status, score.values) == ("SUCCESS", (("Output", "churn/1"),))
    assert {m.name: m.value for m in score.metrics} == {"roc_auc": 0.91, "rows": 400.0}
    reports = {r.output: r for r in score.reports}
    assert set(reports) == {"report", "card"}, "the dataset is not a report"
    assert (reports["report"].kind, reports["card"].kind) == ("html", "markdown")
    assert "curves" in Path(reports["report"].path).read_text()
    assert [r.run for r in pipelines_page(ws, runs_shown=1).runs] == [later]


# --- Features ---------------------------------------------------------------------------------------------------------

def test_feature_views_services_freshness_and_ingested_datasets(ws: Workspace, tmp_path: Path) -> None:
    from kiln.features.ingest import ingest
    from kiln.features.materialize import materialize
    from kiln.studio.features import features_page
    from tests.test_features import customer, day, event, write_churn

    small = write_churn(tmp_path / "small", [customer(1), customer(2, charges=80.0)],
                        [event(1, day(1, 9), 10.0), event(1, day(5, 9), 20.0), event(2, day(2, 9), 30.0)],
                        [{"customer_id": 1, "label_timestamp": day(6), "churned": 0}])
    before = datetime.now(UTC) - timedelta(seconds=1)
    ingest(ws, small)
    materialize(ws, day(-200).to_pydatetime(), day(30).to_pydatetime())

    page = features_page(ws)
    assert page.registry_error is None and page.unreadable == 0 and page.online_store == "sqlite"
    views = {v.name: v for v in page.views}
    assert {"churn_profile", "churn_activity", "churn_derived"} <= set(views)
    activity = views["churn_activity"]
    assert activity.entities == ("customer",) and activity.ttl == timedelta(days=7) and activity.kind == "batch"
    assert {"usage_minutes_7d_mean", "support_calls_30d"} <= {f.name for f in activity.features}
    assert "churn/activity" in activity.source and activity.online
    assert activity.materialized == (day(-200).to_pydatetime(), day(30).to_pydatetime())
    assert views["churn_derived"].kind == "on demand" and "churn_activity" in views["churn_derived"].source
    services = {s.name: s for s in page.services}
    assert "churn_v1" in services and {"churn_profile", "churn_activity"} <= set(services["churn_v1"].views)
    [dataset] = page.datasets
    assert (dataset.name, dataset.kind, dataset.path) == ("churn", "churn", str(small))
    assert dataset.content_hash and dataset.created is not None
    tables = {t.name: t for t in dataset.tables}
    assert tables["activity"].newest_partition == "2026-03-06" and tables["activity"].partitions >= 1
    assert dataset.last_written is not None and dataset.last_written >= before

    # A registry that no longer reads: counted and said; a dataset folder moved away since its ingestion: still shown
    # with its tables, without what its manifest said.
    Path(ws.settings.features.registry.path).write_bytes(b"\x00not a registry")
    shutil.rmtree(small)
    broken = features_page(ws)
    assert broken.registry_error and broken.unreadable == 1 and broken.views == ()
    [moved] = broken.datasets
    assert (moved.created, moved.content_hash, moved.tables) == (None, None, dataset.tables)


# --- Edge -------------------------------------------------------------------------------------------------------------

def make_bundle(ws: Workspace, version: int, target: str, created: datetime, expires_days: float = 30) -> str:
    """A signed bundle as `kiln compile` writes it (write_bundle with the workspace's key), its library a stand-in."""
    from kiln.compile.bundle import ManifestDraft, write_bundle
    from kiln.compile.keys import fingerprint, signing_key
    from kiln.compile.store import compiled_root

    stage = compiled_root(ws) / f".build-{uuid.uuid4().hex[:6]}"
    stage.mkdir(parents=True)
    (stage / "model-b1.so").write_bytes(b"\x7fELF stand-in")
    draft = ManifestDraft(model={"name": "churn", "version": str(version), "family": "mlp", "threshold": 0.5},
                          target={"name": target, "machine": target}, runtime={"tvm": "0"},
                          input={"features": []}, output={"kind": "probability"}, libraries={"1": "model-b1.so"},
                          expires_days=expires_days)
    key = signing_key(ws)
    manifest = write_bundle(stage, draft, key, fingerprint(key.public_key()), created=created)
    stage.rename(compiled_root(ws) / manifest["id"])
    return str(manifest["id"])


def test_devices_and_artifacts_show_health_publication_signature_and_expiry(ws: Workspace) -> None:
    from kiln.compile.store import compiled_root, publish_artifact
    from kiln.fleet.devices import check_heartbeat, fleet_db, record_heartbeat
    from kiln.studio.edge import edge_page

    now = datetime.now(UTC)
    live = make_bundle(ws, 2, "x86_64", now - timedelta(days=1))
    older = make_bundle(ws, 1, "x86_64", now - timedelta(days=2))
    expired = make_bundle(ws, 1, "aarch64", now - timedelta(days=40))
    tampered = make_bundle(ws, 3, "x86_64", now - timedelta(hours=1))
    manifest = compiled_root(ws) / tampered / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"version": "3"', '"version": "30"'))
    (compiled_root(ws) / "churn-v9-x86_64-20990101T000000000000").mkdir()  # a bundle without a manifest
    assert publish_artifact(ws, older).latest and publish_artifact(ws, live).latest
    db = fleet_db(ws)
    record_heartbeat(db, check_heartbeat("pi-1", {"target": "x86_64", "health": "ok", "active": live,
                                                 "model": "churn/2", "interval_seconds": 3600}))
    record_heartbeat(db, check_heartbeat("pi-2", {"target": "x86_64", "health": "degraded", "active": older,
                                                 "model": "churn/1", "interval_seconds": 1,
                                                 "details": {"last_error": "disk full", "rejected": {tampered: "x"}}}))

    page = edge_page(ws, now=now + timedelta(seconds=30))  # pi-2 beats every second: silent for 30 s, it is offline
    devices = {d.device_id: d for d in page.devices}
    assert (devices["pi-1"].status, devices["pi-1"].active, devices["pi-1"].model) == ("ok", live, "churn/2")
    assert (devices["pi-2"].health, devices["pi-2"].status) == ("degraded", "offline")
    assert (devices["pi-2"].last_error, devices["pi-2"].rejected) == ("disk full", 1)
    assert abs((devices["pi-1"].last_seen - now).total_seconds()) < 60
    assert page.device_statuses == {"ok": 1, "offline": 1} and page.devices_total == 2
    assert page.artifacts_total == 5 and page.unreadable == 1  # the bundle without a manifest
    assert [a.id for a in page.artifacts] == [tampered, live, older, expired]  # newest first
    rows = {a.id: a for a in page.artifacts}
    assert (rows[live].published, rows[live].latest, rows[live].devices, rows[live].model) == (True, True, 1, "churn/2")
    assert (rows[older].published, rows[older].latest, rows[older].devices) == (True, False, 1)
    assert rows[live].signed and rows[live].signature_ok and not rows[live].expired
    assert rows[expired].expired and rows[expired].expires < now and not rows[expired].published
    assert rows[tampered].signed and rows[tampered].signature_ok is False and rows[tampered].model == "churn/30"
    assert [a.id for a in edge_page(ws, artifacts_shown=2).artifacts] == [tampered]  # the newest two: one unreadable
    # A fleet table that no longer reads: counted, and the artifacts are still shown.
    db.write_bytes(b"not a database" * 100)
    damaged = edge_page(ws)
    assert (damaged.devices, damaged.unreadable, len(damaged.artifacts)) == ((), 2, 4)
    assert damaged.artifacts[1].devices == 0  # no device is known to serve it now
