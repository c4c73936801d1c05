"""The endpoint's front: weighted routing to production variants, shadow mirroring, capture, guardrail metrics.

Each variant is its own KServe model server process serving the model under the endpoint's name, so a request
is forwarded with its path and body unchanged. A shadow copy is sent after the caller's answer is on its way
and is never awaited by the caller.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kiln.serving.capture import CaptureRecord, CaptureWriter, now_iso
from kiln.serving.capture import parsed as _parsed
from kiln.serving.errors import (
    BadRequest,
    NotFound,
    PayloadTooLarge,
    RequestRefused,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
)
from kiln.serving.window import Windows

if TYPE_CHECKING:
    import aiohttp
    from starlette.requests import Request
    from starlette.responses import Response

TARGET_HEADER = "x-kiln-target-variant"  # SageMaker's TargetVariant
VARIANT_HEADER = "x-kiln-variant"  # which variant answered
INFERENCE_HEADER = "x-kiln-inference-id"


@dataclass
class Route:
    name: str
    url: str  # http://127.0.0.1:PORT


@dataclass
class FeatureLookup:
    """Where an instance carrying only its entity id gets its features: the Feast feature server."""

    url: str  # http://host:port of `feast serve`
    service: str  # the feature service the model was trained on
    join_key: str


@dataclass
class RouterState:
    endpoint: str
    variants: dict[str, Route]
    shares: dict[str, float]
    shadow: Route | None = None
    shadow_percent: float = 0.0
    max_body_bytes: int = 1_000_000
    token: str | None = None
    features: FeatureLookup | None = None
    pending: set[asyncio.Task[None]] = field(default_factory=set)  # shadow tasks in flight


class Router:
    """Routes one endpoint's inference requests; swap ``state.shares`` to shift traffic."""

    def __init__(self, state: RouterState, windows: Windows, capture: CaptureWriter | None = None,
                 seed: int | None = None) -> None:
        self.state, self.windows, self.capture = state, windows, capture
        self.random = random.Random(seed)
        self.session: aiohttp.ClientSession | None = None  # opened on start-up

    async def start(self) -> None:
        import aiohttp

        connector = aiohttp.TCPConnector(limit=200, keepalive_timeout=60)
        self.session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30))

    async def stop(self) -> None:
        if self.state.pending:
            await asyncio.wait(self.state.pending, timeout=5)
        if self.session is not None:
            await self.session.close()

    def pick(self, target: str | None) -> str:
        """A production variant drawn by share, or the one the caller named."""
        if target is not None:
            return target
        live = [(n, s) for n, s in self.state.shares.items() if s > 0]
        r, acc = self.random.random() * sum(s for _, s in live), 0.0
        for name, share in live:
            acc += share
            if r < acc:
                return name
        return live[-1][0]

    def _client(self) -> aiohttp.ClientSession:
        if self.session is None:
            raise RuntimeError("the router is not started: call start() first")
        return self.session

    async def _forward(self, route: Route, path: str, body: bytes, content_type: str) -> tuple[int, bytes, float]:
        import aiohttp

        t0 = time.perf_counter()
        try:
            async with self._client().post(f"{route.url}{path}", data=body,
                                           headers={"content-type": content_type}) as resp:
                data = await resp.read()
                return resp.status, data, (time.perf_counter() - t0) * 1000
        except (TimeoutError, aiohttp.ClientError, OSError):
            return 503, b'{"error": "variant unavailable"}', (time.perf_counter() - t0) * 1000

    async def infer(self, request: Request) -> Response:
        """POST /v1/models/{endpoint}:predict and /v2/models/{endpoint}/infer; a refusal raises RequestRefused."""
        from starlette.responses import Response

        st = self.state
        if st.token is not None and request.headers.get("authorization") != f"Bearer {st.token}":
            raise Unauthorized("missing or wrong bearer token")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > st.max_body_bytes:
            raise PayloadTooLarge(f"request body over the limit of {st.max_body_bytes} bytes")
        body = await request.body()
        if len(body) > st.max_body_bytes:
            raise PayloadTooLarge(f"request body over the limit of {st.max_body_bytes} bytes")
        target = request.headers.get(TARGET_HEADER)
        if target is not None and target not in st.variants:
            raise NotFound(f"no production variant '{target}'; variants: {', '.join(st.variants)}")
        content_type = request.headers.get("content-type", "application/json")
        if content_type.split(";")[0].strip().lower() != "application/json":
            raise UnsupportedMediaType(f"content-type {content_type!r}: requests are application/json")
        path = request.url.path
        if st.features is not None and path.endswith(":predict") and st.features.join_key.encode() in body:
            body = await self._with_features(st.features, body)
        name = self.pick(target)
        status, data, ms = await self._forward(st.variants[name], path, body, content_type)
        if status == 503 and target is None:
            # That variant's server is gone: answer from another live one rather than fail the caller.
            for other in [n for n, s in st.shares.items() if s > 0 and n != name]:
                self.windows.add(name, ms, True)
                name = other
                status, data, ms = await self._forward(st.variants[name], path, body, content_type)
                if status != 503:
                    break
        self.windows.add(name, ms, status >= 500)
        if 400 <= status < 500:
            data = _error_body(data)
        inference_id = request.headers.get(INFERENCE_HEADER) or uuid.uuid4().hex
        captured = self.capture is not None and self.capture.sampled()
        if self.capture is not None and captured:
            self.capture.record(self._record(inference_id, name, False, body, data, status, ms))
        if st.shadow is not None and st.shadow_percent > 0 and self.random.random() * 100 < st.shadow_percent:
            task = asyncio.get_running_loop().create_task(
                self._mirror(inference_id, path, body, content_type, captured))
            st.pending.add(task)
            task.add_done_callback(st.pending.discard)
        return Response(data, status_code=status, media_type="application/json",
                        headers={VARIANT_HEADER: name, INFERENCE_HEADER: inference_id})

    async def _with_features(self, lookup: FeatureLookup, body: bytes) -> bytes:
        """Instances that carry only the entity id get the feature service's online values (KServe's Feast
        transformer does the same); any other body is passed on untouched for the model to judge."""
        import aiohttp

        request = _parsed(body)
        rows = request.get("instances") if isinstance(request, dict) else None
        if not (isinstance(rows, list) and rows and all(isinstance(r, dict) and set(r) == {lookup.join_key}
                                                        for r in rows)):
            return body
        ids = [r[lookup.join_key] for r in rows]
        if not all(isinstance(i, (str, int)) and not isinstance(i, bool) for i in ids):
            raise BadRequest(f"instances[].{lookup.join_key} must be text or an integer")
        query = {"feature_service": lookup.service, "entities": {lookup.join_key: ids}}
        try:
            async with self._client().post(f"{lookup.url}/get-online-features", json=query) as resp:
                answer = await resp.json(content_type=None)
                status = resp.status
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError):
            raise Unavailable(f"the feature server at {lookup.url} is not answering; start it with `kiln up`") \
                from None
        if status != 200:
            refusal: type[RequestRefused] = BadRequest if status < 500 else Unavailable
            raise refusal(f"feature service {lookup.service}: {str(answer)[:300]}")
        try:
            names = answer["metadata"]["feature_names"]
            columns = {n: r["values"] for n, r in zip(names, answer["results"]) if n != lookup.join_key}
        except (KeyError, TypeError):
            raise Unavailable(f"the feature server at {lookup.url} gave an answer with no feature values") from None
        instances = []
        for i, entity in enumerate(ids):
            row = {n: values[i] for n, values in columns.items()}
            if all(v is None for v in row.values()):
                raise NotFound(f"instances[{i}]: no online features for {lookup.join_key} {entity!r}")
            instances.append(row)
        return json.dumps({"instances": instances}).encode()

    async def _mirror(self, inference_id: str, path: str, body: bytes, content_type: str, captured: bool) -> None:
        shadow = self.state.shadow
        if shadow is None:
            return
        await asyncio.sleep(0)  # let the caller's answer go out first
        status, data, ms = await self._forward(shadow, path, body, content_type)
        self.windows.add(shadow.name, ms, status >= 500)
        if self.capture is not None and captured:
            self.capture.record(self._record(inference_id, shadow.name, True, body, data, status, ms))

    def _record(self, inference_id: str, variant: str, shadow: bool, body: bytes, data: bytes, status: int,
                ms: float) -> CaptureRecord:
        return CaptureRecord(inference_id=inference_id, timestamp=now_iso(), endpoint=self.state.endpoint,
                             variant=variant, shadow=shadow, request=body, response=data,
                             status=status, latency_ms=round(ms, 3))


def _error_body(raw: bytes) -> bytes:
    """A variant's 4xx body with an "error" message, whichever layer of KServe (or FastAPI) wrote it."""
    body = _parsed(raw)
    if isinstance(body, dict) and "error" in body:
        return raw
    detail = body.get("detail") if isinstance(body, dict) else body
    if isinstance(detail, list):  # FastAPI's validation errors: name each field
        message = "; ".join(f"{'.'.join(map(str, d.get('loc', [])[1:]))}: {d.get('msg')}" for d in detail
                            if isinstance(d, dict))
    else:
        message = str(detail)
    return json.dumps({"error": message or "bad request", "detail": detail}).encode()


