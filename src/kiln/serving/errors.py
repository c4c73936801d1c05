"""Requests the endpoint's front turns down: each error carries the HTTP status it is answered with.

The front raises these wherever it refuses a request (routing, limits, rollout control); one exception handler in
kiln.serving.app turns any of them into a JSON answer ``{"error": message}`` with the error's status.
"""

from __future__ import annotations

from typing import ClassVar

from kiln.errors import KilnError


class RequestRefused(KilnError):
    """A request the front cannot take; ``status`` is the HTTP status of its answer."""

    status: ClassVar[int] = 400
    exit_code = 1


class BadRequest(RequestRefused):
    """A body or a value the front cannot read."""

    status = 400


class Unauthorized(RequestRefused):
    """No bearer token, or the wrong one."""

    status = 401


class NotFound(RequestRefused):
    """No such model, variant, route or rollout at this front."""

    status = 404


class Conflict(RequestRefused):
    """The request is valid but the front's state forbids it now (a rollout under way, or none)."""

    status = 409


class PayloadTooLarge(RequestRefused):
    """A body over the endpoint's ``max_body_bytes``."""

    status = 413


class UnsupportedMediaType(RequestRefused):
    """A content type other than JSON."""

    status = 415


class Unavailable(RequestRefused):
    """A service the front needs (the feature server) is not answering."""

    status = 503
    exit_code = 2
