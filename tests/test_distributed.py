"""Distributed training on Ray Train: XGBoost and LightGBM data-parallel on two workers, a worker killed mid-job and
a job interrupted as a whole both finish from their newest checkpoint."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import KILN, clean_env, interruptible, run_kiln
from tests.test_training import FEATURES, synthetic, write_set

ITERATIONS = 6  # of ten boosting rounds each; a checkpoint every two


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("distributed") / "ws"
    assert run_kiln("init", root).code == 0
    write_set(root / "train.parquet", synthetic(n=40_000, seed=1), FEATURES)
    return root


def start(ws: Path, *args: str) -> tuple[subprocess.Popen[str], Path]:
    """`kiln train --workers 2` as a process of its own, once Ray Train has recorded its first checkpoint (a checkpoint
    being written is not yet one the job resumes from)."""
    jobs = ws / "training"
    before = set(jobs.iterdir()) if jobs.is_dir() else set()
    proc = subprocess.Popen([str(KILN), "train", "-t", str(ws / "train.parquet"), "--workers", "2", "--iterations",
                             str(ITERATIONS), "--checkpoint-every", "2", "--json", "-w", str(ws), *args],
                            env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=interruptible)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        job = next(iter(set(jobs.iterdir()) - before), None) if jobs.is_dir() else None
        recorded = job.glob("ray/*/checkpoint_manager_snapshot.json") if job is not None else []
        if any(json.loads(p.read_text())["checkpoint_results"] for p in recorded):
            assert job is not None
            return proc, job
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"no checkpoint recorded within 180 s: {proc.communicate()[1][-3000:]}")


def finished(proc: subprocess.Popen[str]) -> dict:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out)


def test_a_worker_killed_mid_job_is_replaced_and_the_job_resumes_from_its_checkpoint(ws: Path) -> None:
    proc, job = start(ws, "-f", "xgb")
    [worker, *_] = [p for p in psutil.Process(proc.pid).children(recursive=True)
                    if "RayTrainWorker" in " ".join(p.cmdline())]
    worker.kill()
    result = finished(proc)
    run = result["distributed"]
    assert run["job"] == job.name and run["workers"] == 2
    assert run["rounds"] == ITERATIONS * 10  # the model holds every round, none twice
    assert 0 < run["resumed_from_round"] < ITERATIONS * 10
    assert result["metrics"]["test"]["auc"] > 0.75  # it learned as well as one worker would on these rows
    assert json.loads((job / "job.json").read_text())["status"] == "completed"


def test_an_interrupted_job_is_finished_from_its_newest_checkpoint_into_the_same_run(ws: Path) -> None:
    proc, job = start(ws, "-f", "lgbm")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert f"kiln train --resume {job.name}" in err
    record = json.loads((job / "job.json").read_text())
    assert record["status"] == "running"

    res = run_kiln("train", "--resume", job.name, "--json", "-w", ws, isolated=True, timeout=300)
    assert res.code == 0, res.stderr[-3000:]
    result = json.loads(res.stdout)
    assert result["run_id"] == record["run_id"] and result["family"] == "lgbm"
    assert result["distributed"]["resumed_from_round"] >= 20
    assert result["distributed"]["rounds"] == ITERATIONS * 10
    assert result["metrics"]["test"]["auc"] > 0.75
    again = run_kiln("train", "--resume", job.name, "-w", ws)
    assert again.code == 1 and "already finished" in again.stderr


@pytest.mark.parametrize(("args", "needle"), [
    (["-t", "train.parquet", "-f", "mlp", "--workers", "2"], "'mlp' trains on one worker"),
    (["--resume", "train-xgb-2w-19990101-000000"], "no distributed training job 'train-xgb-2w-19990101-000000'"),
    (["-t", "train.parquet", "--workers", "2", "-p", "max_depth=99"], "max_depth"),
    (["-t", "train.parquet", "-f", "xgb", "--workers", "2", "--rule", "overfit=stop"], "the Debugger watches"),
])
def test_bad_distributed_input_is_named_and_starts_nothing(ws: Path, args: list[str], needle: str) -> None:
    before = sorted((ws / "training").glob("*")) if (ws / "training").is_dir() else []
    res = run_kiln("train", *[str(ws / a) if a.endswith(".parquet") else a for a in args], "-w", ws)
    assert res.code == 1 and needle in res.stderr, res.stderr
    after = sorted((ws / "training").glob("*")) if (ws / "training").is_dir() else []
    assert after == before
