"""Prometheus metrics of one server, in their own registry (several apps can live in one process)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

PREFIX = "modernenc"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
TOKEN_BUCKETS = (64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)


class ServeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            f"{PREFIX}_requests", "HTTP requests by route and status", ["route", "status"], registry=r
        )
        self.request_seconds = Histogram(
            f"{PREFIX}_request_seconds", "Time from request to response", ["route"],
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.texts = Counter(f"{PREFIX}_texts", "Texts scored", registry=r)
        self.tokens = Counter(f"{PREFIX}_tokens", "Tokens scored ([CLS] and [SEP] included)", registry=r)
        self.truncated = Counter(
            f"{PREFIX}_truncated_texts", "Texts cut to the model's max_length", registry=r
        )
        self.cancelled = Counter(
            f"{PREFIX}_cancelled_texts", "Texts dropped from the queue because their client left", registry=r
        )
        self.queue_texts = Gauge(f"{PREFIX}_queue_texts", "Texts waiting for the model", registry=r)
        self.batch_tokens = Histogram(
            f"{PREFIX}_batch_tokens", "Tokens per packed batch", buckets=TOKEN_BUCKETS, registry=r
        )
        self.batch_texts = Histogram(
            f"{PREFIX}_batch_texts", "Texts per packed batch",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024), registry=r,
        )  # fmt: skip
        self.queue_seconds = Histogram(
            f"{PREFIX}_queue_seconds", "Time a text waits before its batch starts",
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.inference_seconds = Histogram(
            f"{PREFIX}_inference_seconds", "Model time per batch", buckets=LATENCY_BUCKETS, registry=r
        )
        self.audit_seconds = Histogram(
            f"{PREFIX}_audit_commit_seconds", "Time to commit a batch's audit rows",
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.decisions = Counter(
            f"{PREFIX}_decisions", "Decisions by label and review flag", ["label", "needs_review"], registry=r
        )
        self.spans = Counter(
            f"{PREFIX}_spans", "Spans returned by /v1/extract, by label", ["label"], registry=r
        )
        self.reviews = Counter(
            f"{PREFIX}_reviews", "Human reviews recorded, by verdict", ["verdict"], registry=r
        )


class RequestMetricsMiddleware:
    """Counts every HTTP response by route template (not raw path: bounded label values) and status."""

    def __init__(self, app, metrics: ServeMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # what the client sees if the app fails before answering

        async def send_and_record(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(path, str(status)).inc()
            self.metrics.request_seconds.labels(path).observe(time.perf_counter() - start)
