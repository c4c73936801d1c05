"""The metrics route: each production variant's gauges in the Prometheus text format, at /metrics.

kiln_endpoint_requests_per_second, kiln_endpoint_error_rate, kiln_endpoint_share and kiln_endpoint_p99_ms (when the
variant answered in the last minute), each labelled by endpoint and variant.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kiln.serving.router import Router

LABELS = ["endpoint", "variant"]


class VariantCollector:
    """The router's per-variant figures, read from its request windows at each scrape (a custom collector:
    the values are computed when asked, not set as requests pass)."""

    def __init__(self, router: Router) -> None:
        self.router = router

    def collect(self) -> Iterator[Metric]:
        st = self.router.state
        rps = GaugeMetricFamily("kiln_endpoint_requests_per_second", "Requests per second over the last minute.",
                                labels=LABELS)
        errors = GaugeMetricFamily("kiln_endpoint_error_rate", "Share of 5xx answers over the last minute.",
                                   labels=LABELS)
        share = GaugeMetricFamily("kiln_endpoint_share", "The variant's share of production traffic.", labels=LABELS)
        p99 = GaugeMetricFamily("kiln_endpoint_p99_ms", "99th percentile latency (ms) over the last minute.",
                                labels=LABELS)
        for name in list(st.variants):
            s = self.router.windows.summary(name)
            labels = [st.endpoint, name]
            rps.add_metric(labels, s.requests_per_second)
            errors.add_metric(labels, s.error_rate)
            share.add_metric(labels, st.shares.get(name, 0))
            if s.p99_ms is not None:
                p99.add_metric(labels, s.p99_ms)
        yield from (rps, errors, share, p99)


def registry(router: Router) -> CollectorRegistry:
    """A registry of the front's own gauges (not the process-wide default one)."""
    out = CollectorRegistry(auto_describe=False)
    out.register(VariantCollector(router))
    return out


async def metrics(request: Request) -> Response:
    """GET /metrics."""
    scraped = cast("CollectorRegistry", request.app.state.metrics)
    return Response(generate_latest(scraped), media_type=CONTENT_TYPE_LATEST)


ROUTES = [Route("/metrics", metrics)]
