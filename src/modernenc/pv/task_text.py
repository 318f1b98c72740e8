"""Text for task-adaptive MLM on ADE: every corpus sentence that no validation or test split holds.

That is the training split's sentences plus the negatives the balanced split leaves unused (about 12k of
the 16.6k), the in-domain text closest to the task. Labels are never used (MLM sees the text only), and
a sentence is left out when its word sequence equals or contains a held-out one, since de-duplication
works on exact strings and two strings can differ only in spacing or punctuation.
`modernenc check-leaks` later proves the same on the shards themselves.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from modernenc.data.decontaminate import Decontaminator, words
from modernenc.pv.ade_data import load_ade_sentences, read_jsonl

HELD_OUT_SPLITS = ("validation", "test")


@dataclass
class TaskText:
    sentences: list[str]  # sorted, so the file depends only on the corpus and the split
    from_train: int  # of which in the training split
    unused: int  # of which in no split (negatives left out by the sub-sample)
    near_duplicates: int  # left out: equal to, or containing, a held-out sentence as words


def held_out_sentences(split_dir: str | Path) -> list[str]:
    """The validation and test sentences of a split written by `modernenc prepare-ade`."""
    split_dir = Path(split_dir)
    missing = [s for s in HELD_OUT_SPLITS if not (split_dir / f"{s}.jsonl").is_file()]
    if missing:
        raise FileNotFoundError(f"{split_dir} lacks {', '.join(missing)}.jsonl; run `modernenc prepare-ade`")
    return [row["text"] for s in HELD_OUT_SPLITS for row in read_jsonl(split_dir / f"{s}.jsonl")]


def task_adaptive_sentences(corpus: str | Path, split_dir: str | Path, min_words: int = 6) -> TaskText:
    """The ADE corpus sentences outside `split_dir`'s validation and test files (see the module docstring)."""
    positives, negatives = load_ade_sentences(corpus)
    held_out = held_out_sentences(split_dir)
    train = {row["text"] for row in read_jsonl(Path(split_dir) / "train.jsonl")}
    held_set, held_words = set(held_out), {tuple(words(s)) for s in held_out}
    inside = Decontaminator(held_out, min_words=min_words)
    kept, near = [], 0
    for sentence in sorted(set(positives) | set(negatives)):
        if tuple(words(sentence)) in held_words or inside.contains_eval_sentence(sentence):
            near += sentence not in held_set
            continue
        kept.append(sentence)
    from_train = sum(s in train for s in kept)
    return TaskText(kept, from_train, len(kept) - from_train, near)


def write_task_text(text: TaskText, path: str | Path, repeats: int = 1) -> Path:
    """One `{"text"}` JSON line per sentence, each written `repeats` times in a row (to weight it in a mix
    with other corpora; prepare-data assigns identical lines to the same MLM split, so copies never
    straddle train and validation)."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = "".join(
        json.dumps({"text": s}, ensure_ascii=False) + "\n" for s in text.sentences for _ in range(repeats)
    )
    path.write_text(lines, encoding="utf-8")
    return path
