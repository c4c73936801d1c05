"""The shadow's traffic: copies of production requests sent to the shadow variant in batches, off the caller's path.

Copies queue as callers are answered; one task drains the queue, joining the copies waiting into as few requests as
it can: V1 bodies' instances are concatenated, V2 JSON bodies with the same inputs (names, datatypes, trailing
shape) are joined along their first dimension, up to MAX_ROWS rows a request; the answer is split back by row
counts. Sends are at least INTERVAL_SECONDS apart, so copies gather into batches under load (the shadow answers no
one: its latency costs nothing, its CPU does). A joined request whose answer is not a 200 is sent again copy by
copy, so a malformed request gets its own error and the others their answers. A shadow that falls behind only makes
the batches larger; at most MAX_QUEUED copies wait, and copies beyond that are counted as dropped.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from kiln.memory import release_freed

MAX_ROWS = 256
MAX_QUEUED = 20_000
RELEASE_AFTER = 2_000  # copies queued at once that make a backlog, whose memory is released once it drained
INTERVAL_SECONDS = 0.05


@dataclass(slots=True)  # a backlog holds thousands: no dict each
class Copy:
    """One production request, to be answered by the shadow too."""

    inference_id: str
    path: str
    body: bytes
    headers: list[tuple[bytes, bytes]]  # what the variant needs besides the body: content type, binary header length
    captured: bool


Send = Callable[[str, bytes, list[tuple[bytes, bytes]]], Awaitable[tuple[int, bytes, float]]]
Done = Callable[[Copy, int, bytes, float], None]


class ShadowBatcher:
    """Queues copies (``put`` never blocks) and sends them with ``send(path, body, headers) -> (status, answer,
    ms)``; ``done(copy, status, answer, ms)`` is called once for every copy sent."""

    def __init__(self, send: Send, done: Done, max_rows: int = MAX_ROWS, interval: float = INTERVAL_SECONDS) -> None:
        self.send, self.done, self.max_rows, self.interval = send, done, max_rows, interval
        self.queue: deque[Copy] = deque()
        self.dropped = self.batches = self.sent = 0
        self._peak = 0  # the longest the queue has been since it was last empty
        self._busy = False  # a send is under way
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def put(self, copy: Copy) -> None:
        if len(self.queue) >= MAX_QUEUED:
            self.dropped += 1
            return
        self.queue.append(copy)
        self._peak = max(self._peak, len(self.queue))
        self._wake.set()

    async def stop(self, timeout: float = 5.0) -> None:
        """Send what is queued (for at most ``timeout`` seconds), then stop."""
        if self._task is None:
            return
        deadline = asyncio.get_running_loop().time() + timeout
        while (self.queue or self._busy) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        self._task.cancel()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.queue:
                self._busy = True
                started = loop.time()
                try:
                    await self._send_some()
                finally:
                    self._busy = False
                await asyncio.sleep(max(0.0, started + self.interval - loop.time()))
            if self._peak >= RELEASE_AFTER:  # a backlog drained: the heap it grew goes back to the system
                await loop.run_in_executor(None, release_freed)
            self._peak = 0

    async def _send_some(self) -> None:
        first = self.queue.popleft()
        joiner = _joiner(first)
        if joiner is None:
            await self._alone(first)
            return
        group, rows = [(first, joiner)], joiner.rows
        while self.queue and rows < self.max_rows:
            other = _joiner(self.queue[0])
            if other is None or other.key != joiner.key or rows + other.rows > self.max_rows:
                break
            group.append((self.queue.popleft(), other))
            rows += other.rows
        if len(group) == 1:
            await self._alone(first)
            return
        status, answer, ms = await self.send(first.path, joiner.join([j for _, j in group]), first.headers)
        parts = joiner.split(answer, [j.rows for _, j in group]) if status == 200 else None
        if parts is None:
            for copy, _ in group:  # one of them may be the bad one: each gets its own answer
                await self._alone(copy)
            return
        self.batches += 1
        for (copy, _), part in zip(group, parts):
            self.sent += 1
            self.done(copy, 200, part, ms)

    async def _alone(self, copy: Copy) -> None:
        status, answer, ms = await self.send(copy.path, copy.body, copy.headers)
        self.sent += 1
        self.done(copy, status, answer, ms)


@dataclass
class _Joiner:
    """How one copy joins others of the same ``key``: its ``rows`` and its parsed body."""

    key: tuple[Any, ...]
    rows: int
    doc: dict[str, Any]

    def join(self, members: list[_Joiner]) -> bytes:
        import orjson

        if self.key[0] == "v1":
            return orjson.dumps({"instances": [row for m in members for row in m.doc["instances"]]})
        inputs = []
        for i, first in enumerate(self.doc["inputs"]):
            data = [v for m in members for v in m.doc["inputs"][i]["data"]]
            shape = [sum(m.rows for m in members), *first["shape"][1:]]
            inputs.append({"name": first["name"], "datatype": first["datatype"], "shape": shape, "data": data})
        return orjson.dumps({"inputs": inputs})

    def split(self, answer: bytes, counts: list[int]) -> list[bytes] | None:
        """The joined answer cut back into one answer per member; None when it does not have the rows expected."""
        import orjson

        try:
            doc = orjson.loads(answer)
        except orjson.JSONDecodeError:
            return None
        if self.key[0] == "v1":
            predictions = doc.get("predictions") if isinstance(doc, dict) else None
            if not isinstance(predictions, list) or len(predictions) != sum(counts):
                return None
            starts = _starts(counts)
            return [orjson.dumps({"predictions": predictions[s:s + n]}) for s, n in zip(starts, counts)]
        outputs = doc.get("outputs") if isinstance(doc, dict) else None
        if not isinstance(outputs, list):
            return None
        parts: list[dict[str, Any]] = [{**{k: v for k, v in doc.items() if k != "outputs"}, "outputs": []}
                                       for _ in counts]
        for out in outputs:
            shape, data = out.get("shape") or [], out.get("data")
            per_row = math.prod(shape[1:]) if len(shape) > 1 else 1
            if not shape or shape[0] != sum(counts) or not isinstance(data, list) or len(data) != shape[0] * per_row:
                return None
            for part, s, n in zip(parts, _starts(counts), counts):
                part["outputs"].append({**out, "shape": [n, *shape[1:]], "data": data[s * per_row:(s + n) * per_row]})
        return [orjson.dumps(p) for p in parts]


def _starts(counts: list[int]) -> list[int]:
    starts, at = [], 0
    for n in counts:
        starts.append(at)
        at += n
    return starts


def _joiner(copy: Copy) -> _Joiner | None:
    """How ``copy`` joins others, or None when it goes alone (binary, parameters, or a shape it cannot join by)."""
    import orjson

    if any(name == b"inference-header-content-length" for name, _ in copy.headers):
        return None
    try:
        doc = orjson.loads(copy.body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict):
        return None
    if copy.path.endswith(":predict"):
        rows = doc.get("instances")
        if set(doc) != {"instances"} or not isinstance(rows, list) or not rows:
            return None
        return _Joiner(("v1", copy.path), len(rows), doc)
    inputs = doc.get("inputs")
    if set(doc) - {"inputs", "id"} or not isinstance(inputs, list) or not inputs:
        return None
    signature, rows = [], None
    for item in inputs:
        if not isinstance(item, dict) or not isinstance(item.get("shape"), list) or not item["shape"] \
                or not isinstance(item.get("data"), list) or set(item) - {"name", "datatype", "shape", "data"}:
            return None
        n = item["shape"][0]
        if not isinstance(n, int) or n < 1 or (rows is not None and n != rows):
            return None
        rows = n
        signature.append((item.get("name"), item.get("datatype"), tuple(item["shape"][1:])))
    assert rows is not None  # inputs is not empty
    return _Joiner(("v2", copy.path, tuple(signature)), rows, doc)
