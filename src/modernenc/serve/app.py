"""The HTTP API: routes, limits, errors and authentication, on FastAPI. ``server.py`` runs it under uvicorn.

Three worker threads keep the event loop free: the tokenizer, the model (``BatchScheduler`` feeds it
packed batches) and the audit store (every SQLite call). Order of checks on a request: the API key (401),
the body's size (413) and shape (422), the number of texts (413), blank texts (422), room in the queue
(429); then the texts are tokenized, queued, scored, their audit rows committed, and only then answered.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from fastapi import Depends, FastAPI, Query, Request, Response, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from modernenc.serve.audit import (
    AuditStore,
    DecisionRecord,
    ExtractionRecord,
    ReviewRecord,
    UnknownDecision,
    spans_json,
    utc_now,
)
from modernenc.serve.auth import ApiKeys
from modernenc.serve.batching import BatchScheduler, FinalizeFailed, InferenceFailed, Job, QueueFull, Stopped
from modernenc.serve.engine import DecisionPolicy, Engine
from modernenc.serve.metrics import RequestMetricsMiddleware, ServeMetrics
from modernenc.serve.schemas import (
    ClassifyRequest,
    ClassifyResponse,
    ErrorResponse,
    ExtractRequest,
    ExtractResponse,
    PendingReviews,
    Review,
    ReviewRequest,
)
from modernenc.serve.settings import ServeSettings

logger = logging.getLogger("modernenc.serve")

ERROR_TYPES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "request_too_large",
    422: "invalid_request",
    429: "queue_full",
    500: "internal_error",
    503: "unavailable",
}
CLIENT_CLOSED = 499  # nginx's code for "the client left first": counted, never seen by anyone


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


class ClientGone(Exception):
    """The client disconnected before its answer was ready."""


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"type": ERROR_TYPES.get(status, "error"), "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


def _location(loc: Sequence[Any]) -> str:
    """('texts', 2) -> 'texts[2]'; the 'body' / 'query' / 'path' prefix FastAPI adds is dropped."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def describe_errors(errors: Sequence[dict]) -> str:
    """Pydantic errors as one sentence that names each field: 'texts[2]: Input should be a valid string'."""
    for error in errors:
        if error.get("type") == "json_invalid":
            detail = (error.get("ctx") or {}).get("error", error.get("msg", ""))
            return f"the body is not valid JSON ({detail})"
    parts = []
    for error in errors[:3]:
        where = _location(error.get("loc", ()))
        parts.append(f"{where}: {error['msg']}" if where else str(error["msg"]))
    more = f" (and {len(errors) - 3} more problems)" if len(errors) > 3 else ""
    return "; ".join(parts) + more


def _body_schema(model: type[BaseModel]) -> dict:
    """The OpenAPI request body of a route that reads its own body (so limits come before parsing)."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


ERROR_RESPONSES = {status: {"model": ErrorResponse} for status in (401, 413, 422, 429, 503)}


@dataclass
class RequestContext:
    """What the audit rows of one request need besides the model's outputs."""

    request_id: str
    key_name: str | None
    policy: DecisionPolicy | None  # None for /v1/extract
    texts: Sequence[str]
    digests: list[str]
    truncated: list[bool]
    offsets: list[Any] | None = None  # /v1/extract: each text's token character offsets, to decode spans


