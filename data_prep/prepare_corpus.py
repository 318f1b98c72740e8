"""Tokenize a raw corpus into MDS shards for pre-training.

Example (Wikipedia, 1% validation hold-out, ADE sentences removed)::

    python data_prep/prepare_corpus.py \\
        --input ../shared/data/wikipedia_en --format wikiextractor \\
        --tokenizer ../shared/data/tokenizers/modernbert \\
        --output data/mds/wiki --max-length 1024 --validation-fraction 0.01 \\
        --decontaminate ../shared/data/ade_corpus_v2
"""

from __future__ import annotations

import argparse
import sys

from modernenc.data.corpus import FORMATS, iter_documents
from modernenc.data.decontaminate import Decontaminator, load_eval_sentences
from modernenc.data.masking import load_tokenizer
from modernenc.data.mds import check_output_dir, staged_output_dir, write_mds_corpus

EXAMPLE = """example:
  python data_prep/prepare_corpus.py --input ../shared/data/pubmed --format jsonl --text-field text \\
      --tokenizer ../shared/data/tokenizers/modernbert --output data/mds/pubmed \\
      --max-length 1024 --validation-fraction 0.01 --decontaminate ../shared/data/ade_corpus_v2
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Tokenize documents, split long ones into [CLS] ... [SEP] chunks, write zstd MDS shards.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
    p.add_argument(
        "--decontaminate",
        nargs="*",
        default=[],
        metavar="PATH",
        help="drop documents containing any sentence of these eval sets (ADE folder, jsonl/csv/parquet, txt)",
    )
    p.add_argument(
        "--decontaminate-field", default="text", help="text column of a jsonl/csv/parquet eval set"
    )
    p.add_argument("--decontaminate-min-words", type=int, default=6, help="ignore shorter eval sentences")
    p.add_argument("--shard-size", default="64mb", help="uncompressed shard size limit, e.g. 64mb")
    p.add_argument("--force", action="store_true", help="replace an existing prepared corpus in --output")
    p.add_argument("--no-progress", action="store_true", help="disable progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0.0 <= args.validation_fraction < 1.0:
        parser.error("--validation-fraction must be in [0, 1)")
    if args.max_length < 3:
        parser.error(
            f"--max-length must leave room for [CLS], [SEP] and a token (>= 3); got {args.max_length}"
        )
    if args.decontaminate_min_words < 1:
        parser.error(f"--decontaminate-min-words must be >= 1; got {args.decontaminate_min_words}")
    try:
        out = check_output_dir(args.output, args.force)
        tokenizer = load_tokenizer(args.tokenizer)
        decontaminator = None
        if args.decontaminate:
            sentences = [
                s for path in args.decontaminate for s in load_eval_sentences(path, args.decontaminate_field)
            ]
            decontaminator = Decontaminator(sentences, min_words=args.decontaminate_min_words)
            if decontaminator.num_sentences == 0:
                raise ValueError(
                    f"none of the {len(sentences):,} decontamination sentences has "
                    f"{args.decontaminate_min_words} or more words; nothing would be removed"
                )
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
        with staged_output_dir(out) as staging:
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
    except (FileExistsError, FileNotFoundError, ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"interrupted; {args.output} is as it was", file=sys.stderr)
        return 130
    print(report.format())
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
