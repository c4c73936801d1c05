"""Inference routes: V1 predict and V2 infer under the endpoint's name, and the readiness checks."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from kiln.serving.errors import NotFound
from kiln.serving.routes import router_of


async def v2_infer(request: Request) -> Response:
    """POST /v2/models/{model}/infer: forwarded to a variant when ``model`` is the endpoint."""
    router = router_of(request)
    name, endpoint = request.path_params["model"], router.state.endpoint
    if name != endpoint:
        raise NotFound(f"no model '{name}' at this endpoint; it serves '{endpoint}'")
    return await router.infer(request)


async def v1_predict(request: Request) -> Response:
    """POST /v1/models/{model}:predict."""
    model, _, verb = request.path_params["target"].partition(":")
    if verb != "predict":
        raise NotFound(f"unknown route; use /v1/models/{router_of(request).state.endpoint}:predict")
    request.path_params["model"] = model
    return await v2_infer(request)


async def ready(request: Request) -> Response:
    """GET /v2/health/ready and /v2/health/live."""
    return JSONResponse({"ready": True, "endpoint": router_of(request).state.endpoint})


ROUTES = [
    Route("/v1/models/{target}", v1_predict, methods=["POST"]),
    Route("/v2/models/{model}/infer", v2_infer, methods=["POST"]),
    Route("/v2/health/ready", ready),
    Route("/v2/health/live", ready),
]
