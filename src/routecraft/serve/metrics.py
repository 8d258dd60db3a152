"""Prometheus metrics of one gateway (its own registry, so several gateways can live in one process).

With several gateway workers (``workers`` > 1) each worker process is started with ``PROMETHEUS_MULTIPROC_DIR``
set: prometheus_client then keeps every value in a per-process file of that folder, and ``render`` (any worker's
``GET /metrics``) sums them over the workers — counters and histograms over every worker that ever ran, the
in-flight and queued gauges over the live ones (each worker refreshes its own every second).
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
DECISION_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("routecraft_requests", "Chat requests by requested model, served model and HTTP status",
                                ["requested", "model", "status"], registry=r)
        self.latency = Histogram("routecraft_request_latency_seconds", "Whole-request latency of answered requests",
                                 ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.backend_latency = Histogram("routecraft_backend_latency_seconds", "Backend (strategy) time per answer",
                                         ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.tokens = Counter("routecraft_tokens", "Tokens per model", ["model", "kind"], registry=r)
        self.cost = Counter("routecraft_cost_usd", "Cost in USD per model", ["model"], registry=r)
        self.decisions = Counter("routecraft_routing_decisions", "Routing decisions",
                                 ["router", "model", "strategy", "budget"], registry=r)
        self.decision_latency = Histogram("routecraft_routing_decision_seconds", "Time to decide (routing only)",
                                          ["router"], buckets=DECISION_BUCKETS, registry=r)
        self.fallbacks = Counter("routecraft_fallbacks", "Candidates abandoned for the next one, by failed model",
                                 ["model"], registry=r)
        self.backend_errors = Counter("routecraft_backend_errors", "Backend call failures", ["model"], registry=r)
        self.rejected = Counter("routecraft_rejected_requests", "Requests refused before routing", ["status", "code"],
                                registry=r)
        self.ledger_errors = Counter("routecraft_ledger_errors", "Ledger rows that could not be written",
                                     registry=r)
        self.inflight = Gauge("routecraft_inflight_requests", "Requests executing on backends", registry=r,
                              multiprocess_mode="livesum")
        self.queued = Gauge("routecraft_queued_requests", "Requests waiting for an execution slot", registry=r,
                            multiprocess_mode="livesum")

    def render(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # one of several workers: the sum over all of them
            from prometheus_client import multiprocess

            shared = CollectorRegistry()
            multiprocess.MultiProcessCollector(shared)
            return generate_latest(shared)
        return generate_latest(self.registry)
