"""Shared fixtures: small random ModernBERT configs and padded mixed-length batches."""

from __future__ import annotations

import pytest
import torch

from modernenc.model.attention import eager_attention
from modernenc.model.bucketed_attention import BucketedAttention
from modernenc.model.flex_attention import FlexAttention
from modernenc.model.layers import Attention
from modernenc.pv.bundled_data import shared_data_dir

SHARED_DATA = shared_data_dir()


def write_small_ade_split(out, sizes: dict[str, int]):
    """The published ADE split cut to ``sizes`` sentences per split, half of each class, in ``out``."""
    from modernenc.pv.ade_data import load_ade_sentences, make_splits, write_jsonl

    positives, negatives = load_ade_sentences(SHARED_DATA / "ade_corpus_v2")
    splits = make_splits(positives, negatives, seed=0)
    for split, n in sizes.items():
        rows = splits[split]
        write_jsonl(rows[: n // 2] + rows[-n // 2 :], out / f"{split}.jsonl")  # both classes
    return out


def run_cli(*argv) -> int:
    """Run `modernenc ARGV` in this process, as the console script would; returns the exit code."""
    from modernenc.cli import main

    try:
        main([str(a) for a in argv])
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else 1
    return 0


def cli_error(capsys, *argv) -> str:
    """Run `modernenc ARGV`, which must fail with exit code 1; returns its one-line message."""
    capsys.readouterr()  # drop earlier output
    assert run_cli(*argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err.rstrip("\n")


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    torch.set_num_threads(2)


# Every attention backend that runs on the CPU, as the model would use it; the bucketed backend twice: its
# grids on the fused sdpa kernel, then as the CPU's explicit matmuls (its default).
CPU_BACKENDS = {
    "eager": lambda: eager_attention,
    "bucketed, fused kernel": lambda: BucketedAttention(matmul_max_length=0),
    "bucketed, matmul grids": lambda: BucketedAttention(),
    "flex": lambda: FlexAttention(),
}


@pytest.fixture(params=list(CPU_BACKENDS))
def cpu_backend(request):
    """Run a test once per CPU attention backend (see `use_backend`)."""
    return CPU_BACKENDS[request.param]()


def use_backend(model: torch.nn.Module, backend) -> torch.nn.Module:
    """Make every attention layer of `model` use `backend` (an object; the config names only the defaults)."""
    layers = [m for m in model.modules() if isinstance(m, Attention)]
    assert layers, "no attention layers"
    for layer in layers:
        layer.backend = backend
    return model


def small_hf_config(**overrides):
    """A random small `transformers` ModernBertConfig: 4 layers (global at 0 and 3), window 16."""
    from transformers import ModernBertConfig

    values = dict(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=4,
        num_attention_heads=4,
        local_attention=16,
        global_attn_every_n_layers=3,
        max_position_embeddings=512,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        cls_token_id=1,
        sep_token_id=2,
        global_rope_theta=160_000.0,
        local_rope_theta=10_000.0,
        reference_compile=False,
        attn_implementation="sdpa",
    )
    values.update(overrides)
    return ModernBertConfig(**values)


def padded_batch(lengths, vocab_size=512, seq_len=None, seed=0):
    """Right-padded ids and mask; rows start with CLS (1) and end with SEP (2), pad id 0."""
    gen = torch.Generator().manual_seed(seed)
    seq_len = seq_len or max(lengths)
    ids = torch.randint(3, vocab_size, (len(lengths), seq_len), generator=gen)
    mask = torch.zeros(len(lengths), seq_len, dtype=torch.long)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
        if n:
            ids[row, 0] = 1
            ids[row, n - 1] = 2
    return ids.masked_fill(mask == 0, 0), mask
