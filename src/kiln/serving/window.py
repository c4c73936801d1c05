"""Per-variant request windows: what the guardrails and `kiln endpoint status` judge a variant by.

Answers are counted in slices, each holding its request and error counts and a histogram of latencies in bins 2%
wide, so memory and the cost of a question stay bounded however many requests pass (a list of every answer grew by
tens of megabytes an hour under load): SLICE_SECONDS slices for the last FINE_SECONDS, folded into COARSE_SECONDS
slices after that. A question "since" a moment is answered to the slice: a quarter second within the last 90 s,
ten seconds before it. Percentiles are read off the bins, clamped to the smallest and largest latency seen: within
2% of the exact value.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from kiln.serving.rollout import VariantStats

HORIZON_SECONDS = 900.0  # answers older than this are forgotten
SLICE_SECONDS = 0.25
FINE_SECONDS = 90.0  # over the last minute, which `kiln endpoint status` and /metrics report
COARSE_SECONDS = 10.0
RATIO = 1.02  # each latency bin's upper edge over its lower edge
_LOG_RATIO = math.log(RATIO)


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


@dataclass
class _Slice:
    start: float
    requests: int = 0
    errors: int = 0
    bins: Counter[int] = field(default_factory=Counter)
    low: float = math.inf
    high: float = 0.0


def _bin(latency_ms: float) -> int:
    return math.floor(math.log(max(latency_ms, 1e-3)) / _LOG_RATIO)


@dataclass
class _Merged:
    requests: int = 0
    errors: int = 0
    bins: Counter[int] = field(default_factory=Counter)
    low: float = math.inf
    high: float = 0.0

    def add(self, s: _Slice) -> None:
        self.requests += s.requests
        self.errors += s.errors
        self.bins.update(s.bins)
        self.low, self.high = min(self.low, s.low), max(self.high, s.high)

    def percentile(self, q: float) -> float | None:
        """The latency below which ``q``% of answers fall: the upper edge of the bin holding that rank, clamped to
        the latencies seen."""
        if not self.requests:
            return None
        rank, seen = max(1, math.ceil(q / 100 * self.requests)), 0
        for index in sorted(self.bins):
            seen += self.bins[index]
            if seen >= rank:
                return round(min(max(RATIO ** (index + 1), self.low), self.high), 3)
        return self.high


class Windows:
    """Thread-safe counts of answers per variant over the last HORIZON_SECONDS."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:  # a zero-argument clock, for tests
        self._clock = clock
        self._lock = threading.Lock()
        self._slices: dict[str, deque[_Slice]] = {}  # the last FINE_SECONDS
        self._coarse: dict[str, deque[_Slice]] = {}  # before them, up to HORIZON_SECONDS

    def add(self, variant: str, latency_ms: float, error: bool) -> None:
        now = self._clock()
        with self._lock:
            slices = self._slices.get(variant)
            if slices is None:
                slices = self._slices[variant] = deque()
                self._coarse[variant] = deque()
            if not slices or now >= slices[-1].start + SLICE_SECONDS:
                slices.append(_Slice(math.floor(now / SLICE_SECONDS) * SLICE_SECONDS))
                self._fold(variant, now)
            s = slices[-1]
            s.requests += 1
            s.errors += error
            s.bins[_bin(latency_ms)] += 1
            s.low, s.high = min(s.low, latency_ms), max(s.high, latency_ms)

    def _fold(self, variant: str, now: float) -> None:
        """Fine slices older than FINE_SECONDS join their coarse slice; coarse ones past the horizon are dropped."""
        fine, coarse = self._slices[variant], self._coarse[variant]
        while fine and fine[0].start < now - FINE_SECONDS:
            old = fine.popleft()
            start = math.floor(old.start / COARSE_SECONDS) * COARSE_SECONDS
            if not coarse or coarse[-1].start != start:
                coarse.append(_Slice(start))
            into = coarse[-1]
            into.requests += old.requests
            into.errors += old.errors
            into.bins.update(old.bins)
            into.low, into.high = min(into.low, old.low), max(into.high, old.high)
        while coarse and coarse[0].start < now - HORIZON_SECONDS:
            coarse.popleft()

    def _since(self, variant: str, since: float) -> _Merged:
        merged = _Merged()
        with self._lock:
            fine = self._slices.get(variant, deque())
            older = since < fine[0].start if fine else True  # the fine slices do not reach back to ``since``
            for s in [*(_recent(self._coarse.get(variant, ()), since, COARSE_SECONDS) if older else []),
                      *_recent(fine, since, SLICE_SECONDS)]:
                merged.add(s)
        return merged

    def stats(self, variant: str, since: float) -> VariantStats:
        """What the rollout logic judges: answers since ``since`` (the last traffic change)."""
        m = self._since(variant, since)
        return VariantStats(requests=m.requests, errors=m.errors, p99_ms=m.percentile(99))

    def summary(self, variant: str, seconds: float = 60.0) -> Summary:
        """Requests/s, error count and p50/p99 over the last ``seconds``."""
        m = self._since(variant, self._clock() - seconds)
        return Summary(requests=m.requests, errors=m.errors, requests_per_second=m.requests / seconds,
                       p50_ms=m.percentile(50), p99_ms=m.percentile(99))

    def series(self, variant: str, step: float = COARSE_SECONDS) -> list[Point]:
        """The variant's answers over the whole horizon, oldest first, in intervals of ``step`` seconds (a multiple
        of SLICE_SECONDS; the fine slices are merged into them, the older coarse ones kept as they are)."""
        now = self._clock()
        with self._lock:
            coarse = list(self._coarse.get(variant, ()))
            fine = list(self._slices.get(variant, ()))
        points = [_point(s, s.start, COARSE_SECONDS, now) for s in coarse]
        merged: dict[float, _Merged] = {}
        for s in fine:
            merged.setdefault(math.floor(s.start / step) * step, _Merged()).add(s)
        return points + [_point(m, start, step, now) for start, m in sorted(merged.items())]


@dataclass(frozen=True)
class Point:
    """One interval of a variant's answers: when it started (seconds ago), how long it was, and what it held."""

    seconds_ago: float
    seconds: float
    requests: int
    errors: int
    p50_ms: float | None
    p99_ms: float | None


def _point(s: _Slice | _Merged, start: float, width: float, now: float) -> Point:
    m = s if isinstance(s, _Merged) else _Merged()
    if isinstance(s, _Slice):
        m.add(s)
    return Point(round(now - start, 3), width, m.requests, m.errors, m.percentile(50), m.percentile(99))


def _recent(slices: Iterable[_Slice], since: float, width: float) -> list[_Slice]:
    """The slices (each ``width`` seconds) from the one ``since`` falls in onwards (newest last)."""
    first = math.floor(since / width) * width
    return [s for s in slices if s.start >= first]
