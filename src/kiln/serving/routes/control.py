"""Control routes: the front's status, traffic shares, and its rollout (begin, promote, roll back)."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any, cast

from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from kiln.serving.errors import BadRequest, NotFound
from kiln.serving.routes import driver_of, router_of
from kiln.serving.spec import Policy

if TYPE_CHECKING:
    from kiln.serving.driver import RolloutDriver

SHARES = TypeAdapter(dict[str, float])


class RolloutRequest(BaseModel):
    """PUT /kiln/rollout's body: the candidate (served at ``url``) takes part of ``variant``'s share."""

    variant: str
    candidate: str
    url: str
    policy: Policy | None = None


async def status(request: Request) -> Response:
    """GET /kiln/status: shares, the rollout, and each variant's last minute (what `kiln endpoint status` shows)."""
    router = router_of(request)
    driver = cast("RolloutDriver | None", request.app.state.driver)
    st = router.state
    names = [*st.variants, *([st.shadow.name] if st.shadow else [])]
    report = driver.describe() if driver is not None else None
    return JSONResponse({"endpoint": st.endpoint, "shares": st.shares,
                         "rollout": report.to_dict() if report is not None else None,
                         "shadow": st.shadow.name if st.shadow else None,
                         "variants": {n: asdict(router.windows.summary(n)) for n in names},
                         "capture": {"written": counts[0], "dropped": counts[1]}
                         if (counts := router.capture_counts()) is not None else None,
                         "sleepers": router.sleepers.report() if router.sleepers else {}})


async def series(request: Request) -> Response:
    """GET /kiln/series: each variant's answers over the last 15 minutes in 10-second intervals (requests, errors,
    p50 and p99), oldest first: what a console charts."""
    router = router_of(request)
    st = router.state
    names = [*st.variants, *([st.shadow.name] if st.shadow else [])]
    return JSONResponse({"endpoint": st.endpoint, "shadow": st.shadow.name if st.shadow else None,
                         "variants": {n: [asdict(p) for p in router.windows.series(n)] for n in names}})


async def set_shares(request: Request) -> Response:
    """PUT /kiln/shares {variant: share}: the production variants' new shares of traffic."""
    router = router_of(request)
    try:
        new = SHARES.validate_json(await request.body())
    except ValidationError:
        raise BadRequest("expected a JSON object {variant: share}") from None
    unknown = sorted(set(new) - set(router.state.variants))
    if unknown or sum(new.values()) <= 0 or min(new.values()) < 0:
        raise BadRequest(f"shares must be >= 0 for known variants, summing above 0 (unknown: {unknown})")
    router.state.shares = new
    return JSONResponse({"shares": new})


async def begin_rollout(request: Request) -> Response:
    """PUT /kiln/rollout {variant, candidate, url[, policy]}: start rolling the candidate out."""
    driver = driver_of(request)
    try:
        body = RolloutRequest.model_validate_json(await request.body())
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(body)'}: {e['msg']}" for e in exc.errors())
        raise BadRequest(f"expected {{variant, candidate, url[, policy]}}: {problems}") from None
    driver.begin(body.variant, body.candidate, body.url, body.policy)
    return JSONResponse(_described(request))


async def decide_rollout(request: Request) -> Response:
    """POST /kiln/rollout/{promote|rollback|pause|resume} [{reason}]: decide the rollout under way now, or hold it
    where it is and let it go on."""
    driver = driver_of(request)
    action = request.path_params["action"]
    if action not in ("promote", "rollback", "pause", "resume"):
        raise NotFound("use /kiln/rollout/promote, rollback, pause or resume")
    # Read by hand rather than by a model: the body is optional, and an unreadable one means no reason given.
    try:
        body = await request.json()
    except ValueError:
        body = {}
    reason = body.get("reason") if isinstance(body, dict) else None
    if action in ("pause", "resume"):
        driver.hold(action == "pause", str(reason or f"{action}d by hand"))
    else:
        driver.force(action, str(reason or f"{action} by hand"))
    return JSONResponse(_described(request))


def _described(request: Request) -> dict[str, Any] | None:
    report = driver_of(request).describe()
    return report.to_dict() if report is not None else None


ROUTES = [
    Route("/kiln/status", status),
    Route("/kiln/series", series),
    Route("/kiln/shares", set_shares, methods=["PUT"]),
    Route("/kiln/rollout", begin_rollout, methods=["PUT"]),
    Route("/kiln/rollout/{action}", decide_rollout, methods=["POST"]),
]
