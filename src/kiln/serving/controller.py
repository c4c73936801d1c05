"""The cluster's rollout controller: moves an endpoint's VirtualService weights as kiln.serving.rollout decides.

Usage: python -m kiln.serving.controller --endpoint NAME --namespace NS --prometheus URL [--metrics istio|kiln]
       [--interval 10] [--once]

One runs per endpoint, as the Deployment kiln.serving.render writes. A rollout is requested by writing
`{"stable": "<variant>", "candidate": "<variant>"}` into the VirtualService's `kiln.dev/rollout` annotation; both are
production variants of the endpoint's spec (a candidate rendered with weight 0 takes no traffic until then). After
every decision the annotation holds the rollout's whole state, so a restarted controller resumes where the last one
stopped. The decisions are kiln.serving.rollout's, the same the local endpoint makes; here they are fed from
Prometheus (Istio's standard request metrics, or the model servers' own) and applied by patching the VirtualService.
The spec (policy, guardrails, weights) is read from the ConfigMap `kiln-endpoint-<endpoint>` at every step: an
endpoint not deployed yet is waited for.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, get_args

from kiln.errors import InputError, KilnError, ServiceError
from kiln.serving.kube import Kube, connect
from kiln.serving.render import (
    PREDICTOR_SUFFIX,
    WEIGHTED_ROUTE,
    config_map_name,
    isvc_name,
    predictor_host,
    weights_for,
)
from kiln.serving.rollout import Phase, Rollout, VariantStats, advance, start
from kiln.serving.spec import EndpointSpec, Guardrails, Policy, parse_spec

ANNOTATION = "kiln.dev/rollout"
MetricsName = Literal["istio", "kiln"]
# The pod labels kiln.dev/endpoint and kiln.dev/variant as Prometheus's pod scrape names them.
ENDPOINT_LABEL, VARIANT_LABEL = "kiln_dev_endpoint", "kiln_dev_variant"
PHASES: tuple[str, ...] = get_args(Phase)
log = logging.getLogger(__name__)


class MetricsSource(Protocol):
    def stats(self, variants: Sequence[str], since: float, now: float) -> dict[str, VariantStats]:
        """Each variant's requests, 5xx answers and p99 latency between ``since`` and ``now``."""


class RoutePatcher(Protocol):
    def state(self) -> object:
        """The annotation's content (parsed JSON): a rollout request, a rollout's state, or None."""

    def patch(self, weights: dict[str, int], state: dict[str, Any]) -> None:
        """Set the production weights and store the rollout's state, in one change."""


def dump_rollout(r: Rollout) -> dict[str, Any]:
    """A rollout as JSON-ready data (what the annotation holds)."""
    return {"stable": r.stable, "candidate": r.candidate, "phase": r.phase, "share": r.share, "since": r.since,
            "reason": r.reason, "policy": r.policy.model_dump(), "guardrails": r.guardrails.model_dump(),
            "history": list(r.history), "paused": r.paused}


def load_rollout(data: Mapping[str, Any]) -> Rollout:
    """The rollout ``dump_rollout`` wrote; InputError when the annotation was edited into something else."""
    try:
        if data["phase"] not in PHASES:
            raise ValueError(f"phase {data['phase']!r} is none of {', '.join(PHASES)}")
        return Rollout(str(data["stable"]), str(data["candidate"]), Policy.model_validate(data["policy"]),
                       Guardrails.model_validate(data["guardrails"]), data["phase"], float(data["share"]),
                       float(data["since"]), str(data.get("reason", "")), tuple(data.get("history", ())),
                       bool(data.get("paused", False)))
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"annotation {ANNOTATION}: not a rollout's state ({exc})",
                         hint='write {"stable": VARIANT, "candidate": VARIANT} to request a new rollout') from None


@dataclass(frozen=True)
class Decision:
    """What one step decided, as the log line says it."""

    endpoint: str
    rollout: Rollout | None
    changed: bool = False
    weights: dict[str, int] | None = None
    stats: dict[str, VariantStats] = field(default_factory=dict)
    note: str = ""

    def __str__(self) -> str:
        r = self.rollout
        if r is None:
            return f"{self.endpoint}: {self.note}"
        line = f"{self.endpoint}: {r.phase}, {r.candidate} at {r.share:.0%} of {r.stable}'s traffic"
        if self.changed:
            assert self.weights is not None  # a change always carries the new weights
            return f"{line}; {r.reason}; weights {' '.join(f'{n}={w}' for n, w in self.weights.items())}"
        seen = ", ".join(f"{n} {s.requests} req {s.errors} 5xx p99 "
                         f"{'-' if s.p99_ms is None else f'{s.p99_ms:.1f} ms'}" for n, s in self.stats.items())
        return f"{line}; {self.note or 'held'}{f' ({seen})' if seen else ''}"


