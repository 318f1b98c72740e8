"""Data commands: tokenize a corpus into MDS shards, train a BPE tokenizer."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import replace

from modernenc.cli.command import Command, CommandError
from modernenc.data.corpus import FORMATS

PREPARE_EXAMPLE = """example:
  modernenc prepare-data --input ../shared/data/pubmed --format jsonl --text-field text \\
      --tokenizer ../shared/data/tokenizers/modernbert --output data/mds/pubmed \\
      --max-length 1024 --validation-fraction 0.01 --decontaminate ../shared/data/ade_corpus_v2
  (also `python data_prep/prepare_corpus.py ...` from a checkout)
"""


def _prepare_args(p: argparse.ArgumentParser) -> None:
    p.epilog = PREPARE_EXAMPLE
    p.add_argument(
        "--input", nargs="+", required=True, help="files/folders, or a dataset name with --format hf"
    )
    p.add_argument(
        "--format", default="auto", choices=FORMATS, help="input format (default: by file extension)"
    )
    p.add_argument("--text-field", default="text", help="text field for jsonl/parquet/hf inputs")
    p.add_argument("--id-field", default=None, help="optional document id field for jsonl/parquet inputs")
    p.add_argument(
        "--text-split",
        default="line",
        choices=("line", "paragraph"),
        help="plain text: one document per line, or per blank-line separated block",
    )
    p.add_argument("--hf-config", default=None, help="dataset config name for --format hf")
    p.add_argument("--hf-split", default="train", help="dataset split for --format hf")
    p.add_argument("--hf-data-files", nargs="*", default=None, help="data_files for builders like 'json'")
    p.add_argument("--tokenizer", required=True, help="folder with tokenizer.json, or the file itself")
    p.add_argument("--output", required=True, help="output folder (gets train/ and validation/)")
    p.add_argument("--max-length", type=int, default=1024, help="tokens per chunk incl. [CLS]/[SEP]")
    p.add_argument(
        "--validation-fraction", type=float, default=0.01, help="hash-based hold-out fraction (default: 0.01)"
    )
    p.add_argument("--split-seed", type=int, default=0, help="salt of the hold-out hash")
    _decontamination_args(p)
    p.add_argument("--shard-size", default="64mb", help="uncompressed shard size limit, e.g. 64mb")
    p.add_argument("--force", action="store_true", help="replace an existing prepared corpus in --output")
    p.add_argument("--no-progress", action="store_true", help="disable progress bars")


def _decontamination_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--decontaminate",
        nargs="*",
        default=[],
        metavar="PATH",
        help="drop documents containing any sentence of these eval sets (jsonl/csv/parquet, txt, or the "
        "ADE corpus folder)",
    )
    p.add_argument(
        "--decontaminate-field", default="text", help="text column of a jsonl/csv/parquet eval set"
    )
    p.add_argument("--decontaminate-min-words", type=int, default=6, help="ignore shorter eval sentences")


def _held_out_sentences(paths: list[str], text_field: str) -> list[str]:
    from modernenc.data.decontaminate import load_eval_sentences
    from modernenc.pv.ade_data import corpus_sentences  # so an ADE corpus folder is a valid eval set

    return [
        s for path in paths for s in load_eval_sentences(path, text_field, folder_reader=corpus_sentences)
    ]


def _decontaminator(args: argparse.Namespace):
    """The `--decontaminate` filter (a `data.decontaminate.Decontaminator`), or None."""
    from modernenc.data.decontaminate import Decontaminator

    if args.decontaminate_min_words < 1:
        raise CommandError(f"--decontaminate-min-words must be >= 1; got {args.decontaminate_min_words}")
    if not args.decontaminate:
        return None
    sentences = _held_out_sentences(args.decontaminate, args.decontaminate_field)
    decontaminator = Decontaminator(sentences, min_words=args.decontaminate_min_words)
    if decontaminator.num_sentences == 0:
        raise ValueError(
            f"none of the {len(sentences):,} decontamination sentences has "
            f"{args.decontaminate_min_words} or more words; nothing would be removed"
        )
    return decontaminator


def _prepare(args: argparse.Namespace) -> None:
    from modernenc.utils.outputs import check_output_folder, writing_folder

    if not 0.0 <= args.validation_fraction < 1.0:
        raise CommandError(f"--validation-fraction must be in [0, 1); got {args.validation_fraction}")
    if args.max_length < 3:
        raise CommandError(
            f"--max-length must leave room for [CLS], [SEP] and a token (>= 3); got {args.max_length}"
        )
    local_inputs = [] if args.format == "hf" else args.input
    out = check_output_folder(
        args.output,
        kind="mds-corpus",
        force=args.force,
        inputs=[*local_inputs, args.tokenizer, *args.decontaminate],
        what="--output folder",
    )
    from streaming.base.util import bytes_to_int

    from modernenc.data.corpus import iter_documents  # after the checks: these load torch (seconds)
    from modernenc.data.masking import load_tokenizer
    from modernenc.data.mds import write_mds_corpus

    try:
        bytes_to_int(args.shard_size)
    except ValueError:
        raise CommandError(f"--shard-size {args.shard_size!r} is not a size, e.g. 64mb or 1gb") from None
    tokenizer = load_tokenizer(args.tokenizer)
    decontaminator = _decontaminator(args)
    documents = iter_documents(
        args.input,
        args.format,
        text_field=args.text_field,
        id_field=args.id_field,
        text_split=args.text_split,
        hf_config=args.hf_config,
        hf_split=args.hf_split,
        hf_data_files=args.hf_data_files,
    )
    try:
        with writing_folder(out, kind="mds-corpus", tool="prepare-data") as staging:
            report = write_mds_corpus(
                documents,
                tokenizer,
                staging,
                max_length=args.max_length,
                validation_fraction=args.validation_fraction,
                split_seed=args.split_seed,
                decontaminator=decontaminator,
                shard_size_limit=args.shard_size,
                progress=not args.no_progress,
            )
    except KeyboardInterrupt:
        raise CommandError(f"interrupted; {args.output} is as it was") from None
    print(report.format())
    print(f"wrote {out}")


TOKENIZER_EXAMPLE = """example:
  modernenc train-tokenizer --input ../shared/data/pubmed --format jsonl \\
      --vocab-size 32768 --output tokenizers/pubmed-32k
  (also `python data_prep/train_tokenizer.py ...` from a checkout)
