"""Containers of the platform image on this machine's Docker engine, set up as the chart sets up a pod: read-only
root, every capability dropped, no new privileges, /tmp a scratch volume, HOME=/tmp, the host's network (loopback
services answer), and the workspace with kiln.yaml mounted read-only over it.

The workspace is mounted at its own path, not at the chart's /kiln/workspace: the stores record paths (MLflow's
artifact locations, Feast's sources, published bundles), and they must mean the same file to the host and the
containers. Containers run as the caller's user and group, so what they write in the workspace stays the caller's.

A pipeline step in a container that starts a local service (an endpoint's front and variants) starts it as a
container of its own: a step's container ends with the step, and everything started inside it would end too. The
step learns how from ``SERVICE_ENV``; the services share the host's process namespace, so their pids mean the same
on the host and in every step (`kiln.process` records and stops them as it does processes).
"""

from __future__ import annotations

import json
import os
import shlex
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kiln.errors import EnvironmentProblem

SERVICE_ENV = "KILN_SERVICE_CONTAINER"  # JSON of a ContainerSetup: services are started as containers like it
SCRATCH = "rw,exec,nosuid,size=8g"  # TVM loads the libraries it compiles from /tmp: it must allow exec
SHARED_MEMORY = "8g"  # Ray's object store lives in /dev/shm (a limit, not an allocation); Docker gives 64 MB
# Variables a container gets from the caller's environment, as a pod gets them from the chart's env and Secrets.
PASSED_PREFIXES = ("KILN_", "AWS_", "MLFLOW_")


@dataclass(frozen=True)
class ContainerSetup:
    """What every container of one run shares: the image, the user, the host paths mounted (at the same path)."""

    image: str
    user: str
    mounts: list[str]
    read_only_mounts: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> ContainerSetup | None:
        text = os.environ.get(SERVICE_ENV)
        return cls(**json.loads(text)) if text else None


def workspace_setup(root: Path, settings_file: Path, image: str, labels: dict[str, str]) -> ContainerSetup:
    """Containers on the workspace at ``root``, run as the caller."""
    return ContainerSetup(image=image, user=f"{os.getuid()}:{os.getgid()}", mounts=[str(root)],
                          read_only_mounts=[str(settings_file)], labels=labels)


def run_args(setup: ContainerSetup, env: dict[str, str]) -> dict[str, Any]:
    """`docker run`'s arguments (the Docker SDK's names) for a container of ``setup`` with ``env`` added to the
    variables passed from this process."""

    from docker.types import Mount

    passed = {k: v for k, v in os.environ.items() if k.startswith(PASSED_PREFIXES)}
    return {
        "network_mode": "host",
        "user": setup.user,
        "read_only": True,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "tmpfs": {"/tmp": SCRATCH},
        "shm_size": SHARED_MEMORY,
        "environment": {**passed, "HOME": "/tmp", "GIT_PYTHON_REFRESH": "quiet", **env},
        "labels": setup.labels,
        "mounts": [Mount(p, p, type="bind") for p in setup.mounts]
        + [Mount(p, p, type="bind", read_only=True) for p in setup.read_only_mounts],
    }


def engine() -> Any:
    """A client of the Docker engine that answers here (DOCKER_HOST or the default socket)."""

    import docker

    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        raise EnvironmentProblem(f"no Docker engine answers ({type(exc).__name__})",
                                 hint="`scripts/docker-engine.sh up` starts one; `make images` builds the images"
                                 ) from None
    return client


def start_service(setup: ContainerSetup, name: str, command: list[str], env: dict[str, str], cwd: Path,
                  log: Path) -> int:
    """Start ``command`` detached in a container of its own, its output appended to ``log``; its pid on the host."""

    from docker import errors as docker_errors

    client = engine()
    try:
        args = run_args(setup, env)
        container = client.containers.run(
            image=setup.image, command=["sh", "-c", 'exec "$@" >>"$0" 2>&1', str(log), *command], detach=True,
            auto_remove=True, pid_mode="host", working_dir=str(cwd), name=f"kiln-{name}-{uuid.uuid4().hex[:6]}",
            **{**args, "labels": {**setup.labels, "kiln.service": name}})
        try:
            container.reload()
            pid = int(container.attrs["State"]["Pid"])
        except docker_errors.NotFound:
            pid = 0  # it ended and was removed before its pid was read
    finally:
        client.close()
    if not pid:
        raise EnvironmentProblem(f"{name}: its container exited at once: {shlex.join(command)}",
                                 hint=f"its log: {log}")
    return pid
