"""Per-variant request windows: what the guardrails and `kiln endpoint status` judge a variant by."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from kiln.serving.rollout import VariantStats

HORIZON_SECONDS = 900.0  # answers older than this are forgotten


@dataclass(frozen=True)
class Summary:
    requests: int
    errors: int
    requests_per_second: float
    p50_ms: float | None
    p99_ms: float | None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


def _percentile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


class Windows:
    """Thread-safe record of (time, latency, error) per variant over the last HORIZON_SECONDS."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:  # a zero-argument clock, for tests
        self._clock = clock
        self._lock = threading.Lock()
        self._answers: dict[str, deque[tuple[float, float, bool]]] = {}

    def add(self, variant: str, latency_ms: float, error: bool) -> None:
        now = self._clock()
        with self._lock:
            answers = self._answers.setdefault(variant, deque())
            answers.append((now, latency_ms, error))
            while answers and answers[0][0] < now - HORIZON_SECONDS:
                answers.popleft()

    def _since(self, variant: str, since: float) -> list[tuple[float, float, bool]]:
        with self._lock:
            return [a for a in self._answers.get(variant, ()) if a[0] >= since]

    def stats(self, variant: str, since: float) -> VariantStats:
        """What the rollout logic judges: answers since ``since`` (the last traffic change)."""
        answers = self._since(variant, since)
        latencies = sorted(a[1] for a in answers)
        return VariantStats(requests=len(answers), errors=sum(a[2] for a in answers),
                            p99_ms=_percentile(latencies, 99))

    def summary(self, variant: str, seconds: float = 60.0) -> Summary:
        """Requests/s, error count and p50/p99 over the last ``seconds``."""
        answers = self._since(variant, self._clock() - seconds)
        latencies = sorted(a[1] for a in answers)
        return Summary(requests=len(answers), errors=sum(a[2] for a in answers),
                       requests_per_second=len(answers) / seconds, p50_ms=_percentile(latencies, 50),
                       p99_ms=_percentile(latencies, 99))
