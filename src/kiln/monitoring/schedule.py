"""Monitor schedules: `kiln monitor schedule` runs the monitor job every interval in a background process.

Each schedule is a file (WS/monitoring/schedules/ENDPOINT.json) and a loopback service `monitor-ENDPOINT`
(kiln.monitoring.scheduler) that `kiln status` lists, `kiln down` stops and `kiln up` starts again. Each
tick monitors the window since the previous tick. In a cluster the same job runs as a CronJob
(render_cronjob), `kiln monitor run --since EVERY`.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kiln.errors import InputError
from kiln.files import write_json_atomic
from kiln.monitoring.endpoint import capture_root, reports_folder
from kiln.monitoring.retrain import check_action
from kiln.monitoring.window import parse_duration
from kiln.process import ServiceSpec, free_ports, start, status, stop
from kiln.progress import Progress, no_progress
from kiln.workspace import CLUSTER_WORKSPACE, Workspace

FIRST_PORT = 6590
MIN_SECONDS = 1.0


@dataclass(frozen=True)
class Schedule:
    """A monitor schedule, as its file holds it."""

    endpoint: str
    every: str  # the interval as given: 30s, 15m, 1h, 1d
    every_seconds: float
    webhooks: list[str]
    on_violation: str | None
    port: int  # the scheduler process's /health and /v1/status

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class StartedSchedule:
    """A schedule whose process runs: its service name, URL and log, and the folder its runs' reports go to."""

    schedule: Schedule
    service: str
    url: str
    log: str
    reports: Path  # for people; not in the JSON document, which never named it

    def to_dict(self) -> dict[str, Any]:
        return {**self.schedule.to_dict(), "service": self.service, "url": self.url, "log": self.log}


@dataclass(frozen=True)
class ScheduleStatus:
    """A schedule, the state of its process and what the scheduler last wrote of its runs."""

    schedule: Schedule
    state: str  # running | unhealthy | stopped
    last: dict[str, Any]  # the scheduler's state file (runs, next_run, last_status, ...); {} before its first write

    def to_dict(self) -> dict[str, Any]:
        return {**self.schedule.to_dict(), "state": self.state, **self.last}


@dataclass(frozen=True)
class StoppedSchedule:
    endpoint: str
    stopped: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def schedules_folder(ws: Workspace) -> Path:
    return ws.folder("monitoring") / "schedules"


def schedule_file(ws: Workspace, endpoint: str) -> Path:
    return schedules_folder(ws) / f"{endpoint}.json"


def state_file(ws: Workspace, endpoint: str) -> Path:
    return schedules_folder(ws) / f"{endpoint}.state.json"


def _load(path: Path) -> Schedule:
    return Schedule(**json.loads(path.read_text()))


def read_schedule(ws: Workspace, endpoint: str) -> Schedule | None:
    path = schedule_file(ws, endpoint)
    return _load(path) if path.is_file() else None


def service(ws: Workspace, schedule: Schedule) -> ServiceSpec:
    host = ws.settings.services.mlflow.host
    return ServiceSpec(
        name=f"monitor-{schedule.endpoint}",
        command=[sys.executable, "-m", "kiln.monitoring.scheduler", "--workspace", str(ws.root),
                 "--endpoint", schedule.endpoint, "--host", host, "--port", str(schedule.port)],
        host=host, port=schedule.port, health_path="/health", setting=f"monitor schedule {schedule.endpoint}",
        start_timeout=60.0,
    )


def all_schedules(ws: Workspace) -> list[Schedule]:
    return [_load(p) for p in sorted(schedules_folder(ws).glob("*.json")) if not p.name.endswith(".state.json")]


def schedule_services(ws: Workspace) -> list[ServiceSpec]:
    return [service(ws, s) for s in all_schedules(ws)]


def create_schedule(ws: Workspace, endpoint: str, every: str, webhooks: list[str], on_violation: str | None,
                    progress: Progress = no_progress) -> StartedSchedule:
    """Write the schedule and start (or restart) its process; the first run comes one interval from now."""

    seconds = parse_duration(every, "--every").total_seconds()
    if seconds < MIN_SECONDS:
        raise InputError(f"--every {every}: at least {MIN_SECONDS:g}s")
    check_action(on_violation)
    check_webhooks(webhooks)
    capture_root(ws, endpoint)  # an unknown endpoint, or one that captures nothing, is refused here
    old = read_schedule(ws, endpoint)
    if old is not None:
        stop(ws.state_dir, service(ws, old))
    taken = {s.port for s in all_schedules(ws) if s.endpoint != endpoint}
    [port] = free_ports(ws.settings.services.mlflow.host, FIRST_PORT, 1, taken)
    schedule = Schedule(endpoint, every, seconds, webhooks, on_violation, port)
    write_json_atomic(schedule_file(ws, endpoint), schedule.to_dict(), default=str)
    state, _ = start(ws.state_dir, service(ws, schedule), progress)
    return StartedSchedule(schedule, state.name, state.url, state.log, reports_folder(ws, endpoint))


