"""The endpoint front as an ASGI app (Starlette on uvicorn), and its process entry point.

Usage: python -m kiln.serving.app --config ROUTER.json --port PORT [--host 127.0.0.1]
ROUTER.json: {"endpoint", "variants": {name: url}, "shares": {name: share}, "shadow": {"name", "url"} | null,
"shadow_percent", "max_body_bytes", "token_env", "capture": {"root", "sample_percent", "flush_seconds"} | null}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from kiln.serving.capture import CaptureWriter
from kiln.serving.driver import RolloutDriver
from kiln.serving.router import FeatureLookup, Route, Router, RouterState, _json_error
from kiln.serving.spec import Guardrails, Policy
from kiln.serving.window import Windows


def router_from_config(config: dict[str, Any]) -> Router:
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
    )
    cap = config.get("capture")
    capture = CaptureWriter(Path(cap["root"]), state.endpoint, cap.get("flush_seconds", 2.0),
                            cap.get("sample_percent", 100.0)) if cap else None
    return Router(state, Windows(), capture)


TICK_SECONDS = 0.5


def driver_from_config(router: Router, config: dict[str, Any]) -> Any:
    state = config.get("rollout_state")
    return RolloutDriver(router, Policy.model_validate(config.get("policy") or {}),
                         Guardrails.model_validate(config.get("guardrails") or {}), Path(state) if state else None)


def build_app(router: Router, driver: Any = None) -> Any:
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, PlainTextResponse
    from starlette.routing import Route as Path_


    endpoint = router.state.endpoint

    async def infer(request: Any) -> Any:
        name = request.path_params["model"]
        if name != endpoint:
            return _json_error(404, f"no model '{name}' at this endpoint; it serves '{endpoint}'")
        return await router.infer(request)

    async def v1_infer(request: Any) -> Any:
        model, _, verb = request.path_params["target"].partition(":")
        if verb != "predict":
            return _json_error(404, f"unknown route; use /v1/models/{endpoint}:predict")
        request.path_params["model"] = model
        return await infer(request)

    async def ready(request: Any) -> Any:
        return JSONResponse({"ready": True, "endpoint": endpoint})

    async def status(request: Any) -> Any:
        names = [*router.state.variants, *([router.state.shadow.name] if router.state.shadow else [])]
        return JSONResponse({"endpoint": endpoint, "shares": router.state.shares,
                             "rollout": driver.describe() if driver else None,
                             "shadow": router.state.shadow.name if router.state.shadow else None,
                             "variants": {n: router.windows.summary(n).__dict__ for n in names},
                             "capture": {"written": router.capture.written, "dropped": router.capture.dropped}
                             if router.capture else None})

    async def shares(request: Any) -> Any:
        try:
            new = {str(k): float(v) for k, v in (await request.json()).items()}
        except (ValueError, AttributeError, TypeError):
            return _json_error(400, "expected a JSON object {variant: share}")
        unknown = sorted(set(new) - set(router.state.variants))
        if unknown or sum(new.values()) <= 0 or min(new.values()) < 0:
            return _json_error(400, f"shares must be >= 0 for known variants, summing above 0 (unknown: {unknown})")
        router.state.shares = new
        return JSONResponse({"shares": new})

    async def rollout(request: Any) -> Any:
        if driver is None:
            return _json_error(404, "this front runs no rollouts")
        try:
            body = await request.json()
            policy = Policy.model_validate(body["policy"]) if body.get("policy") else None
            return JSONResponse(driver.begin(body["variant"], body["candidate"], body["url"], policy) and
                                driver.describe())
        except (KeyError, TypeError, AttributeError):
            return _json_error(400, "expected {variant, candidate, url[, policy]}")
        except ValueError as exc:
            return _json_error(409, str(exc))

    async def decide(request: Any) -> Any:
        if driver is None:
            return _json_error(404, "this front runs no rollouts")
        action = request.path_params["action"]
        if action not in ("promote", "rollback"):
            return _json_error(404, "use /kiln/rollout/promote or /kiln/rollout/rollback")
        try:
            body = await request.json()
        except ValueError:
            body = {}
        try:
            driver.force(action, str(body.get("reason") or f"{action} by hand"))
        except ValueError as exc:
            return _json_error(409, str(exc))
        return JSONResponse(driver.describe())

    async def metrics(request: Any) -> Any:
        lines = []
        for n in router.state.variants:
            s = router.windows.summary(n)
            lines += [f'kiln_endpoint_requests_per_second{{endpoint="{endpoint}",variant="{n}"}} '
                      f"{s.requests_per_second:.3f}",
                      f'kiln_endpoint_error_rate{{endpoint="{endpoint}",variant="{n}"}} {s.error_rate:.4f}',
                      f'kiln_endpoint_share{{endpoint="{endpoint}",variant="{n}"}} {router.state.shares.get(n, 0)}']
            if s.p99_ms is not None:
                lines.append(f'kiln_endpoint_p99_ms{{endpoint="{endpoint}",variant="{n}"}} {s.p99_ms:.3f}')
        return PlainTextResponse("\n".join(lines) + "\n")

    async def ticker() -> None:
        while True:
            await asyncio.sleep(TICK_SECONDS)
            driver.tick()

    @asynccontextmanager
    async def lifespan(app: Any):
        await router.start()
        task = asyncio.create_task(ticker()) if driver else None
        yield
        if task:
            task.cancel()
        await router.stop()
        if router.capture:
            router.capture.close()

    return Starlette(routes=[
        Path_("/v1/models/{target}", v1_infer, methods=["POST"]),
        Path_("/v2/models/{model}/infer", infer, methods=["POST"]),
        Path_("/v2/health/ready", ready), Path_("/v2/health/live", ready),
        Path_("/kiln/status", status), Path_("/kiln/shares", shares, methods=["PUT"]),
        Path_("/kiln/rollout", rollout, methods=["PUT"]), Path_("/kiln/rollout/{action}", decide, methods=["POST"]),
        Path_("/metrics", metrics),
    ], lifespan=lifespan)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--port", required=True, type=int)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    import uvicorn

    config = json.loads(args.config.read_text())
    router = router_from_config(config)
    app = build_app(router, driver_from_config(router, config))
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
