"""Capture on S3 (SeaweedFS on loopback): the same records and layout as on disk, each batch an object written
whole; a killed writer loses at most its last batch; a batch the store refuses is kept for the next flush; the
capture collector writes there when the workspace's capture store is S3."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import yaml

from kiln.serving.capture import CaptureRecord, CaptureWriter, now_iso, read_capture
from tests.conftest import run_kiln
from tests.s3 import S3
from tests.test_collector import ANSWER, post_pair, wait_healthy
from tests.test_stack import free_port


def record(i: int, endpoint: str = "churn") -> CaptureRecord:
    return CaptureRecord(inference_id=f"id-{i}", timestamp=now_iso(), endpoint=endpoint, variant="primary",
                         shadow=False, request={"instances": [{"x": i}]}, response={"predictions": [i]}, status=200,
                         latency_ms=1.0)


def test_batches_become_objects_that_read_back_as_the_same_records(aws: S3) -> None:
    root = f"s3://kiln/run-{uuid.uuid4().hex[:6]}"
    writer = CaptureWriter(root, "churn", flush_seconds=3600)
    for i in range(30):
        writer.record(record(i))
        if i % 10 == 9:
            assert writer.flush() == 10
    writer.close()
    listed = aws.client().list_objects_v2(Bucket="kiln", Prefix=root.removeprefix("s3://kiln/"))
    keys = [o["Key"] for o in listed.get("Contents", [])]
    assert len(keys) == 3 and all("/endpoint=churn/hour=" in k and k.endswith(".jsonl") for k in keys), keys
    got = list(read_capture(root, "churn"))
    assert [r["inference_id"] for r in got] == [f"id-{i}" for i in range(30)]
    assert got[0]["request"] == {"instances": [{"x": 0}]}
    assert list(read_capture(root, "other")) == []


def test_a_batch_the_store_refuses_is_kept_and_written_with_the_next(aws: S3) -> None:
    bucket = f"later-{uuid.uuid4().hex[:6]}"
    writer = CaptureWriter(f"s3://{bucket}/cap", "churn", flush_seconds=3600)
    for i in range(5):
        writer.record(record(i))
    assert writer.flush() == 0 and writer.failed_flushes == 1  # no such bucket yet
    aws.client().create_bucket(Bucket=bucket)
    writer.record(record(5))
    assert writer.flush() == 6
    writer.close()
    assert [r["inference_id"] for r in read_capture(f"s3://{bucket}/cap", "churn")] == [f"id-{i}" for i in range(6)]


def test_a_killed_writer_loses_at_most_its_last_batch(aws: S3, tmp_path: Path) -> None:
    root = f"s3://kiln/killed-{uuid.uuid4().hex[:6]}"
    script = textwrap.dedent(f"""
        import sys
        from tests.test_capture_s3 import record
        from kiln.serving.capture import CaptureWriter
        writer = CaptureWriter({root!r}, "churn", flush_seconds=3600)
        i = 0
        while True:
            writer.record(record(i))
            i += 1
            if i % 25 == 0:
                writer.flush()
                print(i, flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[1])
    flushed = 0
    while flushed < 200:
        line = proc.stdout.readline()
        assert line, "the writer ended early"
        flushed = int(line)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    got = [r["inference_id"] for r in read_capture(root, "churn")]
    assert len(got) >= 200 and len(got) % 25 == 0, "whole batches only, every flushed one"
    assert got == [f"id-{i}" for i in range(len(got))]


def test_the_collector_writes_to_the_workspaces_s3_capture_store(aws: S3, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    assert run_kiln("init", ws).code == 0
    prefix = f"s3://kiln/collected-{uuid.uuid4().hex[:6]}"
    settings = yaml.safe_load((ws / "kiln.yaml").read_text())
    settings["capture"] = {"type": "s3", "uri": prefix, "endpoint_url": aws.endpoint}
    (ws / "kiln.yaml").write_text(yaml.safe_dump(settings))
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "kiln.serving.collector", "--workspace", str(ws), "--port",
                             str(port)], stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, proc)
        inference_id = post_pair(f"{url}/churn/primary")
        deadline = time.monotonic() + 20
        while not (got := list(read_capture(prefix, "churn"))):
            assert time.monotonic() < deadline, "nothing reached S3"
            time.sleep(0.5)
        assert got[0]["inference_id"] == inference_id and got[0]["response"] == ANSWER
    finally:
        proc.terminate()
        proc.wait(20)


def test_a_monitor_run_reads_s3_capture_and_publishes_its_report_to_the_s3_artifacts_store(
        aws: S3, tmp_path: Path) -> None:
    """A workspace whose capture and artifacts stores are on S3, monitoring a model an endpoint elsewhere serves."""
    from tests.compiled import register
    from tests.test_training import FEATURES, synthetic

    ws = tmp_path / "ws"
    assert run_kiln("init", ws).code == 0
    run = uuid.uuid4().hex[:6]
    settings = yaml.safe_load((ws / "kiln.yaml").read_text())
    settings["capture"] = {"type": "s3", "uri": f"s3://kiln/{run}/capture", "endpoint_url": aws.endpoint}
    settings["artifacts"] = {"type": "s3", "uri": f"s3://kiln/{run}/artifacts", "endpoint_url": aws.endpoint}
    (ws / "kiln.yaml").write_text(yaml.safe_dump(settings))
    version = register(ws, "lgbm")
    rows = synthetic(n=120, seed=9)[FEATURES]
    writer = CaptureWriter(f"s3://kiln/{run}/capture", "toy", flush_seconds=3600, endpoint_url=aws.endpoint)
    for i, row in enumerate(json.loads(rows.to_json(orient="records"))):
        writer.record(CaptureRecord(inference_id=f"r{i}", timestamp=now_iso(), endpoint="toy", variant="primary",
                                    shadow=False, request={"instances": [row]},
                                    response={"predictions": [{"probability": 0.4, "prediction": 0}]},
                                    status=200, latency_ms=2.0))
    assert writer.flush() == 120
    writer.close()
    res = run_kiln("monitor", "run", "--endpoint", "toy", "--model", version, "-w", ws, "--json", timeout=600)
    assert res.code == 0, res.stderr[-3000:]
    result = json.loads(res.stdout)
    assert result["records"] == 120 and result["model"] == version
    prefix = f"{run}/artifacts/reports/monitor/toy/{result['run']}/"
    assert result["published"] == f"s3://kiln/{prefix.rstrip('/')}"
    names = {o["Key"][len(prefix):] for o in aws.client().list_objects_v2(Bucket="kiln", Prefix=prefix)["Contents"]}
    assert {"result.json", "report.html", "metrics.prom", "violations.json"} <= names, names
    published = json.loads(aws.client().get_object(Bucket="kiln", Key=prefix + "result.json")["Body"].read())
    assert published["run"] == result["run"] and published["records"] == 120
