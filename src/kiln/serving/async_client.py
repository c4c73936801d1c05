"""Sending a request to an asynchronous endpoint and reading its outcome (`kiln endpoint invoke --async`, `kiln
endpoint result`)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

from kiln.errors import InputError, ServiceError
from kiln.serving.async_store import AsyncStore, Outcome

CHUNK = 1 << 20


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


def submit(url: str, body: Path | bytes, content_type: str, token: str | None = None) -> Outcome:
    """POST ``body`` (a file, streamed, or bytes) to the endpoint's front at ``url``; the outcome it answers with."""
    import httpx

    headers = {"content-type": content_type, **({"authorization": f"Bearer {token}"} if token else {})}
    content = _chunks(body) if isinstance(body, Path) else body
    if isinstance(body, Path):
        headers["content-length"] = str(body.stat().st_size)
    try:
        res = httpx.post(url, content=content, headers=headers, timeout=httpx.Timeout(30, write=None))
    except httpx.HTTPError as exc:
        raise ServiceError(f"the endpoint at {url} did not take the request: {exc}") from None
    try:
        answer = res.json()
    except ValueError:
        answer = {"error": res.text[:500]}
    if res.status_code != 202:
        raise InputError(f"the endpoint refused the request ({res.status_code}): {answer.get('error', answer)}")
    return Outcome(**answer)


def wait_for(store: AsyncStore, inference_id: str, seconds: float = 0.0, poll: float = 0.5) -> Outcome:
    """The request's outcome, waiting up to ``seconds`` for it to be done or failed."""
    deadline = time.monotonic() + seconds
    while True:
        outcome = store.outcome(inference_id)
        if outcome.status != "pending" or time.monotonic() >= deadline:
            return outcome
        time.sleep(poll)
