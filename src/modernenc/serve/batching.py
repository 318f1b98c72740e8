"""Dynamic batching by tokens: texts from concurrent requests share packed batches.

A request becomes a ``Job`` of token-id sequences. The batcher (one asyncio task) builds each batch text
by text, up to ``max_batch_tokens`` real tokens (batches are packed: no padding, so a token budget is the
cost), waiting at most ``max_wait_s`` after the oldest waiting text arrived for company, and only while
company is likely: a request the server holds besides the waiting ones (being tokenized, in the model or
being recorded, whose client sends again once answered), or a last batch that held several requests
(clients overlap). A lone client's request runs at once, as with no batching (``always_wait`` restores
the full wait for every batch that is not full). While other jobs
wait, one job gets at most half of a batch on the first pass, so a large request cannot hold small ones
back for several batches; a second pass fills what is left, oldest first.

The model runs on one worker thread (``score``: one output per text, a probability or a text's tag
probabilities), never on the event loop; batch k+1 runs while batch k's
audit rows are committed on another thread (``finalize``). Commits are grouped: each takes every job
finished since the last one, so a slow disk means fewer, larger transactions rather than a growing backlog.
A job's future resolves only after ``finalize`` returned for it, which is where the server commits the
audit rows: a response never precedes its rows. A job whose client left is taken out of the queue
(``cancel``); if its texts were already in a running batch, their results are dropped and nothing of the
job is finalized.

If the batcher or the committer task itself dies (a bug outside the per-batch error handling), nothing
would ever answer again: every request not yet scored (all of them, if the committer died) fails at once
with ``InferenceFailed``, new ones are refused (``Stopped``), and ``on_failure`` says why, so the server can
turn unready and exit rather than hang.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)


class QueueFull(Exception):
    """No room for the job's texts; retry after ``retry_after`` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"queue full; retry after {retry_after} s")
        self.retry_after = retry_after


class Stopped(Exception):
    """The scheduler is shutting down and takes no new jobs."""


class InferenceFailed(RuntimeError):
    """The model raised on a batch this job was in."""


class FinalizeFailed(RuntimeError):
    """Recording the job's results (the audit commit) failed; no result may be returned."""


@dataclass(eq=False)
class Job:
    ids: Sequence[Sequence[int]]
    context: Any  # whatever finalize needs (the request's decision policy, caller, texts' digests)
    future: asyncio.Future
    enqueued_at: float  # loop.time()
    outputs: list[Any] = field(init=False)  # the model's output per text, in input order
    next_index: int = 0  # the next text to put into a batch
    done: int = 0  # texts scored
    cancelled: bool = False

    def __post_init__(self) -> None:
        self.outputs = [None] * len(self.ids)

    @property
    def waiting(self) -> int:
        return len(self.ids) - self.next_index


