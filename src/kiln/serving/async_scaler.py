"""A local asynchronous endpoint's workers, as many as its backlog asks for (KEDA's ScaledObject does this on a
cluster): ceil(backlog / backlog_per_worker) of them, at most ``max``; none are stopped while requests wait, and once
the queue has been empty and every worker idle for ``idle_seconds`` they go down to ``min`` (to zero by default).
A busy worker is never stopped: it answers what it holds first.

Each worker is a process of its own (kiln.serving.async_worker) with a health port that says whether it is busy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from kiln.errors import KilnError
from kiln.process import ServiceSpec, pid_file, running, start, stop

log = logging.getLogger("kiln.async_scaler")
INTERVAL_SECONDS = 0.5
WORKER_START_SECONDS = 300.0  # loading a model (a TVM bundle's compile is not done here) takes seconds, not minutes
# After a worker fails to start, the next start waits this long, doubled at each failure up to the most: a worker
# that cannot start (a missing model, a broken store) is not restarted in a loop that takes the machine's cores.
RETRY_SECONDS, MOST_RETRY_SECONDS = 2.0, 60.0


@dataclass(frozen=True)
class ScalerConfig:
    endpoint: str
    state_dir: str  # the workspace's process records (kiln.process)
    worker_config: str  # WORKER.json of kiln.serving.async_worker
    host: str
    min: int
    max: int
    backlog_per_worker: int
    idle_seconds: float
    env: dict[str, str]


def worker_name(endpoint: str, index: int) -> str:
    return f"endpoint-{endpoint}-worker-{index}"


def worker_service(config: ScalerConfig, index: int, port: int = 0) -> ServiceSpec:
    """Worker ``index``'s process (``port``: its health port; 0 where only its name matters, to stop it)."""
    return ServiceSpec(name=worker_name(config.endpoint, index), host=config.host, port=port, health_path="/health",
                       setting="serving.base_port", start_timeout=WORKER_START_SECONDS, env=config.env,
                       command=[sys.executable, "-m", "kiln.serving.async_worker", "--worker-config", config.worker_config,
                                "--health-port", str(port), "--host", config.host])


def running_workers(state_dir: Path, endpoint: str, most: int = 64) -> list[int]:
    """The indexes of the endpoint's workers that run."""
    return [i for i in range(most) if running(state_dir, worker_name(endpoint, i))]


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class Scaler:
    """Decides, every INTERVAL_SECONDS or when woken, how many workers run, and starts or stops them."""

    def __init__(self, config: ScalerConfig) -> None:
        self.config = config
        self.state_dir = Path(config.state_dir)
        self.workers = 0
        self.backlog = 0
        self.starts = self.stops = 0
        self.problem: str | None = None  # why the last start failed
        self.failed_starts = 0
        self._retry_in = 0.0
        self._retry_at = 0.0
        self._idle_since: float | None = None
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """A request was queued: decide now rather than at the next tick."""
        self._wake.set()

    def wanted(self, backlog: int, running_now: int, busy: int, now: float) -> int:
        """How many workers to run, given the backlog, those running and those of them busy."""
        c = self.config
        if backlog > 0 or busy > 0:
            self._idle_since = None
            want = max(running_now, math.ceil(backlog / c.backlog_per_worker) + busy) if backlog else running_now
        else:
            self._idle_since = self._idle_since if self._idle_since is not None else now
            want = running_now if now - self._idle_since < c.idle_seconds else c.min
        return max(c.min, min(c.max, want))

    async def step(self, backlog: int) -> None:
        c = self.config
        indexes = running_workers(self.state_dir, c.endpoint, c.max + 8)
        states = await asyncio.gather(*(self._busy(i) for i in indexes))
        busy = sum(1 for s in states if s)
        self.backlog, self.workers = backlog, len(indexes)
        want = self.wanted(backlog, len(indexes), busy, time.monotonic())
        if want > len(indexes) and time.monotonic() >= self._retry_at:
            free = [i for i in range(c.max + 8) if i not in indexes][:want - len(indexes)]
            started = await asyncio.gather(*(asyncio.to_thread(self._start, i) for i in free))
            if all(started):
                self._retry_in = 0.0
            else:
                self._retry_in = min(max(2 * self._retry_in, RETRY_SECONDS), MOST_RETRY_SECONDS)
                self._retry_at = time.monotonic() + self._retry_in
                self.problem = f"{self.problem} (next start in {self._retry_in:.0f} s)"
        elif want < len(indexes):
            idle = [i for i, b in zip(indexes, states) if b is False][::-1][:len(indexes) - want]
            for i in idle:
                await asyncio.to_thread(stop, self.state_dir, worker_service(c, i))
                self.stops += 1
                log.info("%s: stopped worker %d (queue empty for %.0f s)", c.endpoint, i, c.idle_seconds)
        self.workers = len(running_workers(self.state_dir, c.endpoint, c.max + 8))

    def _start(self, index: int) -> bool:
        try:
            start(self.state_dir, worker_service(self.config, index, _free_port(self.config.host)))
            self.starts += 1
            self.problem = None
            log.info("%s: started worker %d", self.config.endpoint, index)
            return True
        except KilnError as exc:
            self.failed_starts += 1
            self.problem = exc.message
            log.error("%s: worker %d did not start: %s", self.config.endpoint, index, exc.message)
            return False

    async def _busy(self, index: int) -> bool | None:
        """Whether worker ``index`` holds a request (None: its health port does not answer)."""
        import httpx

        record = pid_file(self.state_dir, worker_name(self.config.endpoint, index))
        try:
            port = json.loads(record.read_text())["port"]
            async with httpx.AsyncClient(timeout=2, trust_env=False) as client:
                res = await client.get(f"http://{self.config.host}:{port}/health")
            return bool(res.json().get("busy"))
        except (OSError, ValueError, KeyError, httpx.HTTPError):
            return None

    async def run(self, backlog: Callable[[], Awaitable[int]]) -> None:
        """Scale for ever, asking ``backlog()`` (a coroutine function) for the queue's length."""
        while True:
            try:
                await self.step(await backlog())
            except KilnError as exc:
                self.problem = exc.message
                log.error("%s: %s", self.config.endpoint, exc.message)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), INTERVAL_SECONDS)
