"""The Debugger's profiler: a background thread sampling this process's CPU and resident memory."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Sample:
    """One reading of the process."""

    seconds: float  # since the profiler started
    cpu_percent: float  # of one core, since the previous sample (above 100 with several busy threads)
    rss_mb: float


@dataclass(frozen=True)
class ProfileSummary:
    """A profile in a few numbers: how long, how busy, how large the process grew."""

    samples: int
    interval: float
    seconds: float
    cpu_mean: float | None  # None: no interval was measured
    cpu_max: float | None
    rss_peak_mb: float
    cpu_seconds: float = 0.0  # the profiler thread's own CPU time


    def to_dict(self) -> dict[str, Any]:
        return {"samples": self.samples, "interval": self.interval, "seconds": round(self.seconds, 3),
                "cpu_mean": None if self.cpu_mean is None else round(self.cpu_mean, 1),
                "cpu_max": None if self.cpu_max is None else round(self.cpu_max, 1),
                "rss_peak_mb": round(self.rss_peak_mb, 1), "cpu_seconds": round(self.cpu_seconds, 4)}


class Profiler:
    """Samples every ``interval`` seconds from ``start()`` to ``stop()``, and once at each of them."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._process: Any = None
        self._started = 0.0
        self._seconds = 0.0
        self._cpu = 0.0  # the sampling thread's CPU seconds

    def _sample(self) -> None:
        now = time.monotonic() - self._started
        cpu = float(self._process.cpu_percent(None))  # since the previous call
        self.samples.append(Sample(seconds=now, cpu_percent=cpu, rss_mb=self._process.memory_info().rss / 2**20))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()
        self._cpu = time.thread_time()  # the thread's whole CPU time, read at its end

    def start(self) -> None:
        import psutil

        self._process = psutil.Process()
        self._started = time.monotonic()
        self._process.cpu_percent(None)  # the first call only sets the reference point
        self.samples.append(Sample(0.0, 0.0, self._process.memory_info().rss / 2**20))
        self._thread = threading.Thread(target=self._run, name="kiln-debugger-profiler", daemon=True)
        self._thread.start()

    def stop(self) -> ProfileSummary:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            self._sample()
            self._seconds = time.monotonic() - self._started
        return self.summary()

    def summary(self) -> ProfileSummary:
        cpu = [s.cpu_percent for s in self.samples[1:]]  # the first sample has no interval behind it
        seconds = self._seconds or (time.monotonic() - self._started if self._started else 0.0)
        return ProfileSummary(samples=len(self.samples), interval=self.interval, seconds=seconds,
                              cpu_mean=sum(cpu) / len(cpu) if cpu else None, cpu_max=max(cpu) if cpu else None,
                              rss_peak_mb=max((s.rss_mb for s in self.samples), default=0.0), cpu_seconds=self._cpu)