@dataclass
class BatchScheduler:
    score: Callable[[list[Sequence[int]]], Sequence[Any]]  # runs on model_executor; one output per text
    finalize: Callable[[list[Job]], list[Any]]  # runs on finalize_executor; one output per job
    model_executor: Executor
    finalize_executor: Executor
    max_batch_tokens: int
    max_wait_s: float
    max_queue_texts: int
    batching: bool = True  # False: one job's texts per batch (for comparisons)
    always_wait: bool = False  # True: every batch not yet full waits max_wait_s, company likely or not
    metrics: Any = None  # ServeMetrics, or None
    on_failure: Callable[[str], None] | None = None  # the batcher or committer died: why (on the loop)

    def __post_init__(self) -> None:
        self._jobs: deque[Job] = deque()  # jobs with texts waiting, in arrival order
        self._queued_texts = 0
        self._admitted = 0  # texts of requests admitted but still being tokenized
        self._queued_tokens = 0
        self._arrival = asyncio.Event()
        self._flush = False  # drain: stop waiting for company
        self._closing = False
        self._task: asyncio.Task | None = None
        self._finished: list[Job] = []  # scored, waiting for the next group commit
        self._finished_event = asyncio.Event()
        self._committer: asyncio.Task | None = None
        self._batcher_done = False
        self._texts_per_s: float | None = None  # smoothed model speed, for Retry-After
        self._unresolved: set[Job] = set()  # submitted jobs whose future is not done yet
        self._last_batch_jobs = 0  # requests the last batch held texts of: more than one, clients overlap
        self.failure: str | None = None  # why the batcher or the committer died, if one did

    # -----------------------------------------------------------------------------------------------------
    # what request handlers call (all on the event loop)

    @property
    def queued_texts(self) -> int:
        return self._queued_texts

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run(), name="modernenc-batcher")
        self._committer = loop.create_task(self._commit_loop(), name="modernenc-committer")
        for task in (self._task, self._committer):
            task.add_done_callback(self._on_task_done)

    def retry_after(self, extra_texts: int = 0) -> int:
        """Seconds until the queue has drained enough, from the measured speed: 1 to 60."""
        if not self._texts_per_s:
            return 1
        return int(min(60, max(1, math.ceil((self._queued_texts + extra_texts) / self._texts_per_s))))

    def admit(self, texts: int) -> None:
        """Reserve room for ``texts`` before the request is tokenized, or raise ``QueueFull`` / ``Stopped``.

        Requests being tokenized count against the queue too, so the texts held in memory stay within
        ``max_queue_texts`` however many requests arrive at once. ``submit`` uses the reservation;
        ``release`` returns it when the request fails first."""
        if self._closing or self.failure:
            raise Stopped()
        if self._queued_texts + self._admitted + texts > self.max_queue_texts:
            raise QueueFull(self.retry_after(texts))
        self._admitted += texts

    def release(self, texts: int) -> None:
        self._admitted -= texts

    def submit(self, ids: Sequence[Sequence[int]], context: Any) -> Job:
        """Queue an admitted request's token ids; its results come back in ``job.future``."""
        self._admitted -= len(ids)
        loop = asyncio.get_running_loop()
        job = Job(ids=ids, context=context, future=loop.create_future(), enqueued_at=loop.time())
        self._unresolved.add(job)
        job.future.add_done_callback(lambda _: self._unresolved.discard(job))  # result, error or cancel
        self._jobs.append(job)
        self._add_queued(len(ids), sum(len(s) for s in ids))
        self._arrival.set()
        return job

    def cancel(self, job: Job) -> None:
        """The client left: drop the job's waiting texts and whatever is still to come for it."""
        if job.cancelled or job.future.done():
            return
        job.cancelled = True
        if job.waiting:
            self._jobs.remove(job)
            tokens = sum(len(s) for s in job.ids[job.next_index :])
            if self.metrics is not None:
                self.metrics.cancelled.inc(job.waiting)
            self._add_queued(-job.waiting, -tokens)
            job.next_index = len(job.ids)
        job.future.cancel()

    def flush(self) -> None:
        """Drain mode (SIGTERM): batches stop waiting for company; jobs are still taken until ``close``."""
        self._flush = True
        self._arrival.set()

    async def close(self, timeout: float | None = None) -> None:
        """Take no new jobs, finish the queued ones and their commits, then stop."""
        self._closing = True
        self.flush()
        if self._task is not None and not self._task.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except asyncio.TimeoutError:
                logger.error(
                    "the queue did not drain within %s s; dropping %d texts", timeout, self._queued_texts
                )
                self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)  # a death is already reported
        self._batcher_done = True
        if self._committer is not None:
            self._finished_event.set()  # the committer ends once nothing is left to commit
            await asyncio.gather(self._committer, return_exceptions=True)

    def _on_task_done(self, task: asyncio.Task) -> None:
        """A batcher or committer that returned or was cancelled is shutting down; one that raised is dead."""
        if task.cancelled() or task.exception() is None or self.failure:
            return
        error = task.exception()
        logger.error("the %s task died; failing every waiting request", task.get_name(), exc_info=error)
        self.failure = f"the {task.get_name()} task died: {type(error).__name__}: {error}"
        self.flush()
        batcher_died = task is self._task
        for job in list(self._unresolved):
            if batcher_died and job.done == len(job.ids):
                continue  # scored: the committer still records it, then answers
            self.cancel_with(job, InferenceFailed(self.failure))
        if self.on_failure is not None:
            self.on_failure(self.failure)

    # -----------------------------------------------------------------------------------------------------
    # the batcher

    def _add_queued(self, texts: int, tokens: int) -> None:
        self._queued_texts += texts
        self._queued_tokens += tokens
        if self.metrics is not None:
            self.metrics.queue_texts.set(self._queued_texts)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._jobs:
                if self._closing:
                    return
                self._arrival.clear()
                await self._arrival.wait()
            await self._wait_for_company(loop)
            batch = []
            try:
                batch = self._take_batch()
                if batch:
                    await self._run_batch(loop, batch)
            except Exception as err:  # a bug here must not leave every later request waiting forever
                logger.exception("the batcher failed; failing the requests of its batch")
                for job in {job for job, _ in batch}:
                    self.cancel_with(job, InferenceFailed(f"batching failed: {type(err).__name__}: {err}"))

    def _company_may_come(self) -> bool:
        """True while more texts are likely soon: a request the server holds besides the waiting ones (being
        tokenized, or in the model or being recorded: an answered client sends again), or a last batch
        that held several requests. The second covers clients whose answers are on the wire: without it,
        at 8 closed-loop clients the first request back ran alone and the others queued behind it
        (serve_load: 414 against 508 texts/s). With one client, waiting only adds latency."""
        # Every queued job is unresolved (a job leaves the queue before its future is done).
        return self._admitted > 0 or len(self._unresolved) > len(self._jobs) or self._last_batch_jobs > 1

    async def _wait_for_company(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self.batching:
            return
        while self._jobs and not self._flush and self._queued_tokens < self.max_batch_tokens:
            if not self.always_wait and not self._company_may_come():
                return
            remaining = self._jobs[0].enqueued_at + self.max_wait_s - loop.time()
            if remaining <= 0:
                return
            self._arrival.clear()
            try:
                await asyncio.wait_for(self._arrival.wait(), remaining)
            except asyncio.TimeoutError:
                return

    def _take_batch(self) -> list[tuple[Job, int]]:
        """(job, text index) pairs for one batch, within the token budget."""
        budget = self.max_batch_tokens
        batch: list[tuple[Job, int]] = []
        tokens = 0

        def take(job: Job, cap: int) -> None:
            nonlocal tokens
            taken = 0
            while job.waiting:
                n = len(job.ids[job.next_index])
                # The first text of a batch always goes in (settings keep max_length within the budget).
                if batch and (tokens + n > budget or (taken and taken + n > cap)):
                    return
                batch.append((job, job.next_index))
                job.next_index += 1
                tokens += n
                taken += n

        if not self.batching:
            take(self._jobs[0], budget)
        else:
            if len(self._jobs) > 1:  # fair first pass: half a batch at most per job
                for job in self._jobs:
                    take(job, budget // 2)
            for job in self._jobs:
                take(job, budget)
        while self._jobs and not self._jobs[0].waiting:
            self._jobs.popleft()
        if any(not job.waiting for job in self._jobs):
            self._jobs = deque(job for job in self._jobs if job.waiting)
        self._add_queued(-len(batch), -tokens)
        return batch

    async def _run_batch(self, loop: asyncio.AbstractEventLoop, batch: list[tuple[Job, int]]) -> None:
        ids = [job.ids[i] for job, i in batch]
        self._last_batch_jobs = len({id(job) for job, _ in batch})
        started = loop.time()
        if self.metrics is not None:
            self.metrics.batch_tokens.observe(sum(len(s) for s in ids))
            self.metrics.batch_texts.observe(len(ids))
            for job, _ in batch:
                self.metrics.queue_seconds.observe(started - job.enqueued_at)
        clock = time.perf_counter()
        try:
            outputs = await loop.run_in_executor(self.model_executor, self.score, ids)
        except Exception as err:
            logger.exception("inference failed on a batch of %d texts", len(ids))
            for job in {job for job, _ in batch}:
                self.cancel_with(job, InferenceFailed(f"inference failed: {type(err).__name__}: {err}"))
            return
        seconds = time.perf_counter() - clock
        if self.metrics is not None:
            self.metrics.inference_seconds.observe(seconds)
            self.metrics.texts.inc(len(ids))
            self.metrics.tokens.inc(sum(len(s) for s in ids))
        if seconds > 0:
            speed = len(ids) / seconds
            self._texts_per_s = speed if self._texts_per_s is None else 0.8 * self._texts_per_s + 0.2 * speed
        completed = []
        for (job, i), output in zip(batch, outputs, strict=True):
            job.outputs[i] = output
            job.done += 1
            if job.done == len(job.ids) and not job.cancelled:
                completed.append(job)
        if completed:
            self._finished += completed
            self._finished_event.set()

    def cancel_with(self, job: Job, error: Exception) -> None:
        """Fail a job: drop its waiting texts and hand its handler ``error``."""
        if job.future.done():
            return
        if job.waiting:
            self._jobs.remove(job)
            self._add_queued(-job.waiting, -sum(len(s) for s in job.ids[job.next_index :]))
            job.next_index = len(job.ids)
        job.cancelled = True
        job.future.set_exception(error)

    async def _commit_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._finished:
                if self._batcher_done:
                    return
                self._finished_event.clear()
                await self._finished_event.wait()
            jobs, self._finished = self._finished, []
            jobs = [job for job in jobs if not job.cancelled]  # their clients left: nothing to record
            if jobs:
                await self._finalize(loop, jobs)

    async def _finalize(self, loop: asyncio.AbstractEventLoop, jobs: list[Job]) -> None:
        try:
            outputs = await loop.run_in_executor(self.finalize_executor, self.finalize, jobs)
        except Exception as err:
            logger.exception("recording %d finished requests failed; none of them is answered", len(jobs))
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(FinalizeFailed(f"{type(err).__name__}: {err}"))
            return
        for job, output in zip(jobs, outputs, strict=True):
            if not job.future.done():  # a client that left meanwhile gets nothing; its rows are kept
                job.future.set_result(output)