def delete_schedule(ws: Workspace, endpoint: str) -> StoppedSchedule:
    """Stop the schedule's process and forget it (its runs' reports stay)."""

    schedule = read_schedule(ws, endpoint)
    if schedule is None:
        raise InputError(f"no monitor schedule for endpoint {endpoint}",
                         hint="list them with `kiln monitor schedule --list`")
    stop(ws.state_dir, service(ws, schedule))
    schedule_file(ws, endpoint).unlink()
    return StoppedSchedule(endpoint)


def list_schedules(ws: Workspace) -> list[ScheduleStatus]:
    out = []
    for schedule in all_schedules(ws):
        state = state_file(ws, schedule.endpoint)
        last = json.loads(state.read_text()) if state.is_file() else {}
        out.append(ScheduleStatus(schedule, status(ws.state_dir, service(ws, schedule)).state, last))
    return out


def check_webhooks(urls: list[str]) -> None:
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise InputError(f"--webhook '{url}': not an http(s) URL")


def cron_expression(every: str) -> str:
    """The CronJob schedule for an interval of whole minutes or hours that divide the next unit, or whole days."""
    seconds = int(parse_duration(every, "--every").total_seconds())
    days, hours, minutes = seconds // 86400, seconds // 3600, seconds // 60
    if seconds % 86400 == 0:
        return "0 0 * * *" if days == 1 else f"0 0 */{days} * *"
    if seconds % 3600 == 0 and 24 % hours == 0:
        return "0 * * * *" if hours == 1 else f"0 */{hours} * * *"
    if seconds % 60 == 0 and 60 % minutes == 0:
        return "* * * * *" if minutes == 1 else f"*/{minutes} * * * *"
    raise InputError(f"--every {every}: a CronJob runs on whole minutes or hours that divide an hour or a day "
                     "evenly, or on whole days (5m, 15m, 1h, 6h, 1d)")


def _secret_env(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def render_cronjob(endpoint: str, every: str, image: str, namespace: str = "kiln",
                   on_violation: str | None = None, release: str = "kiln", model: str | None = None) -> dict[str, Any]:
    """The Kubernetes CronJob that runs this schedule's job in a cluster: the Helm chart's monitor CronJob.

    It expects what the chart (release ``release``) installs: the workspace volume `<release>-workspace`, kiln.yaml
    in the ConfigMap `<release>-settings`, the Secrets `<release>-postgresql` and `<release>-object-store`.
    """
    check_action(on_violation)
    # A cluster's endpoint is not a local one: the run is told the model it serves (its champion unless said).
    command = ["kiln", "monitor", "run", "--endpoint", endpoint, "--model", model or f"{endpoint}@champion",
               "--since", every, "--json"]
    if on_violation:
        command += ["--on-violation", on_violation]
    command += ["--workspace", CLUSTER_WORKSPACE]
    labels = {"app.kubernetes.io/name": "kiln", "app.kubernetes.io/component": "monitor",
              "kiln.dev/endpoint": endpoint}
    env = [{"name": "KILN_PROFILE", "value": "cluster"}, {"name": "HOME", "value": "/tmp"},
           _secret_env("PGPASSWORD", f"{release}-postgresql", "password"),
           _secret_env("AWS_ACCESS_KEY_ID", f"{release}-object-store", "access-key-id"),
           _secret_env("AWS_SECRET_ACCESS_KEY", f"{release}-object-store", "secret-access-key")]
    return {
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": f"{release}-monitor-{endpoint}", "namespace": namespace, "labels": labels},
        "spec": {
            "schedule": cron_expression(every), "concurrencyPolicy": "Forbid",
            "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 3,
            "jobTemplate": {"spec": {"backoffLimit": 1, "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {
                    "restartPolicy": "Never", "serviceAccountName": f"{release}-monitor",
                    "automountServiceAccountToken": False,
                    # The platform image's user (Dockerfile: kiln, 10001).
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                                        "fsGroup": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [{
                        "name": "monitor", "image": image, "command": command, "env": env,
                        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"},
                                      "limits": {"cpu": "2", "memory": "4Gi"}},
                        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}},
                        "volumeMounts": [{"name": "workspace", "mountPath": CLUSTER_WORKSPACE},
                                         {"name": "settings", "mountPath": f"{CLUSTER_WORKSPACE}/kiln.yaml",
                                          "subPath": "kiln.yaml", "readOnly": True},
                                         {"name": "tmp", "mountPath": "/tmp"}],
                    }],
                    "volumes": [{"name": "workspace", "persistentVolumeClaim": {"claimName": f"{release}-workspace"}},
                                {"name": "settings", "configMap": {"name": f"{release}-settings"}},
                                {"name": "tmp", "emptyDir": {}}],
                },
            }}},
        },
    }
