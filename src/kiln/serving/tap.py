"""The front's tap: a process of its own that captures the front's answered requests and mirrors them to the shadow,
so neither costs the front's one Python thread (an inline endpoint's front also runs its models: what it spends on
capture and the shadow, its callers wait for).

The front hands each answered request over once, as one frame on the tap's standard input (a 4-byte length, then
a marshal'd tuple of plain values, see Tap.send); the tap writes the capture records (kiln.serving.capture) and
sends the shadow's copies in batches (kiln.serving.shadow), as the front does without it. Four times a second it
answers on its standard output with the shadow's latencies and errors since the last report and its counts, which the
front adds to its windows and status. The tap ends when its input closes (the front stopped or died), after writing
what it holds; the front starts it again if it dies, and counts the frames it could not hand over as lost.

Usage (by the front): python -m kiln.serving.tap --config ROUTER.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import marshal
import os
import random
import signal
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kiln.serving.capture import CaptureWriter, answered_record
from kiln.serving.shadow import Copy, ShadowBatcher
from kiln.serving.upstream import Upstream, UpstreamError
from kiln.serving.window import Windows

log = logging.getLogger(__name__)
LENGTH = struct.Struct("<I")
REPORT_SECONDS = 0.25
MAX_PENDING_BYTES = 256 * 1024 * 1024  # frames the tap has not read yet, past which the front drops and counts
RESTART_SECONDS = 1.0
FLUSH_SECONDS = 0.01
NICE = 10  # the tap answers no one: the cores go to the callers' requests first


@dataclass
class TapCounts:
    """What the tap last reported, and what the front could not hand it."""

    capture_written: int = 0
    capture_dropped: int = 0
    shadow_dropped: int = 0
    lost: int = 0  # frames not handed over: the tap was down, or too far behind
    restarts: int = 0


class Tap:
    """The front's side: starts the tap process, hands it answered requests, and reads its reports into ``windows``
    (the shadow's answers, under ``shadow``'s name)."""

    def __init__(self, config: Path, windows: Windows, shadow: str | None, sample_percent: float,
                 seed: int | None = None) -> None:
        self.config, self.windows, self.shadow = config, windows, shadow
        self.sample = sample_percent / 100
        self.random = random.Random(seed)
        self.counts = TapCounts()
        self._proc: asyncio.subprocess.Process | None = None
        self._pending: list[bytes] = []
        self._flush_scheduled = False
        self._stopping = False
        self._watch: asyncio.Task[None] | None = None
        self._reported: tuple[int, ...] = (0, 0, 0)  # the running tap's last totals

    def sampled(self) -> bool:
        """Whether the next request is captured (decided once per request, for its production and shadow sides)."""
        return self.sample >= 1.0 or self.random.random() < self.sample

    async def start(self) -> None:
        await self._spawn()
        self._watch = asyncio.get_running_loop().create_task(self._watch_process())

    async def _spawn(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "kiln.serving.tap", "--config", str(self.config),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)

    def send(self, inference_id: str, variant: str, captured: bool, mirrored: bool, path: str,
             headers: list[tuple[bytes, bytes]], body: bytes, status: int, ms: float, answer: bytes,
             request_binary: bytes | None, answer_binary: bytes | None) -> None:
        """Hand one answered request over (to be captured, mirrored, or both); never blocks or raises."""
        try:
            frame = marshal.dumps((inference_id, variant, captured, mirrored, path, headers, bytes(body), int(status),
                                   float(ms), bytes(answer), request_binary, answer_binary, time.time()))
        except ValueError:  # not plain values: a bug here, not the caller's; counted, and the caller still answered
            self.counts.lost += 1
            return
        self._pending.append(LENGTH.pack(len(frame)))
        self._pending.append(frame)
        if not self._flush_scheduled:  # one write for all the frames of FLUSH_SECONDS: the tap wakes up less often
            self._flush_scheduled = True
            asyncio.get_running_loop().call_later(FLUSH_SECONDS, self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        frames, self._pending = self._pending, []
        stdin = self._proc.stdin if self._proc is not None else None
        if stdin is None or stdin.is_closing() or stdin.transport.get_write_buffer_size() > MAX_PENDING_BYTES:
            self.counts.lost += len(frames) // 2
            return
        stdin.write(b"".join(frames))

    async def _watch_process(self) -> None:
        """Read the tap's reports; start it again if it dies."""
        while True:
            proc = self._proc
            assert proc is not None and proc.stdout is not None
            try:
                while True:
                    size = LENGTH.unpack(await proc.stdout.readexactly(LENGTH.size))[0]
                    self._apply(marshal.loads(await proc.stdout.readexactly(size)))
            except (asyncio.IncompleteReadError, ValueError, EOFError):
                pass
            code = await proc.wait()
            if self._stopping:
                return
            log.error("the capture and shadow tap stopped (exit %s); starting it again", code)
            self.counts.restarts += 1
            self._reported = (0, 0, 0)
            await asyncio.sleep(RESTART_SECONDS)
            await self._spawn()

    def _apply(self, report: tuple[list[tuple[float, bool]], int, int, int]) -> None:
        answered, *totals = report
        for ms, error in answered:
            if self.shadow is not None:
                self.windows.add(self.shadow, ms, error)
        # The tap reports its own totals: added as they grow, so they go on counting across its restarts
        written, dropped, shadow_dropped = (now - before for now, before in zip(totals, self._reported))
        self._reported = tuple(totals)
        counts = self.counts
        counts.capture_written += written
        counts.capture_dropped += dropped
        counts.shadow_dropped += shadow_dropped

    async def stop(self, timeout: float = 30.0) -> None:
        """Hand over what is pending, close the tap's input, and wait for it to write what it holds."""
        self._stopping = True
        proc = self._proc
        if proc is None or proc.stdin is None:
            return
        self._flush()
        proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            proc.kill()
        if self._watch is not None:
            self._watch.cancel()


