"""Joining Ray: in process on a laptop (`ray.address: local`), or a Ray cluster (`ray://host:10001`)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kiln.errors import ServiceError
from kiln.workspace import Workspace


def start_ray(ws: Workspace) -> None:
    """Start (or join) the Ray that ``ray.address`` names, unless this process has one going already."""
    import ray

    if ray.is_initialized():
        return
    settings = ws.settings.ray
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": False}
    if settings.address == "local":
        ray.init(num_cpus=settings.num_cpus, **kwargs)
    else:
        try:
            ray.init(address=settings.address, **kwargs)
        except ConnectionError as exc:
            raise ServiceError(f"no Ray cluster answers at ray.address {settings.address} ({exc})",
                               hint="start the Ray cluster (manifests/overlays/production), or set ray.address: "
                                    "local to run inside the step") from None


@contextmanager
def ray_session(ws: Workspace) -> Iterator[None]:
    """Ray for the length of a job: one this job started ends with it; one the caller had going stays."""
    import ray

    started_here = not ray.is_initialized()
    start_ray(ws)
    try:
        yield
    finally:
        if started_here:
            ray.shutdown()
