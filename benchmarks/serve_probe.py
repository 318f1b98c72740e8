"""Where a `modernenc serve` process spends its time under load, read from its own `/metrics`.

One server with the given settings, closed-loop load at each --clients level (serve_load.py's client), and
for each level the counters' change over the load: texts/s and p99, the model worker's busy fraction
(inference seconds over wall time), texts per batch, texts per model-second, and the audit commits'
share. Used to find why throughput fell at 128 clients (docs/benchmarks.md, "Serving"):

    python benchmarks/serve_probe.py --model checkpoints/quickstart-finetune-ade/best-hf --clients 32 128 \\
        --serve-arg=--max-batch-tokens=8192
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import serve_load  # noqa: E402  (the benchmarks folder is not a package)

COUNTERS = (
    "inference_seconds_sum",
    "texts_total",
    "batch_texts_sum",
    "batch_texts_count",
    "audit_commit_seconds_sum",
)


def scrape(url: str) -> dict[str, float]:
    import httpx

    text = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {serve_load.KEY}"}).text
    values = {}
    for name in COUNTERS:
        found = re.search(rf"^modernenc_{name} ([-+\d.e]+)$", text, re.M)
        if found is None:
            raise SystemExit(f"error: /metrics has no modernenc_{name}")
        values[name] = float(found.group(1))
    return values


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="fine-tuned classifier folder")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "int8"])
    p.add_argument("--clients", type=int, nargs="+", default=[32, 128])
    p.add_argument("--seconds", type=float, default=20, help="of load per level (default: %(default)s)")
    p.add_argument(
        "--client", choices=sorted(serve_load.CLIENTS), default="httpx", help="the load's HTTP client"
    )
    p.add_argument("--serve-arg", action="append", default=[], metavar="ARG", help="one more serve argument")
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="serve-probe-"))
    keys = work / "keys.txt"
    keys.write_text(f"probe:{serve_load.KEY}\n")
    texts = serve_load.ade_test_texts(None, None)
    server = serve_load.start_serve(args.model, args.dtype, work / "audit.sqlite", keys, *args.serve_arg)
    try:
        asyncio.run(serve_load.closed_loop(server.url, texts, 4, 2, 5, args.client))  # warm up
        for clients in args.clients:
            before, start = scrape(server.url), time.perf_counter()
            loop = serve_load.closed_loop(server.url, texts, clients, args.seconds, 10**6, args.client)
            load = asyncio.run(loop)
            wall, after = time.perf_counter() - start, scrape(server.url)
            d = {name: after[name] - before[name] for name in COUNTERS}
            row = {
                "clients": clients,
                "texts_per_s": load["texts_per_s"],
                "p99_ms": load["p99_ms"],
                "model_busy": round(d["inference_seconds_sum"] / wall, 3),
                "texts_per_batch": round(d["batch_texts_sum"] / max(1, d["batch_texts_count"]), 1),
                "texts_per_model_second": round(d["texts_total"] / max(1e-9, d["inference_seconds_sum"]), 1),
                "audit_busy": round(d["audit_commit_seconds_sum"] / wall, 3),
                "client_cpu_share": load["client_cpu_share"],
            }
            print(json.dumps(row), flush=True)
    finally:
        server.terminate()


if __name__ == "__main__":
    main()
