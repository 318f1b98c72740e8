"""Train a byte-level BPE tokenizer with ModernBERT's special tokens, saved in Hugging Face format.

The result mirrors ModernBERT's tokenizer: NFC normalisation, byte-level pre-tokenisation (no prefix
space), ``[CLS] A [SEP]`` / ``[CLS] A [SEP] B [SEP]`` templates, ``[MASK]`` with lstrip, and the vocabulary
padded with ``[unusedN]`` tokens to a multiple of 64 (tensor-core friendly embedding sizes).

Example::

    python data_prep/train_tokenizer.py --input ../shared/data/pubmed --vocab-size 32768 \\
        --output tokenizers/pubmed-32k
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from tokenizers import (
    AddedToken,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from tqdm.auto import tqdm

from modernenc.data.corpus import FORMATS, Document, iter_documents

SPECIAL_TOKENS = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]

EXAMPLE = """example:
  python data_prep/train_tokenizer.py --input ../shared/data/pubmed --format jsonl \\
      --vocab-size 32768 --output tokenizers/pubmed-32k
"""


def train_bpe(
    texts: Iterator[str], vocab_size: int, min_frequency: int = 2, pad_to_multiple_of: int = 64
) -> Tokenizer:
    """Train the BPE model; ``vocab_size`` counts special tokens, padding adds ``[unusedN]`` on top."""
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[AddedToken(t, lstrip=t == "[MASK]", normalized=False) for t in SPECIAL_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodable: no [UNK] at run time
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    size = tok.get_vocab_size(with_added_tokens=True)
    if pad_to_multiple_of > 1 and size % pad_to_multiple_of:
        n = pad_to_multiple_of - size % pad_to_multiple_of
        tok.add_tokens([AddedToken(f"[unused{i}]", normalized=False) for i in range(n)])
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return tok


def save_hf(tok: Tokenizer, out: Path, model_max_length: int = 8192) -> None:
    """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json (AutoTokenizer-loadable)."""
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        mask_token=AddedToken("[MASK]", lstrip=True, normalized=False),
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=True,
    )
    hf.model_input_names = ["input_ids", "attention_mask"]
    hf.save_pretrained(str(out))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Train a ModernBERT-style byte-level BPE tokenizer.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--input", nargs="+", required=True, help="files/folders (or a dataset name with --format hf)"
    )
    p.add_argument("--format", default="auto", choices=FORMATS)
    p.add_argument("--text-field", default="text", help="text field for jsonl/parquet/hf inputs")
    p.add_argument("--text-split", default="line", choices=("line", "paragraph"))
    p.add_argument("--vocab-size", type=int, required=True, help="BPE vocabulary size incl. special tokens")
    p.add_argument("--min-frequency", type=int, default=2)
    p.add_argument("--pad-to-multiple-of", type=int, default=64, help="add [unusedN] tokens up to a multiple")
    p.add_argument("--model-max-length", type=int, default=8192)
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("--force", action="store_true", help="overwrite an existing tokenizer in --output")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.output)
    if (out / "tokenizer.json").exists() and not args.force:
        print(f"error: {out / 'tokenizer.json'} exists; pass --force to overwrite", file=sys.stderr)
        return 1
    if out.exists() and not out.is_dir():
        print(f"error: --output {out} is a file; pass a folder", file=sys.stderr)
        return 2
    if args.vocab_size <= len(SPECIAL_TOKENS) + 256:
        print("error: --vocab-size must exceed the 256 byte symbols plus the special tokens", file=sys.stderr)
        return 2
    for name in ("min_frequency", "pad_to_multiple_of", "model_max_length"):
        if getattr(args, name) < 1:
            print(f"error: --{name.replace('_', '-')} must be at least 1", file=sys.stderr)
            return 2
    skipped: Counter[str] = Counter()
    used = 0

    def texts(docs: Iterator[Document]) -> Iterator[str]:
        nonlocal used
        for doc in tqdm(docs, unit="doc", desc="reading", disable=args.no_progress, mininterval=1.0):
            if doc.skip_reason is None:
                used += 1
                yield doc.text
            else:
                skipped[doc.skip_reason] += 1

    docs = iter_documents(args.input, args.format, text_field=args.text_field, text_split=args.text_split)
    try:
        tok = train_bpe(texts(docs), args.vocab_size, args.min_frequency, args.pad_to_multiple_of)
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if used == 0:  # a BPE of byte symbols only; nothing is written
        reasons = ", ".join(f"{r}: {n:,}" for r, n in skipped.most_common()) or "the input holds none"
        print(f"error: no document had text to train on ({reasons}); check --text-field", file=sys.stderr)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    save_hf(tok, out, args.model_max_length)
    print(f"vocabulary {tok.get_vocab_size(with_added_tokens=True):,} tokens; saved to {out}")
    print(
        f"skipped documents {sum(skipped.values()):,}"
        + "".join(f"\n  {r}: {n:,}" for r, n in skipped.items())
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
