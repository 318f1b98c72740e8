"""Load test of `modernenc serve` over loopback with a real async HTTP client (httpx or aiohttp), beside
the baselines, in one run.

    python benchmarks/serve_load.py --model checkpoints/quickstart-finetune-ade/best-hf --out serve-load.json
    python benchmarks/serve_load.py --quick            # a tiny random model and seconds per stage: a check

Stages, each against fresh server processes on free loopback ports:
1. offline `modernenc predict` on the same texts and dtype (its own examples/s: tokenizing + inference;
   the median of --predict-runs runs);
2. closed loop at each --clients level: every client sends requests of 1-8 ADE test sentences back to back
   for --seconds; texts/s and p50/p95/p99 latency, for `modernenc serve` (batching across requests),
   the same server with --no-batching (one request per batch), and a minimal FastAPI app that calls
   `transformers.pipeline("text-classification")` per request; then --paired-rounds rounds of offline
   predict and --seconds at 32 clients in turns on one server, for a serve / predict ratio that the
   host's drifting speed cannot skew;
3. overload: open loop at --overload-factor x the best measured throughput for --overload-seconds: only
   200 and 429 may come back, the server's memory is sampled, and the decisions answered with 200 must
   equal the new audit rows;
4. kill: SIGKILL mid-load, restart on the same audit database, then `PRAGMA integrity_check`,
   `modernenc audit verify`, and every decision answered with 200 must be in the trail.

The load generator shares the machine's cores with the server: run it on a quiet host and compare ratios
measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

KEY = "load-test-key-8f14e45fceea167a"
TARGETS = (
    "at 32 clients, serve >= 0.9x offline predict (same dtype)",
    "serve >= 3x the pipeline app (quickstart model), >= 5x (base shape)",
    "zero lost decisions in the overload and kill stages",
    "p99 at 8 clients < 1 s (quickstart model)",
)


# ---------------------------------------------------------------------------------------------------------
# inputs


def ade_test_texts(path: str | None, limit: int | None) -> list[str]:
    """Texts of a prepared split (JSONL with "text"), else the published ADE test split from the corpus."""
    if path:
        texts = [
            json.loads(line)["text"] for line in Path(path).read_text(encoding="utf-8").splitlines() if line
        ]
    else:
        from modernenc.pv.ade_data import load_ade_sentences, make_splits
        from modernenc.pv.bundled_data import shared_data_dir

        positives, negatives = load_ade_sentences(shared_data_dir() / "ade_corpus_v2")
        texts = [row["text"] for row in make_splits(positives, negatives)["test"]]
    return texts[:limit] if limit else texts


def build_tiny_model(folder: Path) -> Path:
    """A random `tiny` classifier with the shared tokenizer and a thresholds.json: for --quick only."""
    import torch

    from modernenc.model import ModernEncoderConfig, ModernEncoderForSequenceClassification
    from modernenc.pv.bundled_data import modernbert_tokenizer_dir
    from modernenc.tasks.decisions import write_thresholds

    torch.manual_seed(0)
    config = ModernEncoderConfig.from_preset(
        "tiny", id2label={0: "no_ade", 1: "ade"}, max_position_embeddings=512
    )
    ModernEncoderForSequenceClassification(config).save_pretrained(
        folder, tokenizer_path=modernbert_tokenizer_dir()
    )
    write_thresholds(folder, {"default": 0.5, "target_recall": 0.3}, chosen="target_recall", max_length=512)
    return folder


# ---------------------------------------------------------------------------------------------------------
# processes


class Process:
    """A server subprocess whose stderr is collected; ``url`` comes from the line matching ``ready_line``."""

    def __init__(self, argv: list[str], ready_line: str, timeout: float = 300) -> None:
        env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
        self.popen = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env=env)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not (found := [line for line in self.lines if re.search(ready_line, line)]):
            if self.popen.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"{' '.join(argv)} did not start:\n{''.join(self.lines[-20:])}")
            time.sleep(0.05)
        self.url = re.search(r"(http://\S+)", found[0]).group(1)

    def _read(self) -> None:
        for line in self.popen.stderr:
            self.lines.append(line)

    def wait_ready(self, path: str, timeout: float = 300) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}{path}", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.url}{path} was not ready within {timeout} s")

    def rss_mb(self) -> float | None:
        try:
            status = Path(f"/proc/{self.popen.pid}/status").read_text()
        except OSError:
            return None
        return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024

    def terminate(self, timeout: float = 120) -> int:
        self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(timeout=timeout)

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()


def start_serve(model: str, dtype: str, db: Path, keys: Path, *extra: str) -> Process:
    argv = [sys.executable, "-m", "modernenc", "serve", model, "--port", "0", "--dtype", dtype]
    argv += ["--audit-db", str(db), "--api-keys", str(keys), *extra]
    server = Process(argv, r"modernenc serve: http://")
    server.wait_ready("/ready")
    return server


def start_pipeline_app(model: str) -> Process:
    server = Process([sys.executable, __file__, "--pipeline-app", model], r"pipeline app: http://")
    server.wait_ready("/health")
    return server


def pipeline_app(model: str) -> None:
    """The baseline a user writes in ten lines: FastAPI calling transformers' pipeline per request."""
    import uvicorn
    from fastapi import FastAPI
    from transformers import pipeline

    rules = Path(model) / "thresholds.json"  # without one, 0.5, as serve and predict decide
    rule = json.loads(rules.read_text()) if rules.is_file() else {"thresholds": {"default": 0.5}}
    threshold = rule["thresholds"][rule.get("chosen", "default")]
    classify = pipeline("text-classification", model=model, top_k=None, device=-1)
    positive = classify.model.config.id2label[rule.get("positive_label", 1)]
    app = FastAPI()

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.post("/v1/classify")
    def predict(body: dict) -> dict:  # a plain `def`: FastAPI runs it in its thread pool
        scores = classify(body["texts"], truncation=True)
        probabilities = [next(s["score"] for s in row if s["label"] == positive) for row in scores]
        return {"results": [{"probability": p, "label": int(p >= threshold)} for p in probabilities]}

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    host, port = sock.getsockname()
    print(f"pipeline app: http://{host}:{port}", file=sys.stderr, flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])


