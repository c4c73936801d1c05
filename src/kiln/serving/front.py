"""The front's ASGI application: inference requests are answered here, straight from the ASGI messages; every
other route (V2 health and metadata, control, metrics) goes to the Starlette app of kiln.serving.routes.

Why not a Starlette route: at one row a request, Starlette's request and response objects cost the front a
tenth of what a compiled model's server spends on the whole request, and the front must cost less than that.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from kiln.serving.errors import NotFound, PayloadTooLarge, RequestRefused
from kiln.serving.router import Reply, Router

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

INFERENCE = re.compile(r"^/v(?:1/models/([^/:]+):predict|2/models/([^/]+)/infer)$")
JSON = [(b"content-type", b"application/json")]


def refusal(exc: RequestRefused) -> Reply:
    """A refusal as the caller sees it: ``{"error": message[, "hint"]}`` with its status."""
    body = {"error": exc.message, **({"hint": exc.hint} if exc.hint else {})}
    return Reply(exc.status, orjson.dumps(body), JSON)


class Front:
    """Answers POST /v1/models/NAME:predict and /v2/models/NAME/infer through ``router``; the rest goes to ``app``."""

    def __init__(self, router: Router, app: ASGIApp) -> None:
        self.router, self.app = router, app
        self.state = getattr(app, "state", None)  # the Starlette app's state, for whoever holds the front

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = INFERENCE.match(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if match is None:
            await self.app(scope, receive, send)
            return

        async def respond(reply: Reply) -> None:
            await send({"type": "http.response.start", "status": reply.status,
                        "headers": [(b"content-length", str(len(reply.body)).encode()), *reply.headers]})
            await send({"type": "http.response.body", "body": reply.body})

        try:
            reply = await self._infer(scope, receive, match.group(1) or match.group(2), respond)
        except RequestRefused as exc:
            reply = refusal(exc)
        except ClientGone:
            return  # the caller left before its request was whole: nothing is forwarded, captured or answered
        if reply is not None:  # None: answered already
            await respond(reply)

    async def _infer(self, scope: Scope, receive: Receive, model: str,
                     respond: Callable[[Reply], Awaitable[None]]) -> Reply | None:
        router = self.router
        endpoint = router.state.endpoint
        if model != endpoint and router.state.multi_default is None:  # a multi-model endpoint takes any version
            raise NotFound(f"no model '{model}' at this endpoint; it serves '{endpoint}'")
        headers = dict(scope["headers"])  # the server gives names lower-cased
        declared = headers.get(b"content-length", b"")
        router.check(headers, int(declared) if declared.isdigit() else None)
        return await router.infer(scope["path"], headers, await _body(receive, router.state.max_body_bytes), respond)


class ClientGone(Exception):
    """The connection closed before the request's body had arrived."""


async def _body(receive: Receive, limit: int) -> bytes:
    """The request's body, refused as soon as it grows over ``limit`` bytes."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body over the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
