"""What an operator sets for one server: address, batching, limits, audit trail. Checked before start-up."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

# Real tokens per packed batch when --max-batch-tokens is not given, by device type; never below the
# model's max_length. On the CPU a big packed batch costs more per text: at 128 concurrent clients on the
# quickstart model, 8,192-token batches served 205 texts/s, 4,096-token ones 330 and 2,048-token ones 396,
# with equal throughput at 32 clients (docs/benchmarks.md). A GPU wants large batches.
DEFAULT_BATCH_TOKENS = {"cpu": 2048, "cuda": 8192}
# When a batch that is not full waits up to --max-wait-ms for company (serve/batching.py).
BATCH_WAITS = {
    "adaptive": "only while the server holds another request or the last batch held several; a lone "
    "client's request runs at once",
    "always": "every batch that is not full waits, company likely or not",
}


@dataclass(frozen=True)
class ServeSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    max_batch_tokens: int | None = None  # real tokens per packed batch (no padding); None: by device
    max_wait_ms: float = 5.0  # how long the first text of a batch waits for company
    batch_wait: str = "adaptive"  # one of BATCH_WAITS
    max_queue_texts: int = 4096  # texts waiting for the model; beyond it, 429
    max_texts_per_request: int = 256
    max_request_bytes: int = 2_000_000
    audit_db: Path = Path("audit.sqlite")
    audit_store_text: bool = False
    batching: bool = True  # False: each batch holds one request's texts (for comparisons)
    body_timeout_s: float = 30.0  # a client that stalls mid-body gets 408, not a handler that waits forever
    drain_timeout_s: float = 120.0  # after SIGTERM, the longest wait for requests in flight
    # How long an idle keep-alive connection stays open. Longer than clients keep idle connections (httpx
    # 5 s, aiohttp 15 s; load balancers up to 60 s), so the client always closes first: at uvicorn's
    # default of 5 s, equal to httpx's, a client could send on a connection the server was closing and
    # get a reset instead of an answer (seen as ReadError in the overload test, docs/benchmarks.md).
    # 75 s is nginx's default.
    keep_alive_s: int = 75
    access_log: bool = False

    def for_model(self, device: str, max_length: int) -> ServeSettings:
        """These settings with ``max_batch_tokens`` chosen for the device if it was left unset."""
        if self.max_batch_tokens is not None:
            return self
        default = DEFAULT_BATCH_TOKENS["cuda" if device.startswith("cuda") else "cpu"]
        return replace(self, max_batch_tokens=max(default, max_length))

    def check(self, max_length: int) -> None:
        """Refuse settings that cannot work together, naming the options (``max_length``: the model's)."""
        positive = {
            "--max-batch-tokens": self.max_batch_tokens,
            "--max-queue-texts": self.max_queue_texts,
            "--max-texts-per-request": self.max_texts_per_request,
            "--max-request-bytes": self.max_request_bytes,
            "--keep-alive-s": self.keep_alive_s,
        }
        for option, value in positive.items():
            if value is not None and value < 1:
                raise ValueError(f"{option} must be at least 1; got {value}")
        if self.batch_wait not in BATCH_WAITS:
            raise ValueError(f"--batch-wait must be one of {', '.join(BATCH_WAITS)}; got {self.batch_wait!r}")
        # nan would kill the batcher (asyncio cannot schedule a timer at nan: every request then hangs) and
        # inf would hold a lone request forever; argparse's float() accepts both.
        if not (math.isfinite(self.max_wait_ms) and self.max_wait_ms >= 0):
            raise ValueError(f"--max-wait-ms must be a finite number >= 0; got {self.max_wait_ms}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"--port must be in [0, 65535]; got {self.port}")
        if self.max_batch_tokens is not None and self.max_batch_tokens < max_length:
            raise ValueError(
                f"--max-batch-tokens {self.max_batch_tokens} is below the model's max_length {max_length}: "
                "a long text would fit no batch"
            )
        if self.max_texts_per_request > self.max_queue_texts:
            raise ValueError(
                f"--max-texts-per-request {self.max_texts_per_request} is above --max-queue-texts "
                f"{self.max_queue_texts}: a full-size request could never be queued"
            )