def offline_predict(model: str, dtype: str, texts: list[str], work: Path) -> dict:
    """`modernenc predict` on the texts: its reported examples/s (tokenizing and inference) and wall time."""
    source = work / "texts.jsonl"
    source.write_text(
        "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8"
    )
    argv = [
        sys.executable,
        "-m",
        "modernenc",
        "predict",
        model,
        str(source),
        "--out",
        str(work / "pred.jsonl"),
    ]
    start = time.perf_counter()
    done = subprocess.run([*argv, "--dtype", dtype, "--force"], capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    rate = float(re.search(r"\(([\d,.]+) examples/s\)", done.stdout).group(1).replace(",", ""))
    return {"texts": len(texts), "texts_per_s": rate, "process_seconds": round(wall, 2)}


# ---------------------------------------------------------------------------------------------------------
# load


def _percentiles(latencies: list[float]) -> dict:
    import numpy as np

    if not latencies:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None}
    p50, p95, p99 = np.percentile(np.asarray(latencies) * 1000, [50, 95, 99])
    return {"p50_ms": round(p50, 1), "p95_ms": round(p95, 1), "p99_ms": round(p99, 1)}


async def _httpx_poster(url: str, connections: int):
    """A `post(texts) -> (status, body)` over one pooled httpx.AsyncClient, as an async context."""
    import httpx

    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=300, limits=limits
    ) as http:

        async def post(texts: list[str]) -> tuple[int, bytes]:
            response = await http.post("/v1/classify", json={"texts": texts})
            return response.status_code, response.content

        yield post


