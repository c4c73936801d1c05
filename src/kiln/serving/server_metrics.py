"""A model server's own request metrics, beside KServe's at /metrics: what a rollout is judged on in a cluster without
a mesh to count requests (the rollout controller's `--metrics kiln`).

kiln_model_requests_total{model, code} counts inference requests by HTTP status; kiln_model_request_seconds{model}
is their latency. Only inference paths count (`/v1/models/M:predict`, `/v2/models/M/infer`...), not probes. KServe's
own metrics time the model's predict call only and count no failures, hence these.
"""

from __future__ import annotations

import re
import time
from typing import Any

from prometheus_client import Counter, Histogram

REQUESTS = Counter("kiln_model_requests", "Inference requests answered, by HTTP status.", ["model", "code"])
SECONDS = Histogram("kiln_model_request_seconds", "Inference request latency.", ["model"],
                    buckets=(0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0))
INFERENCE = re.compile(r"^/v1/models/([^/:]+):(predict|explain)$|^/v2/models/([^/]+)(/versions/[^/]+)?/infer$")


class RequestMetrics:
    """Pure ASGI middleware (no per-request objects beyond the status it keeps): counts and times inference requests."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        match = INFERENCE.match(scope.get("path", "")) if scope["type"] == "http" else None
        if match is None:
            await self.app(scope, receive, send)
            return
        model = match.group(1) or match.group(3)
        status = 500  # an exception before any answer is a 500 to the caller
        start = time.perf_counter()

        async def sending(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            SECONDS.labels(model).observe(time.perf_counter() - start)
            REQUESTS.labels(model, str(status)).inc()
