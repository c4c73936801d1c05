"""Pipeline steps in containers of the platform image: kfp.local's DockerRunner, each container set up as the chart
sets up a step's pod (`kiln.containers`). A step that deploys starts the endpoint's servers as containers of their
own, through the engine's socket mounted in the step."""

from __future__ import annotations

import codecs
import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from kiln import IMAGE
from kiln.containers import SERVICE_ENV, ContainerSetup, engine, run_args, workspace_setup
from kiln.errors import EnvironmentProblem
from kiln.settings import SETTINGS_FILE
from kiln.workspace import Workspace

RUN_LABEL = "kiln.pipeline-run"  # every container of one run carries it, so a stopped run removes its steps
SOCKET = "/var/run/docker.sock"


@dataclass(frozen=True)
class StepContainers:
    """How one run's steps are started: the containers' setup and the arguments of each step's `docker run`."""

    setup: ContainerSetup
    run_args: dict[str, Any]


def step_containers(ws: Workspace, image: str = IMAGE) -> StepContainers:
    """The containers' settings for a run on ``ws``; refuses when no engine answers or the image is not built."""

    from docker.errors import ImageNotFound
    from docker.types import Mount

    client = engine()
    try:
        client.images.get(image)
    except ImageNotFound:
        raise EnvironmentProblem(f"the image {image} is not built (no image is pulled)",
                                 hint="`make images` builds it") from None
    finally:
        client.close()
    setup = workspace_setup(ws.root, ws.root / SETTINGS_FILE, image, {RUN_LABEL: uuid.uuid4().hex[:12]})
    args = run_args(setup, {SERVICE_ENV: setup.to_env(), "DOCKER_HOST": f"unix://{SOCKET}"})
    socket = _socket()
    args["mounts"].append(Mount(SOCKET, socket, type="bind"))
    args["group_add"] = [str(os.stat(socket).st_gid)]  # the socket's group (docker), for a caller in it
    args["pid_mode"] = "host"  # the services a step starts keep pids the host and later steps see
    return StepContainers(setup=setup, run_args=args)


def _socket() -> str:
    host = os.environ.get("DOCKER_HOST", f"unix://{SOCKET}")
    if not host.startswith("unix://"):
        raise EnvironmentProblem(f"DOCKER_HOST={host}: steps reach the engine through its socket, a unix:// path")
    return host[len("unix://"):]


@contextlib.contextmanager
def containers_of(steps: StepContainers) -> Iterator[None]:
    """While a run lasts: each step's container streamed and waited for; at its end (Ctrl-C included) every step
    container of the run that is still there is removed (the services a step deployed keep running)."""

    from kfp.local import docker_task_handler

    original = docker_task_handler.run_docker_container
    docker_task_handler.run_docker_container = _run_container
    try:
        yield
    finally:
        docker_task_handler.run_docker_container = original
        _remove_steps(steps.setup.labels[RUN_LABEL])


def _run_container(client: Any, image: str, command: list[str], volumes: dict[str, Any], **args: Any) -> int:
    """kfp's own run_docker_container without auto-removal: kfp reads the exit code after the container is gone and
    then counts a failed step as a success; here the code is read first, then the container removed."""

    container = client.containers.run(image=image, command=command, volumes=volumes, detach=True, **args)
    print(f"step container {container.short_id} of {image}")
    try:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # a character may span two chunks
        for chunk in container.logs(stream=True, follow=True):
            print(decoder.decode(chunk), end="")
        print(decoder.decode(b"", final=True), end="")
        return int(container.wait()["StatusCode"])
    finally:
        with contextlib.suppress(Exception):
            container.remove(force=True)


def _remove_steps(label: str) -> None:
    with contextlib.suppress(EnvironmentProblem):
        client = engine()
        try:
            found = client.containers.list(all=True, filters={"label": f"{RUN_LABEL}={label}"})
            for container in found:
                if "kiln.service" not in container.labels:
                    with contextlib.suppress(Exception):
                        container.remove(force=True)
        finally:
            client.close()