async def _aiohttp_poster(url: str, connections: int):
    """The same over aiohttp, whose C-accelerated HTTP/1.1 client spends about a tenth of httpx's CPU per
    request: on a 2-core host the load generator then takes less from the server it measures."""
    try:
        import aiohttp
    except ImportError:
        raise SystemExit("error: --client aiohttp needs aiohttp: pip install aiohttp") from None

    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=300)
    headers = {"Authorization": f"Bearer {KEY}"}
    async with aiohttp.ClientSession(url, connector=connector, headers=headers, timeout=timeout) as http:

        async def post(texts: list[str]) -> tuple[int, bytes]:
            async with http.post("/v1/classify", json={"texts": texts}) as response:
                return response.status, await response.read()

        yield post


# The closed loop's HTTP clients, by --client name. Both are real HTTP/1.1 clients with keep-alive pools.
CLIENTS = {
    "httpx": contextlib.asynccontextmanager(_httpx_poster),
    "aiohttp": contextlib.asynccontextmanager(_aiohttp_poster),
}


async def closed_loop(
    url: str, texts: list[str], clients: int, seconds: float, max_requests: int, client: str = "httpx"
) -> dict:
    """``clients`` clients, each sending its next request when the last one is answered.

    ``client_cpu_share`` is the load generator's own CPU time over the stage's wall time, in cores: what
    it took from the server on a shared host."""
    latencies: list[float] = []
    statuses: Counter = Counter()
    done_texts = 0
    async with CLIENTS[client](url, clients + 4) as post:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds

        async def one_client(seed: int) -> None:
            nonlocal done_texts
            rng = random.Random(seed)
            for _ in range(max_requests):
                if loop.time() > deadline:
                    return
                batch = rng.sample(texts, rng.randint(1, 8))
                start = time.perf_counter()
                status, _ = await post(batch)
                statuses[status] += 1
                if status == 200:
                    latencies.append(time.perf_counter() - start)
                    done_texts += len(batch)

        start, cpu_start = time.perf_counter(), time.process_time()
        await asyncio.gather(*(one_client(seed) for seed in range(clients)))
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return {
        "clients": clients,
        "requests": sum(statuses.values()),
        "texts": done_texts,
        "seconds": round(elapsed, 2),
        "texts_per_s": round(done_texts / elapsed, 1),
        **_percentiles(latencies),
        "statuses": dict(statuses),
        "client": client,
        "client_cpu_share": round(cpu / elapsed, 3),
    }


def sweep(name: str, server: Process, texts: list[str], args: argparse.Namespace) -> list[dict]:
    asyncio.run(closed_loop(server.url, texts, 4, 2, 5, args.client))  # warm connections and caches
    rows = []
    for clients in args.clients:
        load = closed_loop(server.url, texts, clients, args.seconds, args.max_requests, args.client)
        row = {"variant": name, **asyncio.run(load)}
        row["rss_mb"] = server.rss_mb()
        print(format_row(row), flush=True)
        rows.append(row)
    return rows


def paired_ratio(model: str, texts: list[str], work: Path, keys: Path, args: argparse.Namespace) -> dict:
    """serve at 32 clients over offline predict, measured in turns (predict, then --seconds of load, per
    round) on one server: the host's speed drifts by minutes, and each round's ratio sees one speed."""
    server = start_serve(model, args.dtype, work / "paired.sqlite", keys, *args.serve_arg)
    rounds = []
    try:
        asyncio.run(closed_loop(server.url, texts, 4, 2, 5, args.client))  # warm up
        for _ in range(args.paired_rounds):
            predict = offline_predict(model, args.dtype, texts, work)["texts_per_s"]
            load = closed_loop(server.url, texts, 32, args.seconds, args.max_requests, args.client)
            serve = asyncio.run(load)["texts_per_s"]
            rounds.append({"predict": predict, "serve": serve, "ratio": round(serve / predict, 3)})
            print(f"paired round: {rounds[-1]}", flush=True)
    finally:
        server.terminate()
    return {"rounds": rounds, "median_ratio": statistics.median(r["ratio"] for r in rounds)}


def audit_count(db: Path) -> int:
    with sqlite3.connect(db) as connection:
        return connection.execute("SELECT count(*) FROM decisions").fetchone()[0]


