"""The batch scheduler on its own: every text scored once, in its request's order, within the token budget;
small requests are not held back by a large one; a client that leaves takes its texts out of the queue.

The "model" scores a sequence by a function of its ids, so a text placed in the wrong slot shows."""

from __future__ import annotations

import asyncio
import random
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from modernenc.serve.batching import BatchScheduler, InferenceFailed, QueueFull, Stopped


def fake_score(ids):
    return np.array([sum(seq) * 1000 + len(seq) for seq in ids], dtype=np.float64)


class Recorder:
    """Runs the scheduler with fake_score, recording each batch's (job, text) pairs and each commit."""

    def __init__(self, **settings):
        self.batches: list[list[tuple]] = []
        self.finalized: list = []
        self.threads = ThreadPoolExecutor(1), ThreadPoolExecutor(1)
        defaults = dict(max_batch_tokens=100, max_wait_s=0.0, max_queue_texts=10_000)
        self.settings = {**defaults, **settings}

    def score(self, ids):
        self.batches.append([tuple(seq) for seq in ids])
        return fake_score(ids)

    def finalize(self, jobs):
        self.finalized += jobs
        return [list(job.outputs) for job in jobs]

    def scheduler(self) -> BatchScheduler:
        scheduler = BatchScheduler(self.score, self.finalize, *self.threads, **self.settings)
        scheduler.start()
        return scheduler

    def submit(self, scheduler, ids):
        scheduler.admit(len(ids))
        return scheduler.submit(ids, context=None)


def texts(rng, count, low=1, high=30):
    """Distinct token sequences, so each can be traced to its slot."""
    return [[rng.randrange(1, 10_000) for _ in range(rng.randint(low, high))] for _ in range(count)]


def test_every_text_is_scored_once_in_its_requests_order_within_the_budget():
    rng = random.Random(0)
    recorder = Recorder(max_batch_tokens=100, max_wait_s=0.002)
    requests = [texts(rng, rng.randint(1, 20)) for _ in range(60)]
    leaving = set(rng.sample(range(60), 10))
    left_unscored = []  # jobs whose client left before all their texts were scored: never committed

    async def main():
        scheduler = recorder.scheduler()

        async def client(i, ids):
            await asyncio.sleep(rng.random() * 0.05)
            job = recorder.submit(scheduler, ids)
            if i in leaving:
                await asyncio.sleep(rng.random() * 0.01)
                if job.done < len(job.ids):
                    left_unscored.append(job)
                scheduler.cancel(job)
                return None
            return await job.future

        results = await asyncio.gather(*(client(i, ids) for i, ids in enumerate(requests)))
        await scheduler.close()
        return results

    results = asyncio.run(main())
    for i, (ids, result) in enumerate(zip(requests, results, strict=True)):
        if i not in leaving:
            np.testing.assert_array_equal(result, fake_score(ids))
    scored = [seq for batch in recorder.batches for seq in batch]
    answered = [tuple(seq) for i, ids in enumerate(requests) if i not in leaving for seq in ids]
    assert len(set(scored)) == len(scored)  # nothing twice
    assert set(answered) <= set(scored)
    assert all(sum(map(len, batch)) <= 100 for batch in recorder.batches)
    assert len(recorder.batches) < sum(map(len, requests)) // 2  # texts of many requests share batches
    # A client that left before its texts were scored gets no audit rows. (One that leaves while its
    # rows are being committed gets them written, and no answer: recorded, never answered unrecorded.)
    assert left_unscored and not set(left_unscored) & set(recorder.finalized)


def test_a_large_request_does_not_hold_small_ones_back():
    big = [[1] * 10 for _ in range(40)]  # 400 tokens: four full batches on its own
    small = [[2] * 10, [3] * 10]
    recorder = Recorder(max_batch_tokens=100)

    async def main():
        scheduler = recorder.scheduler()
        jobs = [recorder.submit(scheduler, big), recorder.submit(scheduler, small)]  # queued together
        await asyncio.gather(*(job.future for job in jobs))
        await scheduler.close()

    asyncio.run(main())
    first = recorder.batches[0]
    assert set(map(tuple, small)) <= set(first)  # first batch, though it came second
    assert sum(map(len, first)) == 100  # and the batch is still full


def test_without_batching_each_batch_holds_one_request():
    rng = random.Random(1)
    recorder = Recorder(batching=False, max_batch_tokens=1000)
    requests = [texts(rng, 3, 5, 5) for _ in range(5)]

    async def main():
        scheduler = recorder.scheduler()
        jobs = [recorder.submit(scheduler, ids) for ids in requests]
        await asyncio.gather(*(job.future for job in jobs))
        await scheduler.close()

    asyncio.run(main())
    assert recorder.batches == [[tuple(seq) for seq in ids] for ids in requests]


def test_a_batch_waits_for_company_up_to_max_wait_while_a_request_is_on_its_way():
    recorder = Recorder(max_wait_s=1.0, max_batch_tokens=1000)

    async def main():
        scheduler = recorder.scheduler()
        scheduler.admit(1)  # the second request is being tokenized
        first = recorder.submit(scheduler, [[1, 2, 3]])
        await asyncio.sleep(0.05)
        second = scheduler.submit([[4, 5]], context=None)
        await asyncio.gather(first.future, second.future)
        await scheduler.close()

    asyncio.run(main())
    assert recorder.batches == [[(1, 2, 3), (4, 5)]]