class TapProcess:
    """The tap itself: capture and the shadow's batches, as the front would run them (kiln.serving.router)."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.endpoint = config["endpoint"]
        cap = config.get("capture")
        self.capture = CaptureWriter(cap["root"], self.endpoint, cap.get("flush_seconds", 2.0), 100.0,
                                     endpoint_url=cap.get("endpoint_url")) if cap else None  # sampled by the front
        shadow = config.get("shadow")
        self.shadow_name = shadow["name"] if shadow else "shadow"
        self.upstream = Upstream(shadow["url"]) if shadow else None
        self.batcher = ShadowBatcher(self._send, self._answered)
        self.answered: list[tuple[float, bool]] = []

    async def run(self, reader: asyncio.StreamReader, out: asyncio.StreamWriter) -> None:
        self.batcher.start()
        report = asyncio.get_running_loop().create_task(self._report(out))
        try:
            while True:
                size = LENGTH.unpack(await reader.readexactly(LENGTH.size))[0]
                self.take(marshal.loads(await reader.readexactly(size)))
        except asyncio.IncompleteReadError:
            pass  # the front closed its end: write what is held, then end
        await self.batcher.stop(timeout=10.0)
        report.cancel()
        if self.capture is not None:
            self.capture.close()
        if self.upstream is not None:
            self.upstream.close()

    def take(self, frame: tuple[Any, ...]) -> None:
        (inference_id, variant, captured, mirrored, path, headers, body, status, ms, answer, request_binary,
         answer_binary, at) = frame
        if captured and self.capture is not None:
            self.capture.record(answered_record(inference_id, self.endpoint, variant, False, body, answer, status, ms,
                                                request_binary, answer_binary, at))
        if mirrored and self.upstream is not None:
            self.batcher.put(Copy(inference_id, sys.intern(path), body, headers, captured))

    async def _send(self, path: str, body: bytes, headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes, float]:
        assert self.upstream is not None  # copies are queued only with a shadow
        t0 = time.perf_counter()
        try:
            answer = await self.upstream.request("POST", path, body, headers)
        except UpstreamError:
            return 503, b'{"error": "variant unavailable"}', (time.perf_counter() - t0) * 1000
        return answer.status, answer.body, (time.perf_counter() - t0) * 1000

    def _answered(self, copy: Copy, status: int, data: bytes, ms: float) -> None:
        self.answered.append((ms, status >= 500))
        if self.capture is not None and copy.captured:
            binary = dict(copy.headers).get(b"inference-header-content-length")
            self.capture.record(answered_record(copy.inference_id, self.endpoint, self.shadow_name, True, copy.body,
                                                data, status, ms, binary, None))

    async def _report(self, out: asyncio.StreamWriter) -> None:
        while True:
            await asyncio.sleep(REPORT_SECONDS)
            answered, self.answered = self.answered, []
            cap = self.capture
            frame = marshal.dumps((answered, cap.written if cap else 0, cap.dropped if cap else 0,
                                   self.batcher.dropped))
            out.write(LENGTH.pack(len(frame)) + frame)
            await out.drain()


async def _main(config: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**31)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, sys.stdout.buffer)
    out = asyncio.StreamWriter(transport, protocol, None, loop)
    await TapProcess(config).run(reader, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--config", required=True, type=Path)
    args = parser.parse_args()
    # The front's process group is stopped as a whole: the tap ends when the front closes its input, after the
    # front has handed over what it held, not on the signal
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.nice(NICE)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s tap %(levelname)s %(message)s")
    asyncio.run(_main(json.loads(args.config.read_text())))


if __name__ == "__main__":
    main()
