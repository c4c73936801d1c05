"""Pipelines with every step in a container of the platform image (`kiln pipeline run --runner docker`, kfp.local's
DockerRunner), set up as the chart sets up a step's pod. The main job's module runs monitor_retrain this way too."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from tests.conftest import clean_env, run_kiln
from tests.containers import Images, docker
from tests.test_stack import free_port

pytestmark = pytest.mark.slow
ENV = clean_env(KILN_SERVING__BASE_PORT=str(free_port()))


def kiln(*args: str | Path, env: dict[str, str] = ENV, timeout: float = 300):
    return run_kiln(*args, env=env, timeout=timeout)


def containers(label: str, running_only: bool = False) -> list[str]:
    """Names of the containers that carry ``label`` (stopped ones too, unless ``running_only``)."""
    listed = ["--filter", "status=running"] if running_only else ["-a"]
    return docker("ps", *listed, "--filter", f"label={label}", "--format", "{{.Names}}").stdout.split()


def test_churn_training_runs_each_step_in_a_container_and_deploys_its_servers_as_containers(
        images: Images, churn_dataset: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    assert kiln("init", ws).code == 0
    shutil.copytree(churn_dataset, ws / "data" / "churn")
    try:
        res = kiln("pipeline", "run", "churn_training", "-w", ws, "--runner", "docker", "--param", "trials=1",
                   "--param", "max_iterations=1", "--param", "targets=x86_64,aarch64", "--param", "bake_seconds=0",
                   "--param", "explain_rows=50", "--json", timeout=900)
        assert res.code == 0, res.stderr[-6000:]
        run = json.loads(res.stdout)
        assert run["status"] == "SUCCESS" and run["runner"] == "docker"
        tasks = [t["name"] for t in run["tasks"]]
        # the gate passed and the loop ran once per target, each iteration in its own containers
        assert {"register-model", "explain-model", "deploy-endpoint", "baseline-monitor"} <= set(tasks)
        assert sorted(t for t in tasks if t.startswith("compile-model")) == ["compile-model", "compile-model #2"]
        assert len([t for t in tasks if t.startswith("publish-artifact")]) == 2
        log = Path(run["log"]).read_text()
        assert log.count("step container ") == len(tasks) and f" of {images.platform}" in log
        published = {p.name for p in (ws / "artifacts" / "published" / "targets").iterdir()}
        assert {"x86_64", "aarch64"} <= published, published
        # the endpoint outlives the deploy step's container: its front and variant are containers of their own
        status = kiln("endpoint", "status", "churn", "-w", ws, "--json")
        assert status.code == 0, status.stderr
        assert set(json.loads(status.stdout)["processes"].values()) == {"running"}, status.stdout
        served = containers("kiln.pipeline-run")
        assert len([n for n in served if n.startswith("kiln-endpoint-churn")]) == 2, served
        assert not [n for n in served if not n.startswith("kiln-")], "the step containers were removed"
        # what the steps wrote stays the caller's
        assert {p.stat().st_uid for p in (ws / "monitoring").rglob("*")} == {__import__("os").getuid()}
    finally:
        kiln("endpoint", "delete", "churn", "-w", ws)
    deadline = time.monotonic() + 20  # the engine notes a container's end a moment after its process ends
    while [n for n in containers("kiln.pipeline-run", running_only=True) if n.startswith("kiln-endpoint-churn")]:
        assert time.monotonic() < deadline, "deleting the endpoint stops its containers"
        time.sleep(0.5)


def test_a_step_failing_in_its_container_stops_the_run_with_its_error(images: Images, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    assert kiln("init", ws).code == 0
    res = kiln("pipeline", "run", "churn_training", "-w", ws, "--runner", "docker", "--param",
               f"data={tmp_path / 'missing'}", timeout=300)
    assert res.code == 1, res.stderr[-3000:]
    assert "task validate-data failed: InputError: data" in res.stderr and "give a dataset folder" in res.stderr
    [run] = (ws / "pipelines" / "runs").iterdir()
    assert json.loads((run / "run.json").read_text())["runner"] == "docker"
    assert run_kiln("models", "list", "-w", ws, "--json").stdout.strip() == "[]"


def test_without_an_engine_the_docker_runner_says_how_to_start_one(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    assert kiln("init", ws).code == 0
    env = {**ENV, "DOCKER_HOST": f"unix://{tmp_path / 'no.sock'}"}
    res = kiln("pipeline", "run", "churn_training", "-w", ws, "--runner", "docker", env=env)
    assert res.code == 2 and "no Docker engine answers" in res.stderr and "docker-engine.sh up" in res.stderr
    assert not (ws / "pipelines" / "runs").exists() or not list((ws / "pipelines" / "runs").iterdir())
    res = kiln("pipeline", "run", "churn_training", "-w", ws, "--runner", "podman")
    assert res.code == 1 and "--runner podman: expected one of subprocess, docker" in res.stderr
