"""Keep-alive HTTP/1.1 connections from the endpoint's front to one model server, reused request after request.

Kiln's own small client rather than aiohttp's: at one row a request, aiohttp's client cost the front more CPU than
a compiled model costs its server, and the front must cost under a tenth of its variants. It speaks only what the
front sends (a request with a body of known length) and what a model server answers (a length or chunks, parsed
by httptools, the parser uvicorn uses).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlsplit

import httptools

IDLE_SECONDS = 4.0  # a connection idle longer is not reused: uvicorn closes idle ones after 5 s
MAX_IDLE = 64  # idle connections kept per server


class UpstreamError(ConnectionError):
    """The server could not be reached, closed the connection, or did not answer in time."""


class UpstreamTimeout(UpstreamError):
    """The server took the request and did not answer within the timeout."""


@dataclass
class Answer:
    status: int
    headers: dict[bytes, bytes]  # names lower-cased
    body: bytes


@dataclass
class _Exchange:
    """One response being read."""

    future: asyncio.Future[Answer]
    status: int = 0
    headers: dict[bytes, bytes] = field(default_factory=dict)
    chunks: list[bytes] = field(default_factory=list)
    started: bool = False  # any byte of the response arrived


Early = Callable[["Answer"], Awaitable[None]]


class Server(Protocol):
    """What the front sends a variant's requests to: an Upstream, or a variant in its own process
    (kiln.serving.inline). ``early``, if given, may be called with the answer as soon as it is whole, before the
    server's own work after it (the answer is returned too)."""

    async def request(self, method: str, path: str, body: bytes = b"",
                      headers: list[tuple[bytes, bytes]] | None = None, early: Early | None = None) -> Answer: ...

    def close(self) -> None: ...


class _Connection(asyncio.Protocol):
    def __init__(self, pool: Upstream) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.exchange: _Exchange | None = None
        self.idle_since = 0.0
        self.closed = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a TCP connection's transport is an asyncio.Transport

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is not None:
            exchange.started = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError(f"unreadable answer from {self.pool.origin}: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(UpstreamError(f"{self.pool.origin} closed the connection"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        if self.exchange is not None:
            self.exchange.headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        if self.exchange is not None:
            self.exchange.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        if self.exchange is not None:
            self.exchange.chunks.append(body)

    def on_message_complete(self) -> None:
        exchange, self.exchange = self.exchange, None
        if exchange is None or exchange.future.done():
            return
        exchange.future.set_result(Answer(exchange.status, exchange.headers, b"".join(exchange.chunks)))
        if not self.parser.should_keep_alive():
            self.close()

    def send(self, head: bytes, body: bytes, future: asyncio.Future[Answer]) -> _Exchange:
        assert self.transport is not None  # sent only on a made connection
        exchange = self.exchange = _Exchange(future)
        if len(body) < 65536:
            self.transport.write(head + body)
        else:
            self.transport.writelines((head, body))
        return exchange

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _fail(self, exc: Exception) -> None:
        exchange, self.exchange = self.exchange, None
        if exchange is not None and not exchange.future.done():
            exchange.future.set_exception(exc)
        self.close()


class Upstream:
    """A pool of connections to one server (``url``: http://host:port)."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ValueError(f"expected http://HOST:PORT, got {url!r}")
        self.origin, self.host, self.port, self.timeout = url, parts.hostname, parts.port, timeout
        self._host_header = f"{parts.hostname}:{parts.port}".encode()
        self._idle: deque[_Connection] = deque()

    async def request(self, method: str, path: str, body: bytes = b"",
                      headers: list[tuple[bytes, bytes]] | None = None, early: Early | None = None) -> Answer:
        """Send one request and read its answer (returned as soon as it is read: ``early`` is not called);
        UpstreamError when the server cannot be reached or fails to answer
        within the timeout. A reused connection the server had closed is retried once on a new one."""
        head = [f"{method} {path} HTTP/1.1\r\n".encode(), b"host: ", self._host_header,
                b"\r\ncontent-length: ", str(len(body)).encode(), b"\r\n"]
        for name, value in headers or ():
            head += [name, b": ", value, b"\r\n"]
        head.append(b"\r\n")
        raw = b"".join(head)
        loop = asyncio.get_running_loop()
        for attempt in (0, 1):
            conn, reused = await self._connection(loop, fresh=attempt == 1)
            future: asyncio.Future[Answer] = loop.create_future()
            timer = loop.call_later(self.timeout, _expire, conn, future, self.origin, self.timeout)
            exchange = conn.send(raw, body, future)
            try:
                answer = await future
            except UpstreamTimeout:
                raise
            except UpstreamError:
                if reused and not exchange.started and attempt == 0:
                    continue  # the server closed an idle connection as the request left: once more, anew
                raise
            except asyncio.CancelledError:
                conn.close()  # its answer may still come: the connection cannot be handed to another request
                raise
            finally:
                timer.cancel()
            if not conn.closed and len(self._idle) < MAX_IDLE:
                conn.idle_since = loop.time()
                self._idle.append(conn)
            return answer
        raise AssertionError("unreachable: the second attempt returns or raises")

    async def _connection(self, loop: asyncio.AbstractEventLoop, fresh: bool) -> tuple[_Connection, bool]:
        now = loop.time()
        while self._idle and not fresh:
            conn = self._idle.pop()  # the most recently used: the likeliest still open
            if not conn.closed and now - conn.idle_since < IDLE_SECONDS:
                return conn, True
            conn.close()
        try:
            _, conn = await loop.create_connection(lambda: _Connection(self), self.host, self.port)
        except OSError as exc:
            raise UpstreamError(f"cannot connect to {self.origin}: {exc.strerror or exc}") from None
        return conn, False

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()


def _expire(conn: _Connection, future: asyncio.Future[Answer], origin: str, timeout: float) -> None:
    if not future.done():
        future.set_exception(UpstreamTimeout(f"{origin} did not answer within {timeout:g} s"))
    conn.close()
