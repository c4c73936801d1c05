"""The endpoint's front: weighted routing to production variants, shadow mirroring, capture, guardrail metrics.

Each variant is a KServe model server serving the model under the endpoint's name, so a request is forwarded with
its path and body unchanged: to its own process over connections kept open (kiln.serving.upstream), or, for an
inline production variant, to its application in the front's process (kiln.serving.inline). The shadow's
copies are queued once the caller's answer is ready and sent in batches by kiln.serving.shadow, never awaited by
the caller; capture records are queued for the writer's thread. With a tap (kiln.serving.tap), both go instead to
the tap's process, one frame per request.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from kiln.serving.capture import CaptureRecord, CaptureWriter, answered_record
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
from kiln.serving.shadow import Copy, ShadowBatcher
from kiln.serving.sleep import Sleepers, WakeFailed
from kiln.serving.spec import SERVED, served_name
from kiln.serving.tap import Tap
from kiln.serving.upstream import Answer, Early, Server, Upstream, UpstreamError
from kiln.serving.window import Windows

TARGET_HEADER = "x-kiln-target-variant"  # SageMaker's TargetVariant
MODEL_HEADER = b"x-kiln-target-model"  # SageMaker's TargetModel: a multi-model endpoint's version
VARIANT_HEADER = "x-kiln-variant"  # which variant answered
INFERENCE_HEADER = "x-kiln-inference-id"
TARGET, VARIANT, INFERENCE = (h.encode() for h in (TARGET_HEADER, VARIANT_HEADER, INFERENCE_HEADER))
BINARY_HEADER = b"inference-header-content-length"  # V2's binary tensor extension: the JSON part's length
MEDIA_TYPES = (b"application/json", b"application/octet-stream")  # the second only with BINARY_HEADER


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
    multi_default: str | None = None  # a multi-model endpoint: the version a request naming none goes to


@dataclass
class Reply:
    """An answer for the caller: status, body, and the headers it goes out with."""

    status: int
    body: bytes
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


class Router:
    """Routes one endpoint's inference requests; swap ``state.shares`` to shift traffic."""

    def __init__(self, state: RouterState, windows: Windows, capture: CaptureWriter | None = None,
                 seed: int | None = None, sleepers: Sleepers | None = None,
                 servers: Mapping[str, Server] | None = None, tap: Tap | None = None) -> None:
        self.state, self.windows, self.capture, self.sleepers = state, windows, capture, sleepers
        self.random = random.Random(seed)
        self._upstreams: dict[str, Server] = dict(servers or {})  # by url; ``servers``: variants in this process
        self._sent: dict[bytes, list[tuple[bytes, bytes]]] = {}  # content type -> the headers sent (_sent_for)
        self._models: set[str] = set()  # a multi-model endpoint's versions its server has loaded, as far as known
        self._loading: dict[str, asyncio.Task[None]] = {}
        self.shadow: ShadowBatcher | None = None  # made on start-up, in the serving loop
        self.tap = tap  # with one, capture and the shadow's copies go to the tap's process instead

    async def start(self) -> None:
        if self.tap is not None:
            await self.tap.start()
            return
        self.shadow = ShadowBatcher(self._send_shadow, self._shadow_answered)
        self.shadow.start()

    async def stop(self) -> None:
        if self.tap is not None:
            await self.tap.stop()
        if self.shadow is not None:
            await self.shadow.stop()
        for upstream in self._upstreams.values():
            upstream.close()

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

    def upstream(self, url: str) -> Server:
        """The connection pool to the server at ``url`` (or the variant in this process it names)."""
        pool = self._upstreams.get(url)
        if pool is None:
            pool = self._upstreams[url] = Upstream(url)
        return pool

    async def forward(self, route: Route, method: str, path: str, body: bytes, headers: list[tuple[bytes, bytes]],
                      early: Early | None = None) -> tuple[int, bytes, dict[bytes, bytes], float]:
        """The variant's answer (status, body, headers, ms); 503 when its server is gone or does not answer. A
        variant that sleeps (kiln.serving.sleep) is started first, and the request waits for it. ``early``: see
        kiln.serving.upstream.Server."""
        t0 = time.perf_counter()
        sleepers = self.sleepers if self.sleepers is not None and route.name in self.sleepers else None
        if sleepers is not None:
            try:
                await sleepers.use(route.name)
            except WakeFailed as exc:
                return 503, json.dumps({"error": str(exc)}).encode(), {}, (time.perf_counter() - t0) * 1000
        try:
            answer = await self.upstream(route.url).request(method, path, body, headers, early)
        except UpstreamError:
            return 503, b'{"error": "variant unavailable"}', {}, (time.perf_counter() - t0) * 1000
        finally:
            if sleepers is not None:
                sleepers.done(route.name)
        return answer.status, answer.body, answer.headers, (time.perf_counter() - t0) * 1000

    async def ask_variants(self, path: str) -> tuple[int, bytes, str]:
        """GET ``path`` from the production variants, largest share first, until one answers (not 503): its status,
        body and content type; 503 when none does."""
        st = self.state
        for name in sorted(st.variants, key=lambda n: -st.shares.get(n, 0.0)):
            status, body, headers, _ = await self.forward(st.variants[name], "GET", path, b"", [])
            if status != 503:
                return status, body, headers.get(b"content-type", b"application/json").decode("latin-1")
        return 503, b'{"error": "no production variant is answering"}', "application/json"

    def check(self, headers: Mapping[bytes, bytes], declared: int | None) -> None:
        """Refuse a request before its body is read: token, declared length, content type, target variant."""
        st = self.state
        if st.token is not None and headers.get(b"authorization") != f"Bearer {st.token}".encode():
            raise Unauthorized("missing or wrong bearer token")
        if declared is not None and declared > st.max_body_bytes:
            raise PayloadTooLarge(f"request body over the limit of {st.max_body_bytes} bytes")
        media = headers.get(b"content-type", b"application/json").split(b";")[0].strip().lower()
        if media not in MEDIA_TYPES or (media == MEDIA_TYPES[1] and BINARY_HEADER not in headers):
            raise UnsupportedMediaType(f"content-type {headers.get(b'content-type', b'').decode('latin-1')!r}: "
                                       "requests are application/json (or V2's binary tensor extension, with "
                                       "inference-header-content-length)")
        target = headers.get(TARGET)
        if target is not None and target.decode("latin-1") not in st.variants:
            raise NotFound(f"no production variant '{target.decode('latin-1')}'; variants: {', '.join(st.variants)}")

    async def infer(self, path: str, headers: Mapping[bytes, bytes], body: bytes,
                    respond: Callable[[Reply], Awaitable[None]] | None = None) -> Reply | None:
        """POST /v1/models/{endpoint}:predict and /v2/models/{endpoint}/infer (``headers``' names lower-cased,
        already checked by check()); a refusal raises RequestRefused. The reply is returned, or, with ``respond``,
        may be handed to it the moment a variant in this process has it (then None is returned): capture and the
        shadow follow, and the caller does not wait for them."""
        st = self.state
        if len(body) > st.max_body_bytes:
            raise PayloadTooLarge(f"request body over the limit of {st.max_body_bytes} bytes")
        if st.features is not None and path.endswith(":predict") and st.features.join_key.encode() in body:
            body = await self._with_features(st.features, body)
        binary = headers.get(BINARY_HEADER)
        # V2 clients send the binary extension with no content type; KServe reads a JSON type's body as JSON only
        content_type = headers.get(b"content-type", MEDIA_TYPES[binary is not None])
        if binary is None:
            sent = self._sent.get(content_type) or self._sent_for(content_type)
        else:
            sent = [(b"content-type", content_type), (BINARY_HEADER, binary)]
        target = headers.get(TARGET)
        name = self.pick(target.decode("latin-1") if target is not None else None)
        served = None
        if st.multi_default is not None:
            served, path = _multi_target(path, headers, st.endpoint, st.multi_default)
            await self._loaded(st.variants[name], served)
        inference_id = headers.get(INFERENCE, b"").decode("latin-1") or uuid.uuid4().hex
        replied: Reply | None = None

        async def early(answer: Answer) -> None:
            nonlocal replied
            if respond is None or answer.status == 503 or (served is not None and answer.status == 404):
                return  # another variant (or the version loaded again) may still answer
            replied = self._reply(name, inference_id, answer.status, answer.body, answer.headers)
            await respond(replied)

        status, data, answered, ms = await self.forward(st.variants[name], "POST", path, body, sent, early)
        if served is not None and status == 404:  # the server forgot it (restarted meanwhile): loaded again
            self._models.discard(served)
            await self._loaded(st.variants[name], served)
            status, data, answered, ms = await self.forward(st.variants[name], "POST", path, body, sent)
        if status == 503 and target is None:
            # That variant's server is gone: answer from another live one rather than fail the caller.
            for other in [n for n, s in st.shares.items() if s > 0 and n != name]:
                self.windows.add(name, ms, True)
                name = other
                status, data, answered, ms = await self.forward(st.variants[name], "POST", path, body, sent)
                if status != 503:
                    break
        self.windows.add(name, ms, status >= 500)
        reply = replied or self._reply(name, inference_id, status, data, answered)
        data = reply.body
        mirrored = st.shadow is not None and st.shadow_percent > 0 and (
            st.shadow_percent >= 100 or self.random.random() * 100 < st.shadow_percent)
        if self.tap is not None:
            captured = self.tap.sampled()
            if captured or mirrored:  # a multi-model endpoint's records name the version
                self.tap.send(inference_id, served or name, captured, mirrored, path, sent, body, status, ms, data,
                              headers.get(BINARY_HEADER), answered.get(BINARY_HEADER))
        else:
            captured = self.capture is not None and self.capture.sampled()
            if self.capture is not None and captured:  # a multi-model endpoint's records name the version
                self.capture.record(self._record(inference_id, served or name, False, body, data, status, ms,
                                                 headers.get(BINARY_HEADER), answered.get(BINARY_HEADER)))
            if mirrored and self.shadow is not None:
                self.shadow.put(Copy(inference_id, sys.intern(path), body, sent, captured))  # queued copies share
        return None if replied is not None else reply

    @staticmethod
    def _reply(name: str, inference_id: str, status: int, data: bytes, answered: Mapping[bytes, bytes]) -> Reply:
        """Variant ``name``'s answer as the caller gets it: a 4xx's body with an "error" message, headers naming
        the variant and the inference id."""
        out = [(b"content-type", answered.get(b"content-type", b"application/json")),
               (VARIANT, name.encode()), (INFERENCE, inference_id.encode())]
        if BINARY_HEADER in answered:
            out.append((BINARY_HEADER, answered[BINARY_HEADER]))
        return Reply(status, _error_body(data) if 400 <= status < 500 else data, out)

    async def _loaded(self, route: Route, served: str) -> None:
        """The version ``served`` loaded in the multi-model server at ``route`` (once, however many ask)."""
        if served in self._models:
            return
        if served not in self._loading:
            self._loading[served] = asyncio.create_task(self._load(route, served))
        try:
            await asyncio.shield(self._loading[served])
        finally:
            self._loading.pop(served, None)

    async def _load(self, route: Route, served: str) -> None:
        try:
            answer = await self.upstream(route.url).request("POST", f"/v2/repository/models/{served}/load")
        except UpstreamError as exc:
            raise Unavailable(f"the model server did not load {served}: {exc}") from None
        if answer.status != 200:
            message = _error_body(answer.body).decode("utf-8", "replace")
            raise NotFound(f"model {served} cannot be served here: {message[:500]}")
        self._models.add(served)

    def capture_counts(self) -> tuple[int, int] | None:
        """Capture records written and dropped so far (None: this endpoint captures nothing)."""
        if self.tap is not None:
            counts = self.tap.counts
            return (counts.capture_written, counts.capture_dropped + counts.lost) if self.tap.sample > 0 else None
        return (self.capture.written, self.capture.dropped) if self.capture is not None else None

    def _sent_for(self, content_type: bytes) -> list[tuple[bytes, bytes]]:
        """The headers a request of ``content_type`` is sent on with, one list for all of them (a few types are
        kept): a shadow's queued copies share it rather than hold one each."""
        sent = [(b"content-type", content_type)]
        if len(self._sent) < 16:
            self._sent[content_type] = sent
        return sent

    async def _with_features(self, lookup: FeatureLookup, body: bytes) -> bytes:
        """Instances that carry only the entity id get the feature service's online values (KServe's Feast
        transformer does the same); any other body is passed on untouched for the model to judge."""
        request = _parsed(body)
        rows = request.get("instances") if isinstance(request, dict) else None
        if not (isinstance(rows, list) and rows and all(isinstance(r, dict) and set(r) == {lookup.join_key}
                                                        for r in rows)):
            return body
        ids = [r[lookup.join_key] for r in rows]
        if not all(isinstance(i, (str, int)) and not isinstance(i, bool) for i in ids):
            raise BadRequest(f"instances[].{lookup.join_key} must be text or an integer")
        query = {"feature_service": lookup.service, "entities": {lookup.join_key: ids}}
        import orjson

        try:
            got = await self.upstream(lookup.url).request("POST", "/get-online-features", orjson.dumps(query),
                                                          [(b"content-type", b"application/json")])
            answer, status = orjson.loads(got.body), got.status
        except (UpstreamError, orjson.JSONDecodeError):
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

    async def _send_shadow(self, path: str, body: bytes, headers: list[tuple[bytes, bytes]]
                           ) -> tuple[int, bytes, float]:
        shadow = self.state.shadow
        if shadow is None:
            return 503, b'{"error": "no shadow"}', 0.0
        status, data, _, ms = await self.forward(shadow, "POST", path, body, headers)
        return status, data, ms

    def _shadow_answered(self, copy: Copy, status: int, data: bytes, ms: float) -> None:
        shadow = self.state.shadow
        name = shadow.name if shadow is not None else "shadow"
        self.windows.add(name, ms, status >= 500)
        if self.capture is not None and copy.captured:
            self.capture.record(self._record(copy.inference_id, name, True, copy.body, data, status, ms,
                                             dict(copy.headers).get(BINARY_HEADER), None))

    def _record(self, inference_id: str, variant: str, shadow: bool, body: bytes, data: bytes, status: int,
                ms: float, request_binary: bytes | None, response_binary: bytes | None) -> CaptureRecord:
        return answered_record(inference_id, self.state.endpoint, variant, shadow, body, data, status, ms,
                               request_binary, response_binary)


def _multi_target(path: str, headers: Mapping[bytes, bytes], endpoint: str, default: str) -> tuple[str, str]:
    """The version a multi-model endpoint's request names (X-Kiln-Target-Model on V1: NAME-vVERSION, NAME/VERSION or
    models:/NAME/VERSION; the model in a V2 path), else ``default``, and the path it is sent on."""
    if path.endswith(":predict"):
        raw = headers.get(MODEL_HEADER)
        served = default if raw is None else _served(raw.decode("latin-1"))
        return served, f"/v1/models/{served}:predict"
    named = path.split("/")[3]
    served = default if named == endpoint else _served(named)
    return served, f"/v2/models/{served}/infer"


def _served(named: str) -> str:
    value = named.strip().removeprefix("models:/")
    served = served_name(value) if "/" in value else value
    if not SERVED.match(served):
        raise BadRequest(f"x-kiln-target-model '{named}': a registered version, as NAME-vVERSION, NAME/VERSION or "
                         "models:/NAME/VERSION")
    return served


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


