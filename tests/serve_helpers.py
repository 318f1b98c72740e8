"""Shared by the serve tests: a tiny fine-tuned classifier folder and a real server on a loopback port."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import torch
from conftest import SHARED_DATA

from modernenc.model import (
    ModernEncoderConfig,
    ModernEncoderForSequenceClassification,
    ModernEncoderForTokenClassification,
)
from modernenc.tasks.decisions import write_thresholds

TOKENIZER_DIR = SHARED_DATA / "tokenizers" / "modernbert"
MAX_LENGTH = 40  # small, so long texts are truncated
THRESHOLD, BAND = 0.3, (0.2, 0.6)
TEXTS = [
    "Aspirin caused severe nausea.",
    "The patient was given 5 mg of warfarin daily for atrial fibrillation without complications.",
    "?",
    "Rash.",
    "Hepatotoxicity développée après l'administration de paracétamol à forte dose — naïve patient 😷.",
    "Long " + "treatment with methotrexate led to pancytopenia and " * 8 + "hospitalisation.",
    "No adverse events were observed.",
    "Stevens-Johnson syndrome following carbamazepine therapy.",
    *[f"Case {i}: {'the drug was well tolerated ' * (i % 4)}after dose {i}." for i in range(24)],
]


TINY = dict(  # the serve tests' model shape; large random weights, so outputs spread
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=3,
    num_attention_heads=4,
    global_attn_every_n_layers=2,
    local_attention=8,
    max_position_embeddings=MAX_LENGTH,
    initializer_range=0.5,
)


def build_classifier(folder: Path, **config_overrides) -> Path:
    """A random tiny classifier saved as a fine-tuned folder, with tokenizer and thresholds.json."""
    torch.manual_seed(0)
    values = {**TINY, "classifier_pooling": "mean", "id2label": {0: "no_ade", 1: "ade"}, **config_overrides}
    model = ModernEncoderForSequenceClassification(ModernEncoderConfig(**values))
    with torch.no_grad():
        model.classifier.weight.normal_(0, 0.2)
    model.save_pretrained(folder, tokenizer_path=TOKENIZER_DIR)
    write_thresholds(
        folder,
        {"default": 0.5, "max_f1": 0.45, "target_recall": THRESHOLD},
        chosen="target_recall",
        target_recall=0.95,
        review_band=BAND,
    )
    return folder


TAGS = ["O", "B-DRUG", "I-DRUG", "B-EFFECT", "I-EFFECT"]


def build_tagger(folder: Path) -> Path:
    """A random tiny BIO tagger saved as a fine-tuned folder; large weights so it tags some spans."""
    torch.manual_seed(1)
    config = ModernEncoderConfig(**TINY, num_labels=len(TAGS), id2label=dict(enumerate(TAGS)))
    ModernEncoderForTokenClassification(config).save_pretrained(folder, tokenizer_path=TOKENIZER_DIR)
    return folder


@contextlib.contextmanager
def running(app, ready: bool = True) -> Iterator[str]:
    """Run ``app`` under uvicorn on a free loopback port in a thread; yields its URL once it is ready (or,
    with ``ready=False``, once it listens)."""
    import uvicorn

    from modernenc.serve.server import Server, bind_socket, url_of

    sock = bind_socket("127.0.0.1", 0)
    server = Server(uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=10))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = url_of(sock)
    try:
        if ready:
            wait_ready(url)
        else:
            while not server.started:
                time.sleep(0.01)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        assert not thread.is_alive(), "the server did not stop"


def wait_ready(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/ready", timeout=5).status_code == 200:
                return
        time.sleep(0.05)
    raise AssertionError(f"{url} was not ready within {timeout} s")
