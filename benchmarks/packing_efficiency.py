"""Measure best-fit packing efficiency on Wikipedia chunked at --max-length with the ModernBERT tokenizer.

    python benchmarks/packing_efficiency.py --max-length 1024 --micro-batch-size 8

Efficiency = real tokens / slots over all packed micro-batches (the final, partly filled one included).
"""

from __future__ import annotations

import argparse
import time

from modernenc.data.corpus import iter_documents
from modernenc.data.masking import load_tokenizer
from modernenc.data.mds import chunk_tokens
from modernenc.data.packing import SequencePacker
from modernenc.pv.bundled_data import shared_data_dir


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", default=None, help="default: the shared Wikipedia sample")
    p.add_argument("--tokenizer", default=None, help="default: the shared ModernBERT tokenizer")
    p.add_argument("--max-length", type=int, default=1024, help="chunk length and per-sequence slot budget")
    p.add_argument(
        "--micro-batch-size", type=int, nargs="+", default=[1, 4, 8, 16], help="sequences per micro-batch"
    )
    p.add_argument(
        "--buffer-factor", type=int, default=16, help="buffer = factor x sequences per micro-batch"
    )
    args = p.parse_args()
    args.input = args.input or str(shared_data_dir() / "wikipedia_en")
    args.tokenizer = args.tokenizer or str(shared_data_dir() / "tokenizers" / "modernbert")

    tok = load_tokenizer(args.tokenizer)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    t0 = time.perf_counter()
    texts = [d.text for d in iter_documents([args.input]) if d.skip_reason is None]
    chunks = [
        c
        for enc in tok.encode_batch(texts, add_special_tokens=False)
        for c in chunk_tokens(enc.ids, args.max_length, cls_id, sep_id)
    ]
    n_tokens = sum(len(c) for c in chunks)
    elapsed = time.perf_counter() - t0
    print(f"{len(texts):,} documents -> {len(chunks):,} chunks, {n_tokens:,} tokens ({elapsed:.1f}s)")
    mean_len = n_tokens / len(chunks)

    for mbs in args.micro_batch_size:
        capacity = mbs * args.max_length
        # buffer sized in sequences: factor x the expected number of chunks in one micro-batch
        buffer_size = args.buffer_factor * max(1, round(capacity / mean_len))
        t0 = time.perf_counter()
        packer = SequencePacker(chunks, capacity=capacity, buffer_size=buffer_size)
        n_batches = sum(1 for _ in packer)
        assert packer.real_tokens == n_tokens
        print(
            f"capacity {capacity:>6} ({mbs:>2} x {args.max_length}), buffer {buffer_size:>4}: "
            f"{n_batches:>5} micro-batches, efficiency {packer.efficiency:.4%} "
            f"({time.perf_counter() - t0:.1f}s)"
        )


if __name__ == "__main__":
    main()