class Controller:
    """One endpoint's rollout: each step reads the state, judges the candidate, and patches what changed."""

    def __init__(self, spec: EndpointSpec, metrics: MetricsSource, routes: RoutePatcher) -> None:
        self.spec, self.metrics, self.routes = spec, metrics, routes
        self.base_weights = {v.name: v.weight for v in spec.variants}

    def step(self, now: float) -> Decision:
        """One decision at ``now``: wall-clock seconds, the clock the stored rollout's times are in."""
        raw = self.routes.state()
        if raw is None:
            return Decision(self.spec.name, None, note="no rollout requested")
        if not isinstance(raw, dict):
            raise InputError(f"annotation {ANNOTATION}: expected a JSON object, found {json.dumps(raw)}")
        if "phase" not in raw:
            return self._begin(raw, now)
        r = load_rollout(raw)
        if r.done:
            return Decision(self.spec.name, r, note="finished")
        stats = self.metrics.stats([r.stable, r.candidate], r.since, now)
        nxt = advance(r, stats, now)
        if nxt is r:
            return Decision(self.spec.name, r, stats=stats)
        return self._apply(nxt, stats)

    def _begin(self, request: Mapping[str, Any], now: float) -> Decision:
        names = list(self.base_weights)
        candidate = request.get("candidate")
        stable = request.get("stable") or next((n for n in names if n != candidate), None)
        problem = None
        if candidate not in names or stable not in names:
            problem = f"stable and candidate must be production variants ({', '.join(names)})"
        elif stable == candidate:
            problem = "stable and candidate are the same variant"
        if problem:
            note = f"rollout request {json.dumps(dict(request))} ignored: {problem}"
            return Decision(self.spec.name, None, note=note)
        assert isinstance(stable, str) and isinstance(candidate, str)  # both are among the variant names
        return self._apply(start(stable, candidate, self.spec.policy, self.spec.guardrails, now), {})

    def _apply(self, r: Rollout, stats: dict[str, VariantStats]) -> Decision:
        weights = weights_for(r, self.base_weights)
        self.routes.patch(weights, dump_rollout(r))
        return Decision(self.spec.name, r, changed=True, weights=weights, stats=stats)


def promql(services: Sequence[str], namespace: str, window_seconds: float, percentiles: Sequence[int] = (99,)
           ) -> dict[str, str]:
    """The queries for requests, 5xx answers and latency percentiles (``p99_ms`` and so on) per predictor Service,
    over Istio's standard metrics."""
    names = "|".join(services)
    where = f'reporter="destination", destination_service_namespace="{namespace}", ' \
            f'destination_service_name=~"{names}"'
    window = f"{max(1, math.ceil(window_seconds))}s"
    return {
        "requests": f"sum by (destination_service_name) (increase(istio_requests_total{{{where}}}[{window}]))",
        "errors": f'sum by (destination_service_name) (increase(istio_requests_total{{{where}, '
                  f'response_code=~"5.."}}[{window}]))',
        **{f"p{q}_ms": f"histogram_quantile({q / 100}, sum by (destination_service_name, le) "
                       f"(rate(istio_request_duration_milliseconds_bucket{{{where}}}[{window}])))" for q in percentiles},
    }


def server_promql(endpoint: str, variants: Sequence[str], namespace: str, window_seconds: float,
                  percentiles: Sequence[int] = (99,)) -> dict[str, str]:
    """The same per variant over the model servers' own metrics (kiln.serving.server_metrics), as Prometheus
    labels a pod's samples by the usual pod scrape: `namespace`, and each pod label with `.` and `/` as `_`."""
    where = f'namespace="{namespace}", {ENDPOINT_LABEL}="{endpoint}", {VARIANT_LABEL}=~"{"|".join(variants)}"'
    window = f"{max(1, math.ceil(window_seconds))}s"
    return {
        "requests": f"sum by ({VARIANT_LABEL}) (increase(kiln_model_requests_total{{{where}}}[{window}]))",
        "errors": f'sum by ({VARIANT_LABEL}) (increase(kiln_model_requests_total{{{where}, code=~"5.."}}[{window}]))',
        **{f"p{q}_ms": f"1000 * histogram_quantile({q / 100}, sum by ({VARIANT_LABEL}, le) "
                       f"(rate(kiln_model_request_seconds_bucket{{{where}}}[{window}])))" for q in percentiles},
    }