def test_a_lone_request_runs_at_once_but_one_arriving_while_others_are_served_waits():
    """Waiting helps only if company can come: from a request being tokenized, or from a client whose
    request is in the model or being recorded. One client alone never meets itself."""
    recorder = Recorder(max_wait_s=0.5, max_batch_tokens=1000)
    release = asyncio.Event()

    async def main():
        loop = asyncio.get_running_loop()
        scheduler = recorder.scheduler()
        start = loop.time()
        await recorder.submit(scheduler, [[1, 2, 3]]).future
        alone = loop.time() - start
        # Now hold a request in its commit: a job arriving meanwhile waits for company (max_wait).
        finalize = scheduler.finalize

        def slow_finalize(jobs):
            asyncio.run_coroutine_threadsafe(release.wait(), loop).result()
            return finalize(jobs)

        scheduler.finalize = slow_finalize
        held = recorder.submit(scheduler, [[4]])
        await asyncio.sleep(0.05)  # in its commit now
        start = loop.time()
        late = recorder.submit(scheduler, [[5, 6]])
        await asyncio.sleep(0.2)
        still_waiting = not late.future.done() and len(recorder.batches) == 2
        release.set()
        await asyncio.gather(held.future, late.future)
        waited = loop.time() - start
        await scheduler.close()
        return alone, still_waiting, waited

    alone, still_waiting, waited = asyncio.run(main())
    assert alone < 0.25  # max_wait is 0.5 s: it did not wait
    assert still_waiting and waited >= 0.45
    assert recorder.batches == [[(1, 2, 3)], [(4,)], [(5, 6)]]


def test_after_a_batch_of_several_requests_a_lone_one_waits_for_company():
    """Overlapping clients whose answers are on their way back are not held by the server; a last batch
    that held several requests says they exist, so the next request waits for them."""
    recorder = Recorder(max_wait_s=0.3, max_batch_tokens=1000)

    async def main():
        loop = asyncio.get_running_loop()
        scheduler = recorder.scheduler()
        scheduler.admit(1)  # a second request on its way: the first waits and they share a batch
        first = recorder.submit(scheduler, [[1]])
        second = scheduler.submit([[2]], context=None)
        await asyncio.gather(first.future, second.future)
        start = loop.time()
        await recorder.submit(scheduler, [[3]]).future
        waited = loop.time() - start
        await scheduler.close()
        return waited

    waited = asyncio.run(main())
    assert recorder.batches == [[(1,), (2,)], [(3,)]]
    assert waited >= 0.25


def test_room_is_reserved_at_admission_and_returned_on_release_or_cancel():
    recorder = Recorder(max_queue_texts=5, max_wait_s=10.0, max_batch_tokens=1000)

    async def main():
        scheduler = recorder.scheduler()
        scheduler.admit(3)  # a request being tokenized holds its room
        with pytest.raises(QueueFull) as full:
            scheduler.admit(3)
        assert full.value.retry_after >= 1
        scheduler.release(3)
        job = recorder.submit(scheduler, [[1], [2], [3], [4]])
        assert scheduler.queued_texts == 4
        with pytest.raises(QueueFull):
            scheduler.admit(2)
        scheduler.cancel(job)
        assert scheduler.queued_texts == 0 and job.future.cancelled()
        scheduler.admit(5)
        scheduler.release(5)
        await scheduler.close()

    asyncio.run(main())
    assert recorder.batches == []


@pytest.mark.parametrize("task", ["batcher", "committer"])
def test_a_dead_task_fails_what_waits_refuses_new_jobs_and_says_why(task):
    """A bug that kills the batcher or the committer must not leave requests waiting forever."""
    failures: list[str] = []
    recorder = Recorder(max_wait_s=10.0, on_failure=failures.append)

    class Broken(BatchScheduler):
        async def _wait_for_company(self, loop):  # runs once a job waits, outside the per-batch handling
            if task == "batcher":
                raise RuntimeError("a bug in the batcher")
            await super()._wait_for_company(loop)

        async def _commit_loop(self):
            if task == "committer":
                await self._finished_event.wait()
                raise RuntimeError("a bug in the committer")
            await super()._commit_loop()

    async def main():
        scheduler = Broken(recorder.score, recorder.finalize, *recorder.threads, **recorder.settings)
        scheduler.start()
        jobs = [recorder.submit(scheduler, [[1, 2], [3]]), recorder.submit(scheduler, [[4]])]
        done, _ = await asyncio.wait([job.future for job in jobs], timeout=10)
        assert len(done) == 2  # none left waiting
        for job in jobs:
            error = job.future.exception()
            assert isinstance(error, InferenceFailed) and f"a bug in the {task}" in str(error)
        assert failures == [scheduler.failure] and f"modernenc-{task} task died" in failures[0]
        with pytest.raises(Stopped):
            scheduler.admit(1)
        await asyncio.wait_for(scheduler.close(), 10)  # returns, without raising the task's error

    asyncio.run(main())
    assert recorder.finalized == []
