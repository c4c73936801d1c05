"""Production variants served inside the endpoint front's own process (an endpoint spec's ``inline: true``).

Each inline variant is its model behind its own KServe REST application, the one a variant's own server runs
(kiln.serving.server), called as an ASGI application with no socket between: the request is parsed once, by the
front, and there is no second process for it to wait on. Answers, refusals and V2 routes are those the variant's
own server gives. The price is isolation: the variant's model runs on the front's event loop, as it runs on its own
server's, so a model that stalls stalls the endpoint, and a variant cannot be stopped on its own.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from importlib import metadata
from typing import Any

from kiln.serving.runtimes import RUNTIMES
from kiln.serving.server import rest_server_class
from kiln.serving.upstream import Answer, Early, UpstreamError

log = logging.getLogger(__name__)
INLINE_SCHEME = "inline:"  # a route's url naming an inline variant: inline:VARIANT


class InlineServer:
    """One variant's model and its KServe REST application, answering as kiln.serving.upstream.Upstream does."""

    def __init__(self, variant: str, name: str, model_uri: str, runtime: str) -> None:
        """``variant`` serving ``model_uri`` (a bundle's folder for runtime tvm) under the endpoint's ``name``."""
        self.variant, self.name, self.model_uri, self.runtime = variant, name, model_uri, runtime
        self.app: Any = None

    def load(self) -> None:
        """Load the model and build its application: what `python -m kiln.serving.server` does before it listens."""
        import fastapi
        from fastapi.responses import ORJSONResponse

        # KServe parses the command line when it is imported, and would read the front's --config as an
        # abbreviation of its own --configure_logging
        argv, sys.argv = sys.argv, sys.argv[:1]
        try:
            import kserve
            from kserve.model_server import FASTAPI_APP_IMPORT_STRING
        finally:
            sys.argv = argv

        model = RUNTIMES[self.runtime].model_type()(self.name, self.model_uri)
        model.load()
        server = kserve.ModelServer(workers=1, enable_latency_logging=False, registered_models=None)
        server.register_model(model)
        rest = rest_server_class("127.0.0.1")(FASTAPI_APP_IMPORT_STRING, server.dataplane,
                                              server.model_repository_extension, http_port=0)
        # An application of its own, built as KServe builds its one module-wide app: two variants of an endpoint
        # serve their models under the same name, so they cannot share one
        app = fastapi.FastAPI(title="KServe ModelServer", version=metadata.version("kserve"), docs_url=None, redoc_url=None,
                              default_response_class=ORJSONResponse)
        rest._add_middlewares(app)
        rest._register_endpoints(app)
        rest._add_exception_handlers(app)
        self.app = app

    async def request(self, method: str, path: str, body: bytes = b"",
                      headers: list[tuple[bytes, bytes]] | None = None, early: Early | None = None) -> Answer:
        """The application's answer to one request; UpstreamError when it fails before answering. ``early`` is
        called with the answer the moment it is whole, as the application sends it: what KServe does after that
        (its timing logs and metrics) is then not part of the caller's wait, as it is not on a server of its own."""
        if self.app is None:
            raise UpstreamError(f"inline variant {self.variant} is not loaded")
        route, _, query = path.partition("?")
        scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
                 "method": method, "scheme": "http", "path": route, "raw_path": route.encode(),
                 "query_string": query.encode(), "root_path": "", "client": ("127.0.0.1", 0),
                 "server": ("127.0.0.1", 0), "state": {},
                 "headers": [(b"content-length", str(len(body)).encode()), *(headers or [])]}
        answered = asyncio.Event()
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await answered.wait()  # asked again only to watch for a disconnect: there is none before the answer
            return {"type": "http.disconnect"}

        status, head, chunks = 0, {}, []

        async def send(message: dict[str, Any]) -> None:
            nonlocal status, head
            if message["type"] == "http.response.start":
                status = int(message["status"])  # KServe's handlers give HTTPStatus members
                head = {k.lower(): v for k, v in message.get("headers", [])}
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    answered.set()
                    if early is not None:
                        try:
                            await early(Answer(status, head, b"".join(chunks)))
                        except Exception:  # the caller's side failing is not the model's error
                            log.exception("inline variant %s: answering early failed", self.variant)

        try:
            await self.app(scope, receive, send)
        except Exception as exc:  # noqa: BLE001 - KServe's last handler answered 500 already, or nothing did
            if not status:
                raise UpstreamError(f"inline variant {self.variant} failed: {exc}") from None
        finally:
            answered.set()
        return Answer(status, head, b"".join(chunks))

    def close(self) -> None:
        """Nothing to close: the model goes with the front's process."""