def parse_vector(payload: Mapping[str, Any], key: str = "destination_service_name") -> dict[str, float]:
    """A Prometheus instant-vector answer as {the samples' ``key`` label: value}; NaN (no data) is left out."""
    if payload.get("status") != "success":
        raise ServiceError(f"Prometheus refused the query: {payload.get('errorType', '?')}: "
                           f"{payload.get('error', payload)}")
    data = payload.get("data") or {}
    if data.get("resultType") != "vector":
        raise ServiceError(f"Prometheus answered a {data.get('resultType')!r}, not an instant vector")
    out: dict[str, float] = {}
    for sample in data.get("result", []):
        value = float(sample["value"][1])
        if not math.isnan(value):
            out[sample["metric"].get(key, "")] = value
    return out


class PrometheusMetrics:
    """VariantStats from Prometheus: per variant's KServe predictor Service as Istio's sidecars report it
    (``source`` "istio"), or per variant's pods as its model servers report it ("kiln", for a cluster without a mesh).

    The spec's custom guardrail metric is not read here: the cluster judges errors and latency only.
    """

    def __init__(self, url: str, endpoint: str, namespace: str,
                 get: Callable[[str, dict[str, str]], Mapping[str, Any]] | None = None,
                 source: MetricsName = "istio") -> None:
        self.url, self.endpoint, self.namespace, self.source = url.rstrip("/"), endpoint, namespace, source
        self.get = get or self._http_get

    def _http_get(self, query: str, params: dict[str, str]) -> Mapping[str, Any]:
        import httpx

        try:
            res = httpx.get(f"{self.url}/api/v1/query", params={"query": query, **params}, timeout=10)
            body: Mapping[str, Any] = res.json()
            return body
        except (httpx.HTTPError, ValueError) as exc:
            raise ServiceError(f"Prometheus at {self.url}: {exc}") from None

    def stats(self, variants: Sequence[str], since: float, now: float) -> dict[str, VariantStats]:
        if self.source == "istio":
            keys = {f"{isvc_name(self.endpoint, v)}{PREDICTOR_SUFFIX}": v for v in variants}
            queries, label = promql(list(keys), self.namespace, now - since), "destination_service_name"
        else:
            keys = {v: v for v in variants}
            queries, label = server_promql(self.endpoint, variants, self.namespace, now - since), VARIANT_LABEL
        values = {k: parse_vector(self.get(q, {"time": f"{now:.3f}"}), label) for k, q in queries.items()}
        return {v: VariantStats(requests=round(values["requests"].get(k, 0.0)),
                                errors=round(values["errors"].get(k, 0.0)), p99_ms=values["p99_ms"].get(k))
                for k, v in keys.items()}


def reweighted(http: Sequence[Mapping[str, Any]], weights: Mapping[str, int],
               hosts: Mapping[str, str]) -> list[dict[str, Any]]:
    """The VirtualService's routes with the weighted route's destinations set to ``weights`` (variant -> weight)."""
    variant_of = {h: v for v, h in hosts.items()}
    routes: list[dict[str, Any]] = json.loads(json.dumps(list(http)))
    weighted = next((r for r in routes if r.get("name") == WEIGHTED_ROUTE), None)
    if weighted is None:
        raise InputError(f"the VirtualService has no route named '{WEIGHTED_ROUTE}'",
                         hint="re-apply the objects `kiln endpoint render` wrote")
    seen = {variant_of.get(d["destination"]["host"]) for d in weighted["route"]}
    missing = sorted(set(weights) - seen)
    if missing:
        raise InputError(f"the VirtualService routes no traffic to {', '.join(missing)}",
                         hint="re-render and re-apply the endpoint with every production variant")
    for dest in weighted["route"]:
        variant = variant_of.get(dest["destination"]["host"])
        dest["weight"] = weights.get(variant, 0) if variant is not None else 0
    return routes


