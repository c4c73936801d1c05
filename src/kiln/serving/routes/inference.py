"""The V2 routes besides inference, at the endpoint's own URL: server liveness and readiness, model readiness, and
server and model metadata (from a production variant's KServe server, as a V2 client expects them); and refusals
for inference routes the endpoint does not have. Inference itself is answered by kiln.serving.front."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from kiln.serving.errors import NotFound, Unavailable
from kiln.serving.routes import router_of


def _model(request: Request) -> str:
    """The endpoint's name, when the path names it; NotFound otherwise."""
    name: str = request.path_params["model"]
    endpoint = router_of(request).state.endpoint
    if name != endpoint:
        raise NotFound(f"no model '{name}' at this endpoint; it serves '{endpoint}'")
    return name


async def v1_other(request: Request) -> Response:
    """POST /v1/models/{target} other than the endpoint's :predict."""
    model, _, _ = request.path_params["target"].partition(":")
    request.path_params["model"] = model
    raise NotFound(f"unknown route; use /v1/models/{_model(request)}:predict")


async def v2_infer_other(request: Request) -> Response:
    """POST /v2/models/{model}/infer for a model other than the endpoint (the endpoint's own is the front's)."""
    _model(request)
    raise NotFound("unknown route")


async def live(request: Request) -> Response:
    """GET /v2/health/live: the front is up."""
    return JSONResponse({"live": True})


async def ready(request: Request) -> Response:
    """GET /v2/health/ready: some production variant's model is ready (503 otherwise)."""
    endpoint = router_of(request).state.endpoint
    status, _, _ = await router_of(request).ask_variants(f"/v2/models/{endpoint}/ready")
    return JSONResponse({"ready": status == 200}, status_code=200 if status == 200 else 503)


async def model_ready(request: Request) -> Response:
    """GET /v2/models/{model}/ready."""
    name = _model(request)
    status, _, _ = await router_of(request).ask_variants(f"/v2/models/{name}/ready")
    return JSONResponse({"name": name, "ready": status == 200}, status_code=200 if status == 200 else 503)


async def model_metadata(request: Request) -> Response:
    """GET /v2/models/{model}: the model's inputs and outputs, named, typed and shaped (a production variant's)."""
    return await _passed_on(request, f"/v2/models/{_model(request)}")


async def server_metadata(request: Request) -> Response:
    """GET /v2: the server's name, version and protocol extensions (a production variant's server's)."""
    return await _passed_on(request, "/v2")


async def _passed_on(request: Request, path: str) -> Response:
    status, body, content_type = await router_of(request).ask_variants(path)
    if status == 503:
        raise Unavailable("no production variant of this endpoint is answering")
    return Response(body, status_code=status, media_type=content_type)


ROUTES = [
    Route("/v1/models/{target}", v1_other, methods=["POST"]),
    Route("/v2/models/{model}/infer", v2_infer_other, methods=["POST"]),
    Route("/v2/health/live", live),
    Route("/v2/health/ready", ready),
    Route("/v2/models/{model}/ready", model_ready),
    Route("/v2/models/{model}", model_metadata),
    Route("/v2", server_metadata),
]
