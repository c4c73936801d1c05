"""Local service processes: start detached, health-check, record in pid files, stop by group."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Set
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kiln.containers import ContainerSetup, start_service
from kiln.errors import PortInUse, ServiceError
from kiln.files import write_text_atomic
from kiln.progress import Progress, no_progress

STOP_GRACE_SECONDS = 15.0


@dataclass(frozen=True)
class ServiceSpec:
    """How to run one local service."""

    name: str
    command: list[str]
    host: str
    port: int
    health_path: str
    setting: str  # the settings key that holds its port, for error hints
    start_timeout: float = 120.0
    env: dict[str, str] = field(default_factory=dict)
    prepare: Callable[[], None] | None = None  # run before the process starts (e.g. write its config)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


@dataclass
class ServiceState:
    """What `kiln status` reports for one service."""

    name: str
    state: str  # running | unhealthy | stopped
    url: str
    pid: int | None
    log: str

    @property
    def running(self) -> bool:
        return self.state == "running"


def pid_file(state_dir: Path, name: str) -> Path:
    return state_dir / "run" / f"{name}.pid"


def log_file(state_dir: Path, name: str) -> Path:
    return state_dir / "logs" / f"{name}.log"


def _read_pid(state_dir: Path, name: str) -> dict[str, Any] | None:
    path = pid_file(state_dir, name)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if _alive(record) else None


def running(state_dir: Path, name: str) -> bool:
    """Whether the process recorded under ``name`` still runs (no health check: a pid file and the process)."""
    return _read_pid(state_dir, name) is not None


def _alive(record: dict[str, Any]) -> bool:
    """The recorded process still runs and is the same process (pids get reused)."""
    import psutil

    try:
        proc = psutil.Process(int(record["pid"]))
        same: bool = abs(proc.create_time() - float(record["create_time"])) < 1.0 and proc.status() != psutil.STATUS_ZOMBIE
        return same
    except (psutil.Error, KeyError, TypeError, ValueError):
        return False


def healthy(spec: ServiceSpec, timeout: float = 2.0) -> bool:
    import httpx

    try:
        return httpx.get(spec.url + spec.health_path, timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_ports(host: str, start: int, count: int, taken: Set[int] = frozenset()) -> list[int]:
    """``count`` ports from ``start`` up that nothing listens on and ``taken`` does not hold."""
    ports: list[int] = []
    port = start
    while len(ports) < count and port < 65535:
        if port not in taken and port_free(host, port):
            ports.append(port)
        port += 1
    return ports



def status(state_dir: Path, spec: ServiceSpec) -> ServiceState:
    record = _read_pid(state_dir, spec.name)
    log = str(log_file(state_dir, spec.name))
    if record is None:
        return ServiceState(spec.name, "stopped", spec.url, None, log)
    url = f"http://{record['host']}:{record['port']}"
    probe = ServiceSpec(spec.name, [], str(record["host"]), int(record["port"]), spec.health_path, spec.setting)
    return ServiceState(spec.name, "running" if healthy(probe) else "unhealthy", url, int(record["pid"]), log)


def start(state_dir: Path, spec: ServiceSpec, progress: Progress = no_progress) -> tuple[ServiceState, bool]:
    """Start ``spec`` unless it already runs; returns its state and whether it was started now."""
    [(state, started)] = start_all(state_dir, [spec], progress)
    return state, started


def start_all(state_dir: Path, specs: list[ServiceSpec], progress: Progress = no_progress
              ) -> list[tuple[ServiceState, bool]]:
    """Start those of ``specs`` that do not run, side by side, and wait until each is healthy; returns each one's
    state and whether it was started now, in the order given. A taken port is refused before anything starts; a
    service that does not come up is stopped and its error raised once the others were waited for (those that came
    up keep running)."""
    current = {spec.name: status(state_dir, spec) for spec in specs}
    for spec in specs:
        if current[spec.name].state == "stopped" and not port_free(spec.host, spec.port):
            raise PortInUse(
                f"{spec.name}: port {spec.port} on {spec.host} is already taken by another process",
                hint=f"stop that process, or choose another port with {spec.setting} in kiln.yaml "
                f"(or KILN_{spec.setting.upper().replace('.', '__')})",
            )
    launched: dict[str, tuple[int, subprocess.Popen[bytes] | None]] = {}
    for spec in sorted(specs, key=lambda s: s.prepare is not None):  # the others start while these prepare
        if current[spec.name].state == "stopped":
            launched[spec.name] = _launch(state_dir, spec, progress)
    states: list[tuple[ServiceState, bool]] = []
    failure: ServiceError | None = None
    for spec in specs:
        state = current[spec.name]
        if state.state == "running":
            states.append((state, False))
            continue
        pid, proc = launched.get(spec.name, (state.pid, None))
        if spec.name not in launched:
            progress(f"{spec.name}: process {state.pid} is up but not healthy yet; waiting")
        assert pid is not None  # "unhealthy" is only reported from a pid record
        try:
            states.append((_wait_healthy(state_dir, spec, pid, proc), spec.name in launched))
        except ServiceError as exc:
            failure = failure or exc
    if failure is not None:
        raise failure
    return states


def _launch(state_dir: Path, spec: ServiceSpec, progress: Progress) -> tuple[int, subprocess.Popen[bytes] | None]:
    """Prepare and start the service, detached in its own group (in a pipeline step's container: a container of its
    own), and record its pid; does not wait. Its pid back, and its process when it is a child of this one."""
    if spec.prepare is not None:
        progress(f"{spec.name}: preparing")
        spec.prepare()
    for sub in ("run", "logs"):
        (state_dir / sub).mkdir(parents=True, exist_ok=True)
    log = log_file(state_dir, spec.name)
    proc: subprocess.Popen[bytes] | None = None
    if (setup := ContainerSetup.from_env()) is not None:
        pid = start_service(setup, spec.name, spec.command, spec.env, state_dir, log)
    else:
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                spec.command,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group, so stop() reaches every worker
                env={**os.environ, **spec.env},
                cwd=state_dir,
            )
        pid = proc.pid
    import psutil

    try:
        created = psutil.Process(pid).create_time()
    except psutil.Error:
        created = 0.0  # gone already: the wait for its health reports it exited, with its log
    record = {"pid": pid, "create_time": created, "host": spec.host,
              "port": spec.port, "command": spec.command, "started_at": time.time()}
    write_text_atomic(pid_file(state_dir, spec.name), json.dumps(record))
    progress(f"{spec.name}: started (pid {pid}), waiting for {spec.url}{spec.health_path}")
    return pid, proc


def _wait_healthy(state_dir: Path, spec: ServiceSpec, pid: int, proc: subprocess.Popen[bytes] | None = None) -> ServiceState:
    deadline = time.monotonic() + spec.start_timeout
    while time.monotonic() < deadline:
        if healthy(spec):
            return status(state_dir, spec)
        exited = proc.poll() if proc is not None else (None if _read_pid(state_dir, spec.name) else 1)
        if exited is not None:
            pid_file(state_dir, spec.name).unlink(missing_ok=True)
            raise ServiceError(f"{spec.name} exited while starting (code {exited}); last log lines:\n{_tail(log_file(state_dir, spec.name))}",
                               hint=f"full log: {log_file(state_dir, spec.name)}")
        time.sleep(0.2)
    stop(state_dir, spec)
    raise ServiceError(f"{spec.name} did not become healthy within {spec.start_timeout:.0f}s; stopped it. Last log lines:\n"
                       f"{_tail(log_file(state_dir, spec.name))}", hint=f"full log: {log_file(state_dir, spec.name)}")


def stop(state_dir: Path, spec: ServiceSpec) -> bool:
    """Stop the service's whole process group; returns whether anything was running."""
    return bool(stop_all(state_dir, [spec]))


def stop_all(state_dir: Path, specs: list[ServiceSpec]) -> list[str]:
    """Stop each service's whole process group, all signalled at once and waited for together (a group still there
    after the grace period is killed); returns the names of those that were running, in the order given."""
    import psutil

    running: list[str] = []
    groups: list[int] = []
    for spec in specs:
        record = _read_pid(state_dir, spec.name)
        pid_file(state_dir, spec.name).unlink(missing_ok=True)
        if record is None:
            continue
        running.append(spec.name)
        pgid = _pgid(int(record["pid"]))
        if pgid is not None:
            groups.append(pgid)
    members = [p for p in psutil.process_iter(["pid"]) if _pgid(p.pid) in groups] if groups else []
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
    _, alive = psutil.wait_procs(members, timeout=STOP_GRACE_SECONDS)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    return running


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