async def open_loop(
    server: Process, texts: list[str], texts_per_s: float, seconds: float, connections: int
) -> dict:
    """Requests launched on a fixed schedule whatever the answers: offered load, not a closed loop.

    At most ``connections`` requests are in flight; a request due while all are busy is counted as
    ``client_skipped`` and not sent. (Unbounded, httpx's pool spends the client's core on thousands of
    sockets and the server sits idle: the client, not the server, would be what is measured.)"""
    import httpx

    request_rate = texts_per_s / 4.5  # requests carry 1-8 texts: 4.5 on average
    statuses: Counter = Counter()
    answered = 0
    skipped = 0
    errors: Counter = Counter()
    rss: list[float] = []
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=300, limits=limits
    ) as http:
        loop = asyncio.get_running_loop()
        rng = random.Random(0)

        async def one(batch: list[str]) -> None:
            nonlocal answered
            try:
                response = await http.post("/v1/classify", json={"texts": batch})
            except httpx.HTTPError as err:
                errors[type(err).__name__] += 1
                return
            statuses[response.status_code] += 1
            if response.status_code == 200:
                answered += len(response.json()["results"])

        async def sample_memory() -> None:
            while True:
                if (value := server.rss_mb()) is not None:
                    rss.append(value)
                await asyncio.sleep(0.5)

        sampler = loop.create_task(sample_memory())
        tasks = set()
        start = loop.time()
        next_at = start
        while loop.time() < start + seconds:
            while next_at <= loop.time():
                batch = rng.sample(texts, rng.randint(1, 8))
                next_at += 1 / request_rate
                if len(tasks) >= connections:
                    skipped += 1
                    continue
                task = loop.create_task(one(batch))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            await asyncio.sleep(max(0.0, next_at - loop.time()))
        await asyncio.gather(*tasks)
        sampler.cancel()
    return {
        "offered_texts_per_s": round(texts_per_s, 1),
        "seconds": seconds,
        "statuses": dict(statuses),
        "client_errors": dict(errors),
        "client_skipped": skipped,
        "connections": connections,
        "decisions_answered": answered,
        "rss_mb_first": round(rss[0], 1) if rss else None,
        "rss_mb_max": round(max(rss), 1) if rss else None,
        "rss_mb_last": round(rss[-1], 1) if rss else None,
    }


async def load_until_killed(server: Process, texts: list[str], clients: int, kill_after: float) -> set[str]:
    """Closed-loop load; SIGKILL the server after ``kill_after`` s; the decision ids answered with 200."""
    import httpx

    answered: set[str] = set()
    async with httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60
    ) as http:
        loop = asyncio.get_running_loop()

        async def client(seed: int) -> None:
            rng = random.Random(seed)
            while True:
                try:
                    response = await http.post(
                        "/v1/classify", json={"texts": rng.sample(texts, rng.randint(1, 8))}
                    )
                except httpx.HTTPError:
                    return  # killed
                if response.status_code == 200:
                    answered.update(r["decision_id"] for r in response.json()["results"])

        tasks = [loop.create_task(client(seed)) for seed in range(clients)]
        await asyncio.sleep(kill_after)
        server.popen.kill()  # SIGKILL, mid-load
        await asyncio.gather(*tasks)
    return answered


# ---------------------------------------------------------------------------------------------------------
# the run


def format_row(row: dict) -> str:
    return (
        f"| {row['variant']} | {row['clients']} | {row['texts_per_s']:,.1f} | {row['p50_ms']} "
        f"| {row['p95_ms']} | {row['p99_ms']} | {row['requests']} | {row['statuses']} "
        f"| {row['client_cpu_share']} |"
    )