"""


def _tokenizer_args(p: argparse.ArgumentParser) -> None:
    p.epilog = TOKENIZER_EXAMPLE
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
    _decontamination_args(p)
    p.add_argument("--force", action="store_true", help="overwrite an existing tokenizer in --output")
    p.add_argument("--no-progress", action="store_true")


def _train_tokenizer(args: argparse.Namespace) -> None:
    from tqdm.auto import tqdm

    from modernenc.data.corpus import SkippedDocuments, iter_documents
    from modernenc.data.tokenizer_training import SPECIAL_TOKENS, save_hf, train_bpe
    from modernenc.utils.outputs import check_output_folder, writing_folder

    out = check_output_folder(
        args.output,
        kind="tokenizer",
        force=args.force,
        inputs=[] if args.format == "hf" else args.input,
        what="--output folder",
    )
    if args.vocab_size <= len(SPECIAL_TOKENS) + 256:
        raise CommandError("--vocab-size must exceed the 256 byte symbols plus the special tokens")
    for name in ("min_frequency", "pad_to_multiple_of", "model_max_length"):
        if getattr(args, name) < 1:
            raise CommandError(f"--{name.replace('_', '-')} must be at least 1")
    decontaminator = _decontaminator(args)
    skipped = SkippedDocuments()
    used = 0

    def texts(docs: Iterator) -> Iterator[str]:  # of data.corpus.Document
        nonlocal used
        for doc in tqdm(docs, unit="doc", desc="reading", disable=args.no_progress, mininterval=1.0):
            if doc.skip_reason is None and decontaminator and decontaminator.contains_eval_sentence(doc.text):
                skipped.add(replace(doc, skip_reason="contains an evaluation sentence (--decontaminate)"))
            elif doc.skip_reason is None:
                used += 1
                yield doc.text
            else:
                skipped.add(doc)

    docs = iter_documents(args.input, args.format, text_field=args.text_field, text_split=args.text_split)
    tok = train_bpe(texts(docs), args.vocab_size, args.min_frequency, args.pad_to_multiple_of)
    if used == 0:  # a BPE of byte symbols only; nothing is written
        reasons = skipped.inline() or "the input holds none"
        fixes = "; ".join([*skipped.fixes(), "check --format and --text-field"])
        raise CommandError(f"no document had text to train on ({reasons}); {fixes}")
    with writing_folder(out, kind="tokenizer", tool="train-tokenizer") as staging:
        save_hf(tok, staging, args.model_max_length)
    print(f"vocabulary {tok.get_vocab_size(with_added_tokens=True):,} tokens; saved to {out}")
    print("\n".join([f"skipped documents {skipped.total:,}", *skipped.lines()]))


LEAKS_EXAMPLE = """example:
  modernenc check-leaks --shards data/wiki-512 data/pubmed-512 \\
      --tokenizer ../shared/data/tokenizers/modernbert \\
      --held-out data/ade/validation.jsonl data/ade/test.jsonl
