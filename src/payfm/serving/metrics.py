"""What the decision service exposes at ``GET /metrics`` (Prometheus' text format) and its access log.

Each app has a registry of its own (tests and several apps in one process do not share counts). Labels take a
bounded set of values: a request's route is its template (``/v1/reviews/{charge_id}/close``), never its path,
which the client writes (a charge id, or anything at all on an unknown path: ``other``). Counted:

- ``payfm_http_requests_total{route, method, status}`` and ``payfm_http_request_duration_seconds{route}``:
  every request, as the client saw it (shed, refused, failed ones included), from its arrival to its last
  byte sent;
- ``payfm_decisions_total{outcome, risk_level}`` and ``payfm_decision_duration_seconds``: decisions answered
  (a retry answered with its stored decision counts again), their time to decide (``latency_ms``);
- ``payfm_outcomes_total{type, result}``: disputes, early fraud warnings, refunds and authorization results
  (``applied``, ``duplicate`` or ``not_applied``); ``payfm_reviews_closed_total{reason}``;
- ``payfm_requests_shed_total`` (503 Overloaded) and ``payfm_backend_errors_total{backend}`` (503
  Unavailable: the decision log or the shared state failed);
- at each scrape: requests in flight, the event loop's last queueing delay, charges waiting for the event
  log, and ``payfm_model_info`` (the served model, shadow, feature set and ruleset: reloads show);
- the process's CPU, memory and open files (``process_*``, Linux).

The access log (logger ``payfm.access``, one line per request): the client's address, the API key's name, the
method, the path (numbers of 13 or more digits masked, cut: :func:`payfm.serving.errors.shown`), the status,
the milliseconds and the bytes sent. Never a body, a header or a query string.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from payfm.serving.errors import printable, shown

access_log = logging.getLogger("payfm.access")
# No `<counter>_created` series beside each counter (a timestamp per label set, doubling the series a scrape
# stores, which an SRE's audit saw as noise; Prometheus knows a counter's resets without it).
disable_created_metrics()  # type: ignore[no-untyped-call]

# The text format every Prometheus (2.x and 3.x) and compatible scraper reads; the names are all plain ones.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Seconds: the service's decisions take about a millisecond; a commit waits on the disk or the network.
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# route templates, in the order they are tried, of a path or of "METHOD path"; an id may hold "/" (as the
# routes allow)
_ROUTES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), name)
    for pattern, name in (
        (r"/v1/charges/score", "/v1/charges/score"),
        (r"/v1/charges/.+/authorization", "/v1/charges/{charge_id}/authorization"),
        (r"/v1/(disputes|early_fraud_warnings|refunds)", ""),  # its own path: three fixed names
        (r"/v1/reviews", "/v1/reviews"),
        (r"POST /v1/reviews/.+/close", "/v1/reviews/{charge_id}/close"),  # (a GET of it reads the review
        (r"/v1/reviews/.+", "/v1/reviews/{charge_id}"),  # of a charge id ending in /close)
        (r"/v1/admin/reload", "/v1/admin/reload"),
        (r"/(healthz|metrics|openapi\.json|docs|docs/oauth2-redirect)", ""),
    )
)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_of(path: str, method: str = "GET") -> str:
    """The route template of ``path`` (a label of bounded cardinality), ``other`` for any unknown path."""
    for pattern, name in _ROUTES:
        if pattern.fullmatch(path) or pattern.fullmatch(f"{method} {path}"):
            return name or path
    return "other"


class _Live(Collector):
    """Values read at each scrape from the app's objects (no bookkeeping on the hot path)."""

    def __init__(self, read: Callable[[], Mapping[str, Any]]) -> None:
        self.read = read

    def collect(self) -> Any:
        now = self.read()
        for name, doc in (
            ("payfm_requests_in_flight", "Requests being handled now."),
            ("payfm_event_loop_lag_seconds", "The event loop's last measured queueing delay."),
            ("payfm_events_waiting", "Decided charges and outcomes waiting to be appended to the event log."),
            (
                "payfm_health_warnings",
                "Warnings /healthz gives now (status 200 still): a shadow model not served, a workspace "
                "change that cannot be served, lists the ruleset reads deleted. 0 when there is none.",
            ),
        ):
            yield GaugeMetricFamily(name, doc, value=float(now[name]))
        info = GaugeMetricFamily(
            "payfm_model_info",
            "What the server decides with (value 1); labels change on a reload.",
            labels=["model", "shadow_model", "feature_set", "ruleset_version"],
        )
        served = now["served"]
        keys = ("model", "shadow_model", "feature_set", "ruleset_version")
        info.add_metric([str(served.get(k) or "") for k in keys], 1.0)
        yield info


class ServiceMetrics:
    """The counters of one app; ``live`` returns the values read at scrape time (see :class:`_Live`)."""

    def __init__(self, live: Callable[[], Mapping[str, Any]]) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter(
            "payfm_http_requests", "HTTP requests answered.", ["route", "method", "status"], registry=r
        )
        self.request_seconds = Histogram(
            "payfm_http_request_duration_seconds",
            "Time from a request's arrival to its response's last byte.",
            ["route"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.decisions = Counter(
            "payfm_decisions",
            "Decisions answered, by outcome and risk level (a retry answered with its stored decision too).",
            ["outcome", "risk_level"],
            registry=r,
        )
        self.decision_seconds = Histogram(
            "payfm_decision_duration_seconds",
            "Time to decide a charge (the decision's latency_ms: features, model, rules), before its commit.",
            buckets=_BUCKETS,
            registry=r,
        )
        self.outcomes = Counter(
            "payfm_outcomes", "Outcomes and authorization results received.", ["type", "result"], registry=r
        )
        self.reviews_closed = Counter("payfm_reviews_closed", "Reviews closed.", ["reason"], registry=r)
        self.shed = Counter("payfm_requests_shed", "Requests shed (503 Overloaded).", registry=r)
        self.backend_errors = Counter(
            "payfm_backend_errors",
            "Requests failed by a backend (503 Unavailable).",
            ["backend"],
            registry=r,
        )
        ProcessCollector(registry=r)
        r.register(_Live(live))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def request(
        self,
        scope: Mapping[str, Any],
        status: int,
        seconds: float,
        sent: int,
        key: str | None,
        log_access: bool,
    ) -> None:
        """Count one answered request; write its access-log line when ``log_access``."""
        path = scope["path"]
        route = route_of(path, scope["method"])
        method = scope["method"] if scope["method"] in _METHODS else "other"
        self.requests.labels(route, method, str(status)).inc()
        self.request_seconds.labels(route).observe(seconds)
        if log_access and access_log.isEnabledFor(logging.INFO):
            client = scope.get("client")
            access_log.info(
                '%s %s "%s %s" %d %.1f ms %d B',
                printable(shown(f"{client[0]}:{client[1]}")) if client else "-",  # (X-Forwarded-For's text)
                shown(key) if key else "-",
                method,
                printable(shown(path)),  # (a path is decoded: %0A would start a forged line)
                status,
                seconds * 1000,
                sent,
            )

    def decided(self, outcome: str, risk_level: str | None, latency_ms: float) -> None:
        self.decisions.labels(outcome, risk_level or "none").inc()
        self.decision_seconds.observe(latency_ms / 1000)

    def outcome(self, kind: str, answer: Mapping[str, Any]) -> None:
        result = "applied" if answer.get("applied") else "not_applied"
        result = "duplicate" if answer.get("duplicate") else result
        self.outcomes.labels(kind, result).inc()