def run(args: argparse.Namespace) -> dict:
    work = Path(tempfile.mkdtemp(prefix="serve-load-"))
    keys = work / "keys.txt"
    keys.write_text(f"load:{KEY}\n")
    model = args.model or str(build_tiny_model(work / "tiny-model"))
    texts = ade_test_texts(args.texts, args.limit_texts)
    print(f"{len(texts)} texts; model {model}; dtype {args.dtype}; work folder {work}", flush=True)
    results: dict = {"model": model, "dtype": args.dtype, "texts": len(texts), "targets": TARGETS}

    # predict scores the texts in ~3 s, so one run swings with the host; serve's levels last --seconds.
    runs = [offline_predict(model, args.dtype, texts, work) for _ in range(args.predict_runs)]
    results["predict"] = {
        **runs[0],
        "texts_per_s": statistics.median(r["texts_per_s"] for r in runs),
        "runs_texts_per_s": [r["texts_per_s"] for r in runs],
    }
    print(f"offline predict (median of {len(runs)} runs): {results['predict']}", flush=True)

    print(f"closed loop over {args.client}; the last column is the load generator's own CPU, in cores")
    print("| variant | clients | texts/s | p50 ms | p95 ms | p99 ms | requests | statuses | client CPU |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows = []
    variants = {"serve": list(args.serve_arg)}
    if not args.skip_no_batching:
        variants["serve --no-batching"] = ["--no-batching", *args.serve_arg]
    for name, extra in variants.items() if args.capacity is None else ():
        server = start_serve(model, args.dtype, work / f"{name.replace(' ', '')}.sqlite", keys, *extra)
        try:
            rows += sweep(name, server, texts, args)
        finally:
            server.terminate()
    if not args.skip_pipeline and args.capacity is None:
        server = start_pipeline_app(model)
        try:
            rows += sweep("pipeline app (fp32)", server, texts, args)
        finally:
            server.kill()
    results["sweep"] = rows
    at = {r["variant"]: r for r in rows if r["clients"] == 32}
    if "serve" in at:
        results["ratios_at_32_clients"] = {
            "serve / predict": round(at["serve"]["texts_per_s"] / results["predict"]["texts_per_s"], 2),
            **(
                {
                    "serve / pipeline app": round(
                        at["serve"]["texts_per_s"] / at["pipeline app (fp32)"]["texts_per_s"], 2
                    )
                }
                if "pipeline app (fp32)" in at
                else {}
            ),
        }
        if args.paired_rounds and args.capacity is None:
            results["paired_at_32_clients"] = paired_ratio(model, texts, work, keys, args)
            median = results["paired_at_32_clients"]["median_ratio"]
            results["ratios_at_32_clients"]["serve / predict, paired rounds (median)"] = median
        print(f"ratios at 32 clients: {results['ratios_at_32_clients']}")
    if args.skip_faults:
        return results

    # Overload and kill, on one audit database.
    db = work / "overload.sqlite"
    capacity = args.capacity or max(r["texts_per_s"] for r in rows if r["variant"] == "serve")
    queue = [
        "--max-queue-texts",
        str(args.max_queue_texts),
        "--max-texts-per-request",
        str(min(256, args.max_queue_texts)),
    ]
    server = start_serve(model, args.dtype, db, keys, *queue, *args.serve_arg)
    try:
        before = audit_count(db)
        overload = asyncio.run(
            open_loop(server, texts, args.overload_factor * capacity, args.overload_seconds, args.connections)
        )
        overload["new_audit_rows"] = audit_count(db) - before
        overload["only_200_and_429"] = (
            set(overload["statuses"]) <= {200, 429} and not overload["client_errors"]
        )
        overload["no_lost_decisions"] = overload["new_audit_rows"] == overload["decisions_answered"]
        results["overload"] = overload
        print(f"overload: {overload}", flush=True)
        answered = asyncio.run(load_until_killed(server, texts, 32, args.kill_after))
    finally:
        server.kill()
    restarted = start_serve(model, args.dtype, db, keys)  # the same trail, after the crash
    exit_code = restarted.terminate()
    with sqlite3.connect(db) as connection:
        integrity = connection.execute("PRAGMA integrity_check").fetchall()
        stored = {row[0] for row in connection.execute("SELECT decision_id FROM decisions")}
    verify = subprocess.run(
        [sys.executable, "-m", "modernenc", "audit", "verify", str(db)], capture_output=True, text=True
    )
    results["kill"] = {
        "decisions_answered_before_kill": len(answered),
        "missing_from_trail": len(answered - stored),
        "integrity_check": integrity[0][0] if len(integrity) == 1 else integrity,
        "audit_verify_exit_code": verify.returncode,
        "restart_then_sigterm_exit_code": exit_code,
    }
    print(f"kill: {results['kill']}", flush=True)
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--model", default=None, help="fine-tuned folder (default with --quick: a tiny random one)"
    )
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "int8"], help="(default: %(default)s)")
    p.add_argument("--texts", default=None, help="JSONL with a text field (default: the ADE test split)")
    p.add_argument("--limit-texts", type=int, default=None, help="use the first N texts only")
    p.add_argument(
        "--predict-runs", type=int, default=3, help="offline predict runs; the median counts (default: 3)"
    )
    p.add_argument(
        "--paired-rounds",
        type=int,
        default=3,
        help="rounds of (offline predict, then --seconds at 32 clients) on one server, whose median ratio "
        "drift cannot skew; 0 skips them (default: %(default)s)",
    )
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32, 128], help="concurrency levels")
    p.add_argument(
        "--client",
        choices=sorted(CLIENTS),
        default="httpx",
        help="the closed loop's HTTP client (default: %(default)s; aiohttp takes far less CPU from the "
        "server on a small host; the overload and kill stages always use httpx)",
    )
    p.add_argument("--seconds", type=float, default=30, help="per level and variant (default: %(default)s)")
    p.add_argument(
        "--max-requests", type=int, default=1000, help="per client and level (default: %(default)s)"
    )
    p.add_argument(
        "--max-queue-texts",
        type=int,
        default=512,
        help="the overloaded server's --max-queue-texts: below what --connections requests hold (4.5 texts "
        "each), so the overload reaches it (default: %(default)s)",
    )
    p.add_argument("--connections", type=int, default=256, help="requests in flight at most in the overload")
    p.add_argument(
        "--capacity",
        type=float,
        default=None,
        help="texts/s for the overload's 2x; skips the sweep (default: measured by the sweep)",
    )
    p.add_argument("--overload-factor", type=float, default=2.0, help="x the measured capacity (default: 2)")
    p.add_argument("--overload-seconds", type=float, default=60, help="(default: %(default)s)")
    p.add_argument(
        "--kill-after", type=float, default=10, help="seconds of load before SIGKILL (default: 10)"
    )
    p.add_argument("--skip-pipeline", action="store_true", help="leave out the transformers pipeline app")
    p.add_argument("--skip-no-batching", action="store_true", help="leave out `serve --no-batching`")
    p.add_argument(
        "--skip-faults", action="store_true", help="sweep only: no overload or kill stage (and no pass/fail)"
    )
    p.add_argument(
        "--serve-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="one more `modernenc serve` argument for every serve process (repeatable), "
        "e.g. --serve-arg=--max-batch-tokens=4096",
    )
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    p.add_argument("--quick", action="store_true", help="a check that everything runs: tiny sizes, seconds")
    p.add_argument("--pipeline-app", metavar="MODEL", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.pipeline_app:
        pipeline_app(args.pipeline_app)
        return
    if args.out is not None and args.out.exists():
        p.error(f"{args.out} already exists; choose another --out")
    if args.quick:
        args.clients, args.seconds, args.max_requests = [1, 8], 2, 50
        args.paired_rounds = min(args.paired_rounds, 1)
        args.overload_seconds, args.kill_after, args.limit_texts = 3, 2, args.limit_texts or 200
        args.max_queue_texts = 64  # small enough for 429s within seconds
    results = run(args)
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.out}")
    if args.skip_faults:
        return
    lost = results["overload"]["new_audit_rows"] != results["overload"]["decisions_answered"]
    lost = lost or results["kill"]["missing_from_trail"] or results["kill"]["audit_verify_exit_code"]
    if lost or not results["overload"]["only_200_and_429"]:
        sys.exit(
            "FAILED: a decision was lost, the trail does not verify, or the overload gave other than 200/429"
        )


if __name__ == "__main__":
    main()
