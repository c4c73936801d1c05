"""A warm process that starts each step of a local pipeline run by forking, so a step does not pay the engines'
import time (seconds each) again.

KFP's SubprocessRunner starts every task as `sh -ec '... python3 -m kfp.dsl.executor_main ...' PROGRAM ARGS`. Here
the server imports kfp's executor and the engines once; for each task it forks a child that is that process: its
own argv, environment, folder, stdout and stderr, exit code. A step still runs alone in a process of its own, as it
would in a pod. kfp has no such hook, so Kiln replaces the runner's `run_local_subprocess` while a run lasts.

Usage (started by `StepServer.start`): python -m kiln.workflow.step_server --socket PATH
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import gc
import importlib
import io
import json
import os
import runpy
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

from kiln.errors import ServiceError

EXECUTOR = "kfp.dsl.executor_main"
# Imported once by the server, before any fork: what the steps import at their start. Modules that start threads when
# imported stay out (a fork copies one thread only), checked by the server itself.
# prometheus_client first: it picks in-process or multi-process values when imported, by the environment, and Feast
# sets that environment when imported.
PRELOAD = ("prometheus_client", "kfp.dsl.executor", "kiln.workflow.data_steps", "kiln.workflow.model_steps",
           "kiln.workflow.release_steps", "pandas", "numpy", "pyarrow.parquet", "sklearn.model_selection",
           "lightgbm", "mlflow", "mlflow.pyfunc", "mlflow.tracking", "feast", "onnx", "onnxruntime")
READY_SECONDS = 180.0
STOP_GRACE_SECONDS = 10.0  # for a step to end after Ctrl-C before it is terminated
MAX_REQUEST = 16 * 1024 * 1024


class StepServer:
    """The driver's side: start the server, run a task's command in a fork of it, stop it."""

    def __init__(self, folder: Path) -> None:
        self.socket_path = folder / "steps.sock"
        self.proc: subprocess.Popen[bytes] | None = None
        self.running: set[int] = set()  # the steps' processes now running

    def start(self) -> None:
        """Start the server and wait until it has imported what the steps need."""
        log = open(self.socket_path.with_suffix(".log"), "wb")  # noqa: SIM115 - open while the server runs
        self.proc = subprocess.Popen([sys.executable, "-m", "kiln.workflow.step_server", "--socket",
                                      str(self.socket_path)], stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + READY_SECONDS
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServiceError(f"the pipeline's step server stopped while starting (exit {self.proc.returncode})",
                                   hint=f"its log: {self.socket_path.with_suffix('.log')}")
            if self.socket_path.exists():
                return
            time.sleep(0.05)
        self.stop()
        raise ServiceError(f"the pipeline's step server did not start within {READY_SECONDS:.0f} s")

    def stop(self) -> None:
        """Interrupt the steps still running (as Ctrl-C would have, had they been the terminal's), end those that
        ignore it after a grace period, stop the server."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            for pid in list(self.running):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + STOP_GRACE_SECONDS
            while self.running and time.monotonic() < deadline:
                time.sleep(0.1)  # a step leaves `running` when its output ends
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def run(self, full_command: list[str], env_vars: dict[str, str] | None = None) -> int:
        """KFP's `run_local_subprocess` in a fork of the server: the task's lines printed as they come, its exit code
        back. A command that is not a lightweight component's runs as kfp would run it."""
        task = task_of(full_command)
        if task is None or self.proc is None:
            return _run_process(full_command, env_vars)
        program, args = task
        request = {"program": program, "args": args, "cwd": os.getcwd(),
                   "env": {**os.environ, **(env_vars or {}), "_KFP_RUNTIME": "true"}}
        read_end, write_end = os.pipe()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            try:
                conn.connect(str(self.socket_path))
                socket.send_fds(conn, [json.dumps(request).encode() + b"\n"], [write_end])
            except OSError as exc:
                os.close(read_end)
                raise ServiceError(f"the pipeline's step server is not answering: {exc}",
                                   hint=f"its log: {self.socket_path.with_suffix('.log')}") from exc
            finally:
                os.close(write_end)
            answers = conn.makefile("rb")
            pid = int(json.loads(answers.readline() or b'{"pid": 0}')["pid"])
            if pid > 0:  # 0 would name this whole process group to os.kill
                self.running.add(pid)
            try:
                with open(read_end, encoding="utf-8", errors="replace") as output:
                    for line in output:
                        print(line, end="")
                print("\n")
                answer = answers.read()
            finally:
                self.running.discard(pid)
        try:
            return int(json.loads(answer)["exit_code"])
        except (ValueError, KeyError):
            return 1  # the step's process ended without saying how (killed)


def task_of(full_command: Sequence[str]) -> tuple[str, list[str]] | None:
    """(the component's program, the executor's arguments) of a lightweight component's command, else None."""
    if len(full_command) < 4 or full_command[0] != "sh" or full_command[1] not in ("-c", "-ec") \
            or EXECUTOR not in full_command[2] or "pip install" in full_command[2]:
        return None
    return full_command[3], list(full_command[4:])


def _run_process(full_command: list[str], env_vars: dict[str, str] | None) -> int:
    """What kfp's own `run_local_subprocess` does."""
    env = {**os.environ, **env_vars} if env_vars else None
    with subprocess.Popen(full_command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                          env=env) as process:
        if process.stdout:
            for line in iter(process.stdout.readline, ""):
                print(line, end="")
            print("\n")
        return process.wait()


@contextlib.contextmanager
def warm_steps() -> Iterator[StepServer]:
    """While it lasts, kfp's SubprocessRunner starts each task as a fork of a warm step server."""
    from kfp.local import subprocess_task_handler

    folder = Path(tempfile.mkdtemp(prefix="kiln-steps-"))  # short: a socket's path has at most 107 bytes
    server = StepServer(folder)
    server.start()
    original = subprocess_task_handler.run_local_subprocess
    subprocess_task_handler.run_local_subprocess = server.run
    try:
        yield server
    finally:
        subprocess_task_handler.run_local_subprocess = original
        died = server.proc is not None and server.proc.poll() is not None
        server.stop()
        if not died:  # a server that died keeps its log for the error that names it
            shutil.rmtree(folder, ignore_errors=True)


# --- the server's side -----------------------------------------------------------------------------------------
def _preload(modules: Sequence[str]) -> list[str]:
    """Import each module; one that leaves a thread running is reported (a fork would lose that thread)."""
    skipped = []
    for name in modules:
        before = threading.active_count()
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - an engine that fails to import is the step's to report
            skipped.append(f"{name}: {type(exc).__name__}: {exc}")
        if threading.active_count() > before:
            skipped.append(f"{name}: started a thread on import")
    return skipped


def _child(conn: socket.socket, fd: int, request: dict[str, Any], preloaded_env: dict[str, str]) -> None:
    """In the forked child: become the task's process and run kfp's executor; the exit code goes back by the socket,
    then it ends as a process does (threads joined, exit handlers run)."""
    code = 1
    try:
        conn.sendall(json.dumps({"pid": os.getpid()}).encode() + b"\n")  # so the run can interrupt this step
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        os.close(devnull)
        cast(io.TextIOWrapper, sys.stdout).reconfigure(line_buffering=True)  # typeshed declares them TextIO
        cast(io.TextIOWrapper, sys.stderr).reconfigure(line_buffering=True)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        for key, value in preloaded_env.items():  # what an engine set when the server imported it, as it would here
            os.environ.setdefault(key, value)
        program = Path(tempfile.mkdtemp()) / "ephemeral_component.py"
        program.write_text(request["program"])
        sys.argv = [EXECUTOR, "--component_module_path", str(program), *request["args"]]
        runpy.run_module(EXECUTOR, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - the task's error, printed as Python prints it, then its exit code
        traceback.print_exc()
        code = 1
    with contextlib.suppress(OSError):
        conn.sendall(json.dumps({"exit_code": code}).encode())
    conn.close()
    _exit(code)


def _exit(code: int) -> None:
    """End as a process ends (threads joined, exit handlers run, output flushed) but without tearing down every
    module object inherited from the server: that touches each one, and copying those pages took seconds."""
    # What the interpreter does at exit, which os._exit below skips: threading's own exit hooks (thread pools told to
    # stop), non-daemon threads joined, then the exit handlers.
    threading._shutdown()  # type: ignore[attr-defined]  # private to threading; typeshed leaves it out
    atexit._run_exitfuncs()
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def serve(socket_path: Path) -> None:
    """Import what the steps need, then fork a child for every request until terminated."""
    before = dict(os.environ)
    for problem in _preload(PRELOAD):
        print(f"not preloaded: {problem}", flush=True)
    preloaded_env = {k: v for k, v in os.environ.items() if before.get(k) != v}
    gc.freeze()  # what is loaded now stays out of the collector's passes, so children do not copy it
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the system; their codes go by socket
    staging = socket_path.with_name(f".{socket_path.name}")
    staging.unlink(missing_ok=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(staging))
        listener.listen(16)
        staging.rename(socket_path)  # the socket appears when the server is ready
        while True:
            conn, _ = listener.accept()
            message, fds, _, _ = socket.recv_fds(conn, MAX_REQUEST, 1)
            while not message.endswith(b"\n"):
                more = conn.recv(MAX_REQUEST)
                if not more:
                    break
                message += more
            if len(fds) != 1:
                conn.close()
                continue
            if os.fork() == 0:
                listener.close()
                _child(conn, fds[0], json.loads(message), preloaded_env)  # never returns
            os.close(fds[0])
            conn.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Kiln's warm process for the steps of a local pipeline run")
    parser.add_argument("--socket", type=Path, required=True)
    args = parser.parse_args(argv)
    serve(args.socket)


if __name__ == "__main__":
    main()