class VirtualServiceRoutes:
    """The endpoint's Istio VirtualService, read and patched through the Kubernetes API."""

    def __init__(self, kube: Kube, spec: EndpointSpec, namespace: str) -> None:
        self.kube, self.name, self.namespace = kube, spec.name, namespace
        self.hosts = {v.name: predictor_host(spec.name, v.name, namespace) for v in spec.variants}
        self._seen: dict[str, Any] | None = None

    def _get(self) -> dict[str, Any]:
        found = self.kube.get("VirtualService", self.namespace, self.name)
        if found is None:
            raise ServiceError(f"VirtualService {self.namespace}/{self.name}: not found",
                               hint="deploy the endpoint first (`kiln endpoint deploy`)")
        return found

    def state(self) -> object:
        self._seen = self._get()
        raw = (self._seen.get("metadata", {}).get("annotations") or {}).get(ANNOTATION)
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise InputError(f"annotation {ANNOTATION} on VirtualService {self.name} is not JSON") from None

    def patch(self, weights: dict[str, int], state: dict[str, Any]) -> None:
        vs = self._seen or self._get()
        # The resourceVersion makes the API server refuse the patch if the object changed since it was read.
        body = {"metadata": {"resourceVersion": vs["metadata"]["resourceVersion"],
                             "annotations": {ANNOTATION: json.dumps(state)}},
                "spec": {"http": reweighted(vs["spec"]["http"], weights, self.hosts)}}
        self.kube.patch("VirtualService", self.namespace, self.name, body)
        self._seen = None


def read_spec(kube: Kube, endpoint: str, namespace: str) -> EndpointSpec:
    """The endpoint's spec from its ConfigMap `kiln-endpoint-<endpoint>`."""
    import yaml

    name = config_map_name(endpoint)
    cm = kube.get("ConfigMap", namespace, name)
    if cm is None:
        raise ServiceError(f"ConfigMap {namespace}/{name}: not found: endpoint {endpoint} is not deployed in "
                           f"{namespace}", hint="`kiln endpoint deploy` creates it")
    return parse_spec(yaml.safe_load((cm.get("data") or {}).get("endpoint.yaml", "")), f"ConfigMap {namespace}/{name}")


def _stopped(seconds: float) -> bool:
    """Wait up to ``seconds`` for SIGTERM; True when it came. The signal is blocked in this process (see __main__), so
    one sent during a decision waits, pending, and ends the loop at once when the decision is made."""
    return signal.sigtimedwait([signal.SIGTERM], seconds) is not None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--prometheus", required=True, help="Prometheus base URL, e.g. http://prometheus:9090")
    parser.add_argument("--interval", type=float, default=10.0, help="Seconds between decisions.")
    parser.add_argument("--metrics", choices=get_args(MetricsName), default="istio",
                        help="istio: the mesh's request metrics per predictor Service; kiln: the model servers' own, "
                             "per pod labelled kiln.dev/variant.")
    parser.add_argument("--once", action="store_true", help="Decide once and exit.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    try:
        kube = connect()  # the pod's own credentials; from a workstation, the kubeconfig's current context
    except KilnError as exc:
        log.error("%s: %s", args.endpoint, str(exc).replace("\n", " "))
        return exc.exit_code
    warned = False
    while True:
        code = 0
        try:
            # Read every time: `kiln endpoint update` adds the candidate variant to the spec before requesting.
            spec = read_spec(kube, args.endpoint, args.namespace)
            if spec.guardrails.custom_metric and not warned:
                log.warning("%s: the custom guardrail %s is not judged in the cluster", spec.name,
                            spec.guardrails.custom_metric)
                warned = True
            controller = Controller(spec, PrometheusMetrics(args.prometheus, spec.name, args.namespace,
                                                            source=args.metrics),
                                    VirtualServiceRoutes(kube, spec, args.namespace))
            log.info("%s", controller.step(time.time()))
        except KilnError as exc:
            code = exc.exit_code
            log.error("%s: no decision: %s", args.endpoint, str(exc).replace("\n", " "))
        if args.once:
            return code
        if _stopped(args.interval):
            break
    log.info("%s: stopped", args.endpoint)
    return 0

if __name__ == "__main__":
    # SIGTERM is blocked and waited for between decisions (_stopped), never handled: a handler that set an Event could
    # deadlock on the Event's lock when the signal came while the waiting thread held it, and the old controller of a
    # replaced pod then kept deciding until it was killed at the end of its grace period. A blocked signal is queued
    # even for a container's first process, which drops a signal it neither handles nor blocks.
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])
    raise SystemExit(main())