"""


def _leaks_args(p: argparse.ArgumentParser) -> None:
    p.epilog = LEAKS_EXAMPLE
    p.add_argument(
        "--shards",
        nargs="+",
        required=True,
        help="prepared corpora (their train/ and validation/) or MDS folders",
    )
    p.add_argument(
        "--held-out",
        nargs="+",
        required=True,
        metavar="PATH",
        help="sentences no shard may hold (jsonl/csv/parquet, txt, or the ADE corpus folder)",
    )
    p.add_argument("--text-field", default="text", help="text column of a jsonl/csv/parquet held-out set")
    p.add_argument("--tokenizer", required=True, help="the tokenizer the shards were prepared with")
    p.add_argument(
        "--min-words",
        type=int,
        default=6,
        help="shorter held-out sentences count only as whole samples, not inside longer text (default 6)",
    )
    p.add_argument("--no-progress", action="store_true")


def _check_leaks(args: argparse.Namespace) -> None:
    from modernenc.data.leaks import find_leaks, shard_folders
    from modernenc.data.masking import load_tokenizer
    from modernenc.data.mds import check_prepared_with

    if args.min_words < 1:
        raise CommandError(f"--min-words must be >= 1; got {args.min_words}")
    folders = [folder for path in args.shards for folder in shard_folders(path)]
    tokenizer = load_tokenizer(args.tokenizer)
    for folder in folders:  # decoded with another tokenizer, no sentence would ever be found
        check_prepared_with(folder, tokenizer, f"--tokenizer {args.tokenizer}")
    sentences = _held_out_sentences(args.held_out, args.text_field)
    report = find_leaks(folders, sentences, tokenizer, args.min_words, not args.no_progress)
    print(report.format())
    if report.leaks:
        first = report.leaks[0]
        raise CommandError(
            f"{len(report.leaks):,} held-out sentence(s) found in the shards; the first: {first.folder} "
            f"sample {first.sample:,} {'is' if first.whole_sample else 'contains'} {first.sentence[:80]!r}"
        )


COMMANDS = {
    "prepare-data": Command(
        "tokenize a corpus into MDS shards (text, JSONL, parquet, WikiExtractor, HF datasets)",
        _prepare_args,
        _prepare,
        description="Tokenize documents, split long ones into [CLS] ... [SEP] chunks, write zstd MDS shards.",
    ),
    "check-leaks": Command(
        "prove that no held-out sentence is in any pre-training shard (decoded text)",
        _leaks_args,
        _check_leaks,
        description="Decode every sample of the shards and search it for each held-out sentence; exit 1 "
        "naming the first one found.",
    ),
    "train-tokenizer": Command(
        "train a BPE tokenizer with ModernBERT's special tokens",
        _tokenizer_args,
        _train_tokenizer,
        description="Train a ModernBERT-style byte-level BPE tokenizer.",
    ),
}