@dataclass
class ServerState:
    engine: Engine
    settings: ServeSettings
    store: AuditStore
    keys: ApiKeys | None
    metrics: ServeMetrics = field(default_factory=ServeMetrics)
    scheduler: BatchScheduler | None = None
    tokenizer_thread: ThreadPoolExecutor | None = None
    model_thread: ThreadPoolExecutor | None = None
    audit_thread: ThreadPoolExecutor | None = None
    ready: bool = False
    draining: bool = False
    fatal: str | None = None  # why the server cannot serve (a failed warm-up, a dead batcher); it then stops
    on_fatal: Callable[[], None] | None = None

    def fail(self, reason: str) -> None:
        """The server cannot serve: /ready and new requests answer 503 with `reason`, and it stops."""
        self.fatal = reason
        if self.on_fatal is not None:
            self.on_fatal()

    def begin_drain(self) -> None:
        """SIGTERM: /ready turns 503 for load balancers, and batches stop waiting for company."""
        self.draining = True
        if self.scheduler is not None:
            self.scheduler.flush()

    async def in_audit_thread(self, function: Callable, *args) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.audit_thread, function, *args)

    # --- runs on the audit thread -----------------------------------------------------------------------
    def finalize(self, jobs: list[Job]) -> list[list[dict]]:
        """Decide, then commit every result of ``jobs`` in one transaction; returns the results per job."""
        if self.engine.task == "extract":
            return self.finalize_extractions(jobs)
        return self.finalize_decisions(jobs)

    def provenance(self, context: RequestContext, i: int, created: str) -> dict[str, Any]:
        """What every audit row of text ``i`` records besides its result: the request, when, who asked,
        the input's digest (and the text with --audit-store-text), the model's digest and precision."""
        return {
            "request_id": context.request_id,
            "created_at": created,
            "key_name": context.key_name,
            "text_sha256": context.digests[i],
            "text": context.texts[i] if self.settings.audit_store_text else None,
            "model_digest": self.engine.digest,
            "dtype": self.engine.dtype,
        }

    def finalize_decisions(self, jobs: list[Job]) -> list[list[dict]]:
        engine, created = self.engine, utc_now()
        records, outputs = [], []
        for job in jobs:
            context: RequestContext = job.context
            policy, results = context.policy, []
            for i, probability in enumerate(float(p) for p in job.outputs):
                label, needs_review = policy.decide(probability, engine.positive_label, engine.label_names)
                decision_id = str(uuid.uuid4())
                records.append(
                    DecisionRecord(
                        decision_id=decision_id,
                        **self.provenance(context, i, created),
                        threshold_name=policy.threshold_name,
                        threshold=policy.threshold,
                        review_lo=policy.review_band[0],
                        review_hi=policy.review_band[1],
                        probability=probability,
                        label=str(label),
                        needs_review=needs_review,
                        truncated=context.truncated[i],
                    )
                )
                results.append(
                    {
                        "probability": probability,
                        "label": label,
                        "needs_review": needs_review,
                        "truncated": context.truncated[i],
                        "decision_id": decision_id,
                    }
                )
            outputs.append(results)
        with self.metrics.audit_seconds.time():
            self.store.append_decisions(records)
        for record in records:
            self.metrics.decisions.labels(record.label, str(record.needs_review).lower()).inc()
        return outputs

    def finalize_extractions(self, jobs: list[Job]) -> list[list[dict]]:
        """Decode each text's spans, commit one extraction row per text, return them with their ids."""
        engine, created = self.engine, utc_now()
        records, outputs = [], []
        for job in jobs:
            context: RequestContext = job.context
            found = engine.spans(context.texts, context.offsets, job.outputs)
            results = []
            for i, spans in enumerate(found):
                extraction_id = str(uuid.uuid4())
                records.append(
                    ExtractionRecord(
                        extraction_id=extraction_id,
                        **self.provenance(context, i, created),
                        spans=spans_json(spans),
                        truncated=context.truncated[i],
                    )
                )
                results.append(
                    {"spans": spans, "truncated": context.truncated[i], "extraction_id": extraction_id}
                )
            outputs.append(results)
        with self.metrics.audit_seconds.time():
            self.store.append_extractions(records)
        for result in (r for results in outputs for r in results):
            for span in result["spans"]:
                self.metrics.spans.labels(span["label"]).inc()
        return outputs


def _digests(texts: Sequence[str]) -> list[str]:
    return [hashlib.sha256(t.encode("utf-8")).hexdigest() for t in texts]


def _prepare(engine: Engine, texts: Sequence[str]) -> tuple[list[list[int]], list[bool], list[str]]:
    """Token ids, truncation flags and SHA-256 digests of the texts (on the tokenizer thread)."""
    ids, truncated = engine.tokenize(texts)
    return ids, truncated, _digests(texts)


def _prepare_spans(
    engine: Engine, texts: Sequence[str]
) -> tuple[list[list[int]], list[bool], list[str], list]:
    """Token ids, truncation flags, digests and character offsets of the texts (on the tokenizer thread)."""
    ids, offsets, truncated = engine.frame(texts)
    return ids, truncated, _digests(texts), offsets


async def _read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed ``limit`` bytes (before reading it all)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(
            413, f"the body is {declared} bytes; this server takes at most {limit} (--max-request-bytes)"
        )

    async def collect() -> bytes:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(
                    413, f"the body is over {limit} bytes, the most this server takes (--max-request-bytes)"
                )
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        return await asyncio.wait_for(collect(), timeout)
    except asyncio.TimeoutError:
        raise ApiError(408, f"the body did not arrive within {timeout:g} s") from None
    except ClientDisconnect:
        raise ClientGone() from None


