"""The warm step server: a step forked from it is a process of its own, and stopping a run interrupts its steps."""


import threading
import time
from pathlib import Path

from kfp import dsl

from kiln.workflow.step_server import task_of, warm_steps


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def sleepy(marker: str) -> str:
    import os
    import pathlib
    import time

    pathlib.Path(marker).write_text(str(os.getpid()))
    time.sleep(120)
    return "woke"


def test_only_lightweight_component_commands_are_forked() -> None:
    command = ["sh", "-ec", "program_path=$(mktemp -d)\n python3 -m kfp.dsl.executor_main ...", "PROGRAM",
               "--executor_input", "{}"]
    assert task_of(command) == ("PROGRAM", ["--executor_input", "{}"])
    assert task_of(["sh", "-c", "pip install x && python3 -m kfp.dsl.executor_main", "P"]) is None
    assert task_of(["python3", "-m", "something"]) is None


def test_a_step_runs_in_its_own_process_and_stopping_the_run_interrupts_it(tmp_path: Path) -> None:
    from kfp import local

    marker = tmp_path / "pid"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"),
               raise_on_error=False)
    outcome: dict = {}
    with warm_steps() as server:
        def run() -> None:
            started = time.monotonic()
            task = sleepy(marker=str(marker))
            outcome["seconds"] = time.monotonic() - started
            outcome["output"] = task.outputs if hasattr(task, "outputs") else None

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 120
        while not (server.running and marker.exists()) and time.monotonic() < deadline:
            time.sleep(0.1)
        pid = int(marker.read_text())
        assert pid in server.running and pid != server.proc.pid  # the step is a process of its own
        server.stop()
        thread.join(timeout=60)
    assert not thread.is_alive(), "the step went on after its run was stopped"
    assert outcome["seconds"] < 100  # interrupted, not slept out
