"""Data capture: batched, off the request path, partitioned by endpoint and hour, readable after a crash."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from kiln.serving.capture import CaptureRecord, CaptureWriter, now_iso, read_capture


def rec(i: int, variant: str = "blue", when: str | None = None) -> CaptureRecord:
    return CaptureRecord(inference_id=f"id-{i}", timestamp=when or now_iso(), endpoint="churn", variant=variant,
                         shadow=False, request={"instances": [{"x": i}]},
                         response={"predictions": [{"probability": i / 1000}]}, status=200, latency_ms=1.5)


def test_records_from_many_threads_are_all_written_once(tmp_path: Path) -> None:
    writer = CaptureWriter(tmp_path, "churn", flush_seconds=0.05)
    threads = [threading.Thread(target=lambda k=k: [writer.record(rec(k * 1000 + i)) for i in range(500)])
               for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.close()
    ids = [r["inference_id"] for r in read_capture(tmp_path, "churn")]
    assert len(ids) == 2000 and len(set(ids)) == 2000
    assert writer.written == 2000 and writer.dropped == 0
    [hour] = list((tmp_path / "endpoint=churn").iterdir())
    assert hour.name.startswith("hour=") and len(hour.name) == len("hour=2026-01-01T00")


def test_hour_partitions_and_time_ranges(tmp_path: Path) -> None:
    writer = CaptureWriter(tmp_path, "churn", flush_seconds=60)
    base = datetime(2026, 3, 1, 10, 30, tzinfo=UTC)
    for h in range(3):
        writer.record(rec(h, when=(base + timedelta(hours=h)).isoformat()))
    writer.close()
    assert len(list((tmp_path / "endpoint=churn").iterdir())) == 3
    got = [r["inference_id"] for r in read_capture(tmp_path, "churn", since=base + timedelta(minutes=30),
                                                   until=base + timedelta(hours=2))]
    assert got == ["id-1"]
    assert list(read_capture(tmp_path, "other")) == []


def test_sampling_keeps_about_the_share_asked(tmp_path: Path) -> None:
    writer = CaptureWriter(tmp_path, "churn", sample_percent=20, seed=1)
    kept = sum(writer.sampled() for _ in range(10_000))
    writer.close()
    assert 1800 < kept < 2200


CRASHING_WRITER = """
import sys, time
from kiln.serving.capture import CaptureRecord, CaptureWriter, now_iso
w = CaptureWriter(sys.argv[1], "churn", flush_seconds=0.1)
i = 0
while True:
    w.record(CaptureRecord(f"id-{i}", now_iso(), "churn", "blue", False, {"i": i}, {"p": 0.5}, 200, 1.0))
    i += 1
    if i % 50 == 0:
        print(i, flush=True)
        time.sleep(0.01)
"""


def test_a_killed_writer_loses_at_most_the_last_flush_and_the_store_stays_readable(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", CRASHING_WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    produced = 0
    deadline = time.monotonic() + 60
    while produced < 3000 and time.monotonic() < deadline:
        produced = int(proc.stdout.readline() or produced)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    [path] = (tmp_path / "endpoint=churn").glob("hour=*/*.jsonl")
    with path.open("a") as f:
        f.write('{"inference_id": "torn", "timest')  # what a crash mid-append can leave behind
    records = list(read_capture(tmp_path, "churn"))
    ids = [int(r["inference_id"].split("-")[1]) for r in records]
    assert ids == list(range(len(ids))), "records are whole, in order, none twice"
    assert len(ids) >= produced - 50 * 20, f"lost more than a flush interval: {len(ids)} of {produced}"
    assert json.loads(path.read_text().splitlines()[0])["endpoint"] == "churn"


def test_compare_pairs_production_and_shadow_by_inference_id(tmp_path: Path) -> None:
    import pytest

    from kiln.errors import InputError
    from kiln.serving.compare import compare

    writer = CaptureWriter(tmp_path, "churn", flush_seconds=60)

    def answer(p: float) -> dict:
        return {"predictions": [{"probability": p, "prediction": int(p >= 0.5)}]}

    # Four requests: the shadow flips the label of one (0.45 -> 0.55) and is slower; one has no shadow answer.
    for i, (prod, shad) in enumerate([(0.1, 0.1), (0.45, 0.55), (0.9, 0.8), (0.2, None)]):
        base = dict(inference_id=f"r{i}", timestamp=now_iso(), endpoint="churn", request={"instances": [{}]},
                    status=200)
        writer.record(CaptureRecord(variant="blue", shadow=False, response=answer(prod), latency_ms=2.0, **base))
        if shad is not None:
            writer.record(CaptureRecord(variant="next", shadow=True, response=answer(shad), latency_ms=8.0, **base))
    writer.close()
    doc = compare(tmp_path, "churn")
    assert (doc.requests, doc.rows, doc.shadow_variant) == (3, 3, "next")
    assert doc.label_agreement == pytest.approx(2 / 3)
    assert doc.score_mean_abs_diff == pytest.approx((0 + 0.1 + 0.1) / 3)
    assert doc.latency["shadow"].p99_ms == 8.0 and doc.latency["production"].p50_ms == 2.0
    with pytest.raises(InputError, match="no captured request has both"):
        compare(tmp_path, "other")


def test_waiting_for_the_capture_counts_production_records_and_names_the_endpoint_on_timeout(tmp_path: Path) -> None:
    import pytest

    from kiln.errors import ServiceError
    from kiln.serving.capture import wait_for_capture

    since = datetime(2026, 11, 22, 10, tzinfo=UTC)
    folder = tmp_path / "endpoint=toy" / "hour=2026-11-22T10"
    folder.mkdir(parents=True)
    rows = [{"inference_id": f"r{i}", "timestamp": f"2026-11-22T10:00:{i:02d}.000000+00:00", "shadow": i >= 3}
            for i in range(5)]
    (folder / "capture-1.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert wait_for_capture(tmp_path, "toy", since, 3) == 3
    with pytest.raises(ServiceError, match="endpoint toy captured 3 of 4 requests"):
        wait_for_capture(tmp_path, "toy", since, 4, timeout=0.2)
