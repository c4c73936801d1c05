"""The endpoint front's routes by concern: inference, control (shares and rollouts), metrics.

Handlers read the front's objects from the app's state, set by kiln.serving.app.build_app; a refusal is raised as a
kiln.serving.errors.RequestRefused and answered by the app's one exception handler.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from kiln.serving.errors import NotFound

if TYPE_CHECKING:
    from starlette.requests import Request

    from kiln.serving.driver import RolloutDriver
    from kiln.serving.router import Router


def router_of(request: Request) -> Router:
    """The front's router."""
    return cast("Router", request.app.state.router)


def driver_of(request: Request) -> RolloutDriver:
    """The front's rollout driver, or NotFound when this front runs no rollouts."""
    driver = cast("RolloutDriver | None", request.app.state.driver)
    if driver is None:
        raise NotFound("this front runs no rollouts")
    return driver