def _parse(model: type[BaseModel], raw: bytes) -> Any:
    try:
        return model.model_validate_json(raw or b"null")
    except ValidationError as err:
        raise ApiError(422, describe_errors(err.errors(include_url=False))) from None


def _check_texts(texts: Sequence[str], settings: ServeSettings) -> None:
    if len(texts) > settings.max_texts_per_request:
        raise ApiError(
            413,
            f"{len(texts)} texts in one request; this server takes at most {settings.max_texts_per_request} "
            "(--max-texts-per-request): split the request",
        )
    if not texts:
        raise ApiError(422, "texts is empty; send at least one text")
    blank = [i for i, text in enumerate(texts) if not text.strip()]
    if blank:
        others = f" (and {len(blank) - 1} more)" if len(blank) > 1 else ""
        raise ApiError(
            422, f"texts[{blank[0]}] is empty or only whitespace{others}: there is nothing to score"
        )


async def _disconnected(request: Request) -> None:
    """Returns when the client goes away (the body is already read: the next message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _await_job(job: Job, request: Request, scheduler: BatchScheduler) -> Any:
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({job.future, gone}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:  # the server gave up on this request (drain timeout)
        scheduler.cancel(job)
        raise
    finally:
        gone.cancel()
    if not job.future.done() or job.future.cancelled():
        scheduler.cancel(job)
        raise ClientGone()
    error = job.future.exception()
    if isinstance(error, InferenceFailed):
        raise ApiError(500, f"{error}; nothing was recorded for this request")
    if isinstance(error, FinalizeFailed):
        raise ApiError(503, f"the audit trail could not record the decisions ({error}); none was returned")
    if error is not None:
        raise error
    return job.future.result()


def create_app(
    engine: Engine, settings: ServeSettings, store: AuditStore, keys: ApiKeys | None = None
) -> FastAPI:
    """The service for one loaded model. It owns ``store`` and closes it on shutdown."""
    from modernenc import __version__

    settings = settings.for_model(engine.device, engine.max_length)
    state = ServerState(engine=engine, settings=settings, store=store, keys=keys)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loop = asyncio.get_running_loop()
        state.tokenizer_thread = ThreadPoolExecutor(1, thread_name_prefix="modernenc-tokenizer")
        state.model_thread = ThreadPoolExecutor(1, thread_name_prefix="modernenc-model")
        state.audit_thread = ThreadPoolExecutor(1, thread_name_prefix="modernenc-audit")
        state.scheduler = BatchScheduler(
            score=engine.run,
            finalize=state.finalize,
            model_executor=state.model_thread,
            finalize_executor=state.audit_thread,
            max_batch_tokens=settings.max_batch_tokens,
            max_wait_s=settings.max_wait_ms / 1000,
            max_queue_texts=settings.max_queue_texts,
            batching=settings.batching,
            always_wait=settings.batch_wait == "always",
            metrics=state.metrics,
            on_failure=state.fail,
        )
        state.scheduler.start()

        async def warm_up() -> None:
            try:
                await loop.run_in_executor(state.model_thread, engine.warm_up)
            except Exception as err:
                logger.exception("the warm-up batch failed")
                state.fail(f"the warm-up batch failed: {type(err).__name__}: {err}")
                return
            state.ready = True

        warming = loop.create_task(warm_up())
        try:
            yield
        finally:
            state.draining = True
            await state.scheduler.close(settings.drain_timeout_s)
            await warming
            await state.in_audit_thread(store.close)
            for thread in (state.tokenizer_thread, state.model_thread, state.audit_thread):
                thread.shutdown(wait=True)

    app = FastAPI(
        title="modernenc serve",
        version=__version__,
        description=(
            "Decisions of a fine-tuned binary classifier with the threshold and review band chosen on "
            "validation (thresholds.json), or the spans a fine-tuned tagger finds, each recorded in a "
            "hash-chained audit trail before it is returned."
        ),
        lifespan=lifespan,
    )
    app.state.serve = state
    app.add_middleware(RequestMetricsMiddleware, metrics=state.metrics)
    bearer = Security(HTTPBearer(auto_error=False, description="a key from the server's --api-keys file"))

    # --- errors -----------------------------------------------------------------------------------------
    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError) -> JSONResponse:
        return error_response(err.status, err.message, err.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        return error_response(422, describe_errors(err.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        message = {
            404: f"no route {request.url.path}; see /docs",
            405: f"{request.method} is not allowed on {request.url.path}",
        }
        return error_response(err.status_code, message.get(err.status_code, str(err.detail)), err.headers)

    @app.exception_handler(ClientGone)
    async def client_gone(request: Request, err: ClientGone) -> Response:
        return Response(status_code=CLIENT_CLOSED)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, err: Exception) -> JSONResponse:
        logger.error("unexpected error on %s %s", request.method, request.url.path, exc_info=err)
        return error_response(500, f"internal error ({type(err).__name__}); the server log has the details")

    # --- authentication ---------------------------------------------------------------------------------
    async def caller(credentials: HTTPAuthorizationCredentials | None = bearer) -> str | None:
        """The API key's name (None when the server runs without keys); 401 for a missing or wrong key."""
        if state.keys is None:
            return None
        if credentials is None:
            raise ApiError(
                401,
                "this server needs an API key: send Authorization: Bearer <key>",
                {"WWW-Authenticate": "Bearer"},
            )
        name = state.keys.name_of(credentials.credentials)
        if name is None:
            raise ApiError(
                401, "the API key is not valid", {"WWW-Authenticate": 'Bearer error="invalid_token"'}
            )
        return name

    def running_scheduler() -> BatchScheduler:
        if state.fatal:
            raise ApiError(503, state.fatal)
        assert state.scheduler is not None
        return state.scheduler

    async def run_texts(
        request: Request, key: str | None, texts: list[str], policy: DecisionPolicy | None
    ) -> tuple[str, Any]:
        """Admit, tokenize, queue, run and record one request's texts: (request_id, results per text)."""
        scheduler = running_scheduler()
        try:
            scheduler.admit(len(texts))  # before tokenizing: a full queue costs nothing
        except QueueFull as full:
            raise ApiError(
                429,
                f"the queue is full ({settings.max_queue_texts} texts, --max-queue-texts); retry after "
                f"{full.retry_after} s",
                {"Retry-After": str(full.retry_after)},
            ) from None
        except Stopped:
            raise ApiError(503, "the server is shutting down", {"Retry-After": "1"}) from None
        prepare = _prepare if engine.task == "classify" else _prepare_spans
        try:
            ids, truncated, digests, *offsets = await asyncio.get_running_loop().run_in_executor(
                state.tokenizer_thread, prepare, engine, texts
            )
        except BaseException:
            scheduler.release(len(texts))
            raise
        request_id = uuid.uuid4().hex
        context = RequestContext(
            request_id, key, policy, texts, digests, truncated, offsets[0] if offsets else None
        )
        results = await _await_job(scheduler.submit(ids, context), request, scheduler)
        state.metrics.truncated.inc(sum(truncated))
        return request_id, results

    # --- probes and metadata ----------------------------------------------------------------------------
    @app.get("/health", tags=["probes"])
    async def health() -> dict:
        """200 while the process is alive."""
        return {"status": "ok"}

    @app.get("/ready", tags=["probes"], responses={503: {"model": ErrorResponse}})
    async def ready() -> Any:
        """200 once the model is loaded and a warm-up batch ran; 503 before that and while draining."""
        if state.fatal:
            return error_response(503, state.fatal)
        if state.draining:
            return error_response(503, "draining: the server is shutting down")
        if not state.ready:
            return error_response(503, "warming up: the model has not run its first batch yet")
        return {"status": "ready"}

    @app.get("/metrics", tags=["probes"], response_class=Response)
    async def metrics(key: str | None = Depends(caller)) -> Response:
        """Prometheus text format. Needs a key when the server has keys."""
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/info", tags=["model"])
    async def info(key: str | None = Depends(caller)) -> dict:
        """The model, its decision rule (none for a span tagger), the server's limits and version."""
        policy = engine.default_policy  # None for a span tagger: it makes no sentence decision
        return {
            "version": __version__,
            "model": {
                "task": engine.task,
                "digest": engine.digest,
                "dtype": engine.dtype,
                "device": engine.device,
                "max_length": engine.max_length,
                "positive_label": engine.positive_label,
                "label_names": engine.label_names,
                "thresholds": engine.thresholds,
                "threshold_name": policy.threshold_name if policy else None,
                "threshold": policy.threshold if policy else None,
                "threshold_source": policy.source if policy else None,
                "review_band": list(policy.review_band) if policy else None,
            },
            "limits": {
                "max_batch_tokens": settings.max_batch_tokens,
                "max_wait_ms": settings.max_wait_ms,
                "max_queue_texts": settings.max_queue_texts,
                "max_texts_per_request": settings.max_texts_per_request,
                "max_request_bytes": settings.max_request_bytes,
                "batching": settings.batching,
            },
            "audit": {"store_text": settings.audit_store_text},
        }

    # --- decisions --------------------------------------------------------------------------------------
    @app.post(
        "/v1/classify",
        tags=["model"],
        response_model=ClassifyResponse,
        responses=ERROR_RESPONSES,
        openapi_extra=_body_schema(ClassifyRequest),
    )
    async def classify(request: Request, response: Response, key: str | None = Depends(caller)) -> Any:
        """Probability, label and review flag per text, in input order; each decision is in the audit
        trail before the response is sent."""
        if engine.task != "classify":
            raise ApiError(404, "this server serves a span tagger; use /v1/extract")
        body: ClassifyRequest = _parse(
            ClassifyRequest, await _read_body(request, settings.max_request_bytes, settings.body_timeout_s)
        )
        _check_texts(body.texts, settings)
        policy = engine.policy(body.threshold)
        request_id, results = await run_texts(request, key, body.texts, policy)
        response.headers["X-Request-ID"] = request_id
        return {
            "request_id": request_id,
            "model": {
                "digest": engine.digest,
                "dtype": engine.dtype,
                "threshold_name": policy.threshold_name,
                "threshold": policy.threshold,
                "review_band": list(policy.review_band),
            },
            "results": results,
        }

    @app.post(
        "/v1/extract",
        tags=["model"],
        response_model=ExtractResponse,
        responses={**ERROR_RESPONSES, 404: {"model": ErrorResponse}},
        openapi_extra=_body_schema(ExtractRequest),
    )
    async def extract(request: Request, response: Response, key: str | None = Depends(caller)) -> Any:
        """Spans of each text (character offsets, label, score), in input order, for a span tagger; each
        text's spans are in the audit trail before the response is sent."""
        if engine.task != "extract":
            raise ApiError(
                404,
                "this server serves a sentence classifier; use /v1/classify (/v1/extract needs a span "
                "tagger)",
            )
        body: ExtractRequest = _parse(
            ExtractRequest, await _read_body(request, settings.max_request_bytes, settings.body_timeout_s)
        )
        _check_texts(body.texts, settings)
        request_id, results = await run_texts(request, key, body.texts, None)
        response.headers["X-Request-ID"] = request_id
        return {
            "request_id": request_id,
            "model": {"digest": engine.digest, "dtype": engine.dtype},
            "results": results,
        }

    # --- human review -----------------------------------------------------------------------------------
    @app.get("/v1/review", tags=["review"], response_model=PendingReviews, responses=ERROR_RESPONSES)
    async def pending_reviews(
        status: Literal["pending"] = Query(
            "pending", description="decisions flagged for review, not yet reviewed"
        ),
        limit: int = Query(100, ge=1, le=1000),
        key: str | None = Depends(caller),
    ) -> Any:
        """Decisions flagged ``needs_review`` that no one has reviewed yet, oldest first."""
        return {"decisions": await state.in_audit_thread(state.store.pending_reviews, limit)}

    @app.post(
        "/v1/review/{decision_id}",
        tags=["review"],
        status_code=201,
        response_model=Review,
        responses={**ERROR_RESPONSES, 404: {"model": ErrorResponse}},
        openapi_extra=_body_schema(ReviewRequest),
    )
    async def review(decision_id: str, request: Request, key: str | None = Depends(caller)) -> Any:
        """Append a reviewer's verdict to a decision. Reviews are never edited: a second is a new row."""
        body: ReviewRequest = _parse(
            ReviewRequest, await _read_body(request, settings.max_request_bytes, settings.body_timeout_s)
        )
        if not body.reviewer.strip():  # "who reviewed" is what the audit row exists to answer
            raise ApiError(422, "reviewer is empty or only whitespace: name who reviewed the decision")
        record = ReviewRecord(
            review_id=str(uuid.uuid4()),
            decision_id=decision_id,
            created_at=utc_now(),
            key_name=key,
            reviewer=body.reviewer,
            verdict=body.verdict,
            note=body.note,
        )
        try:
            await state.in_audit_thread(state.store.append_review, record)
        except UnknownDecision:
            raise ApiError(404, f"no decision {decision_id!r} in the audit trail") from None
        except Exception as err:
            logger.exception("recording a review failed")
            raise ApiError(503, f"the review could not be recorded ({type(err).__name__})") from None
        state.metrics.reviews.labels(body.verdict).inc()
        return asdict(record)

    return app
