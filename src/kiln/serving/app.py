"""The endpoint front as an ASGI app (Starlette on uvicorn), and its process entry point.

Usage: python -m kiln.serving.app --config ROUTER.json --port PORT [--host 127.0.0.1]
ROUTER.json, as kiln.serving.local.RouterConfig writes it: {"endpoint", "variants": {name: url}, "shares":
{name: share}, "shadow": {"name", "url"} | null, "shadow_percent", "max_body_bytes", "token_env", "capture":
{"root", "sample_percent", "flush_seconds"} | null, "policy", "guardrails", "rollout_state", "features": {"url",
"service", "join_key"} | null, "sleepers": {variant: kiln.serving.sleep.SleeperConfig} (absent: none sleeps),
"multi_default": NAME-vVERSION | null (a multi-model endpoint's version for requests naming none), "inline":
{variant: {"model_uri", "runtime"}} (production variants served in this process, each's url inline:VARIANT; see
kiln.serving.inline), "tap": bool (capture and the shadow's copies handed to a process of their own, see
kiln.serving.tap; not with a shadow that scales to zero)}

Inference requests are answered by kiln.serving.front; the other routes live in kiln.serving.routes by concern (V2
health and metadata, control, metrics); every refusal they raise is a kiln.serving.errors.RequestRefused, answered
as JSON with its status.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from kiln.serving.capture import CaptureWriter
from kiln.serving.driver import RolloutDriver
from kiln.serving.errors import RequestRefused
from kiln.serving.inline import INLINE_SCHEME, InlineServer
from kiln.serving.router import FeatureLookup, Route, Router, RouterState
from kiln.serving.server import prepare_environment
from kiln.serving.sleep import SleeperConfig, Sleepers
from kiln.serving.spec import Guardrails, Policy
from kiln.serving.tap import Tap
from kiln.serving.upstream import Server
from kiln.serving.window import Windows

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

    from kiln.serving.front import Front

TICK_SECONDS = 0.5


def router_from_config(config: dict[str, Any], path: Path | None = None) -> Router:
    """The router a ROUTER.json (at ``path``: a tap's process reads it too) describes."""
    shadow = config.get("shadow")
    token_env = config.get("token_env")
    state = RouterState(
        endpoint=config["endpoint"],
        variants={n: Route(n, u) for n, u in config["variants"].items()},
        shares=dict(config["shares"]),
        shadow=Route(shadow["name"], shadow["url"]) if shadow else None,
        shadow_percent=float(config.get("shadow_percent", 0.0)),
        max_body_bytes=int(config.get("max_body_bytes", 1_000_000)),
        token=os.environ.get(token_env) if token_env else None,
        features=FeatureLookup(**config["features"]) if config.get("features") else None,
        multi_default=config.get("multi_default"),
    )
    cap = config.get("capture")
    windows = Windows()
    asleep = config.get("sleepers") or {}
    sleepers = Sleepers({n: SleeperConfig(**c) for n, c in asleep.items()}) if asleep else None
    if config.get("tap") and path is not None:
        tap = Tap(path, windows, state.shadow.name if state.shadow else None,
                  cap.get("sample_percent", 100.0) if cap else 0.0)
        return Router(state, windows, sleepers=sleepers, servers=inline_servers(config), tap=tap)
    capture = CaptureWriter(cap["root"], state.endpoint, cap.get("flush_seconds", 2.0),
                            cap.get("sample_percent", 100.0), endpoint_url=cap.get("endpoint_url")) if cap else None
    return Router(state, windows, capture, sleepers=sleepers, servers=inline_servers(config))


def inline_servers(config: dict[str, Any]) -> dict[str, Server]:
    """The production variants a ROUTER.json serves in this process, loaded, by their route's url."""
    inline = config.get("inline") or {}
    if not inline:
        return {}
    prepare_environment()
    servers: dict[str, Server] = {}
    for variant, served in inline.items():
        server = InlineServer(variant, config["endpoint"], served["model_uri"], served["runtime"])
        server.load()
        servers[INLINE_SCHEME + variant] = server
    return servers


def driver_from_config(router: Router, config: dict[str, Any]) -> RolloutDriver:
    """The rollout driver a ROUTER.json describes: its policy, guardrails and state file."""
    state = config.get("rollout_state")
    return RolloutDriver(router, Policy.model_validate(config.get("policy") or {}),
                         Guardrails.model_validate(config.get("guardrails") or {}), Path(state) if state else None)


async def answer_refused(request: Request, exc: Exception) -> Response:
    """The one exception handler: a RequestRefused as ``{"error": message[, "hint"]}`` with its HTTP status."""
    from starlette.responses import Response

    from kiln.serving.front import refusal

    reply = refusal(exc if isinstance(exc, RequestRefused) else RequestRefused(str(exc)))
    return Response(reply.body, status_code=reply.status, media_type="application/json")


async def _tick(driver: RolloutDriver | None, sleepers: Sleepers | None) -> None:
    while True:
        await asyncio.sleep(TICK_SECONDS)
        if driver is not None:
            driver.tick()
        if sleepers is not None:
            sleepers.tick()


@asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    router = cast("Router", app.state.router)
    driver = cast("RolloutDriver | None", app.state.driver)
    await router.start()
    task = asyncio.create_task(_tick(driver, router.sleepers)) if driver or router.sleepers else None
    yield
    if task:
        task.cancel()
    await router.stop()
    if router.capture:
        router.capture.close()


def build_app(router: Router, driver: RolloutDriver | None = None) -> Front:
    """The front: inference answered by kiln.serving.front over ``router``; V2 health and metadata, control and
    metrics routes (and ``driver``'s rollouts) by a Starlette app behind it."""
    from starlette.applications import Starlette

    from kiln.serving.front import Front
    from kiln.serving.routes import control, inference, metrics

    app = Starlette(routes=[*inference.ROUTES, *control.ROUTES, *metrics.ROUTES],
                    exception_handlers={RequestRefused: answer_refused}, lifespan=_lifespan)
    app.state.router, app.state.driver, app.state.metrics = router, driver, metrics.registry(router)
    return Front(router, app)


def main() -> None:
    """Run the front on uvicorn (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--port", required=True, type=int)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    import uvicorn

    # The capture writer's thread holds the GIL for up to this long at a time: Python's 5 ms default held each
    # request waiting behind a flush
    sys.setswitchinterval(0.0005)
    config = json.loads(args.config.read_text())
    router = router_from_config(config, args.config)
    app = build_app(router, driver_from_config(router, config))
    # What start-up made (inline variants' models and their libraries) is kept out of the collector's full passes,
    # which otherwise walk it all every few thousand requests: pauses of tens of ms in the callers' p99
    gc.freeze()
    # uvloop and httptools: the fastest loop and parser uvicorn has, both in the locked environment
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False, loop="uvloop",
                http="httptools", proxy_headers=False, server_header=False, date_header=False)


if __name__ == "__main__":
    main()
