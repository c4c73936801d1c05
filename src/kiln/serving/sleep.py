"""Scale to zero on a local endpoint: a variant with `min_replicas: 0` has its model server stopped by the front once
it has had no request for `idle_seconds`, and started again by the next request, which waits for it (every request
arriving meanwhile waits for the same start) rather than fails. On a cluster Knative does this (kiln.serving.render).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kiln.errors import KilnError
from kiln.process import ServiceSpec, healthy, running, start, stop

log = logging.getLogger("kiln.sleep")


@dataclass(frozen=True)
class SleeperConfig:
    """One variant that may sleep: how long it may idle, and how its model server is started (ROUTER.json)."""

    idle_seconds: float
    state_dir: str  # the workspace's process records (kiln.process)
    name: str  # the process's name there
    command: list[str]
    host: str
    port: int
    health_path: str
    env: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def service(self) -> ServiceSpec:
        return ServiceSpec(name=self.name, command=self.command, host=self.host, port=self.port,
                           health_path=self.health_path, setting="serving.base_port", env=self.env)


class WakeFailed(Exception):
    """A sleeping variant's model server did not start."""


@dataclass
class _Sleeper:
    config: SleeperConfig
    awake: bool
    last_used: float
    in_flight: int = 0
    waking: asyncio.Task[None] | None = None
    wakes: int = 0
    sleeps: int = 0
    last_wake_seconds: float | None = None
    turning: asyncio.Lock = field(default_factory=asyncio.Lock)  # one start or stop at a time


class Sleepers:
    """The front's sleeping variants, by variant name."""

    def __init__(self, configs: dict[str, SleeperConfig]) -> None:
        now = time.monotonic()
        self._all = {name: _Sleeper(c, running(Path(c.state_dir), c.name), now) for name, c in configs.items()}
        self._stopping: set[asyncio.Task[None]] = set()

    def __contains__(self, variant: str) -> bool:
        return variant in self._all

    async def use(self, variant: str) -> None:
        """Before a request to ``variant``: its server started if it sleeps (waited for); counted as in use."""
        s = self._all[variant]
        s.in_flight += 1
        s.last_used = time.monotonic()
        if s.awake:
            return
        if s.waking is None:
            s.waking = asyncio.create_task(self._wake(s))
        try:
            await asyncio.shield(s.waking)
        except BaseException:
            s.in_flight -= 1
            raise

    def done(self, variant: str) -> None:
        """After a request to ``variant`` was answered."""
        s = self._all[variant]
        s.in_flight -= 1
        s.last_used = time.monotonic()

    async def _wake(self, s: _Sleeper) -> None:
        started = time.monotonic()
        try:
            async with s.turning:  # after a stop under way, if one is
                await asyncio.to_thread(start, Path(s.config.state_dir), s.config.service())
        except KilnError as exc:
            raise WakeFailed(f"variant server {s.config.name} did not start: {exc.message}") from None
        finally:
            s.waking = None
        s.awake, s.wakes = True, s.wakes + 1
        s.last_wake_seconds = round(time.monotonic() - started, 3)
        log.info("%s: started for a request in %.2f s", s.config.name, s.last_wake_seconds)

    def tick(self) -> None:
        """Stop each server idle for its idle_seconds with no request in flight (in the background)."""
        now = time.monotonic()
        for s in self._all.values():
            if s.awake and s.waking is None and s.in_flight == 0 and now - s.last_used >= s.config.idle_seconds:
                s.awake = False  # before stopping: a request arriving meanwhile starts it again, after the stop
                self._stopping.add(task := asyncio.create_task(self._sleep(s)))
                task.add_done_callback(self._stopping.discard)

    async def _sleep(self, s: _Sleeper) -> None:
        async with s.turning:
            spec, state_dir = s.config.service(), Path(s.config.state_dir)
            if not running(state_dir, spec.name):
                return  # gone already (stopped by hand, or crashed): the next request starts it
            if not await asyncio.to_thread(healthy, spec):
                s.awake, s.last_used = True, time.monotonic()  # still starting (a deploy, `kiln up`): idle from now
                return
            await asyncio.to_thread(stop, state_dir, spec)
        s.sleeps += 1
        log.info("%s: stopped after %.0f s without a request", s.config.name, s.config.idle_seconds)

    def report(self) -> dict[str, dict[str, Any]]:
        """Each sleeper's state, for /kiln/status."""
        return {name: {"awake": s.awake, "waking": s.waking is not None, "idle_seconds": s.config.idle_seconds,
                       "wakes": s.wakes, "sleeps": s.sleeps, "last_wake_seconds": s.last_wake_seconds}
                for name, s in self._all.items()}
