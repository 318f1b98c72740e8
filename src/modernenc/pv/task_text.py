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


def sentence_abstracts(corpus: str | Path) -> dict[str, str]:
    """Each corpus sentence's PubMed id (the first one it is listed under)."""
    from modernenc.pv.ade_data import NEGATIVE_FILE, POSITIVE_FILE
    from modernenc.utils.tables import read_lines

    corpus = Path(corpus)
    pmids: dict[str, str] = {}
    for line in read_lines(corpus / POSITIVE_FILE):
        parts = line.split("|")  # PMID|sentence|effect|...
        if len(parts) > 1:
            pmids.setdefault(parts[1].strip(), parts[0])
    for line in read_lines(corpus / NEGATIVE_FILE):
        parts = line.split(" ", 2)  # PMID NEG sentence
        if len(parts) == 3:
            pmids.setdefault(parts[2].strip(), parts[0])
    return pmids


def group_by_abstract(sentences: list[str], corpus: str | Path, seed: int = 0) -> list[str]:
    """The sentences joined into one document per PubMed abstract they come from, in a seeded random
    order within each (the corpus does not keep the abstracts' order, and a fixed order, e.g. positives
    first, would tie position to the label).

    Why: a step of ~140 separate ADE sentences costs ~1.4x a step of 8 x 512-token documents (per-sequence
    overhead; docs/results.md), and an abstract's sentences are natural context for one another.
    """
    import random

    pmids = sentence_abstracts(corpus)
    groups: dict[str, list[str]] = {}
    for sentence in sentences:
        groups.setdefault(pmids.get(sentence, sentence), []).append(sentence)
    documents = []
    for pmid in sorted(groups):
        group = sorted(groups[pmid])
        random.Random(f"{seed}:{pmid}").shuffle(group)
        documents.append(" ".join(group))
    return documents


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


@dataclass
class AnnealText:
    path: Path
    documents: int  # domain documents kept
    dropped: int  # domain documents holding an ADE corpus sentence
    task_documents: int  # task sentences grouped by abstract (each written `repeats` times)


def write_anneal_text(
    domain: list[str | Path],
    corpus: str | Path,
    task: TaskText,
    path: str | Path,
    repeats: int = 4,
    text_field: str = "text",
    min_words: int = 6,
) -> AnnealText:
    """One JSONL for the annealing mix: the `domain` documents (e.g. PubMed) that hold no ADE corpus
    sentence at all (as `prepare-data --decontaminate <ADE folder>` drops them), then the task text
    grouped by abstract (`group_by_abstract`), each group `repeats` times.

    The two parts are decontaminated differently: PubMed against every ADE sentence, the task text
    (which is ADE sentences) against validation and test only; hence one file written here rather than
    one `prepare-data --decontaminate` call.
    """
    from modernenc.data.corpus import iter_documents
    from modernenc.pv.ade_data import corpus_sentences

    every_ade_sentence = Decontaminator(corpus_sentences(corpus), min_words=min_words)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    kept = dropped = 0
    with path.open("w", encoding="utf-8") as out:
        for doc in iter_documents(domain, "auto", text_field=text_field):
            if doc.skip_reason is not None:
                continue
            if every_ade_sentence.contains_eval_sentence(doc.text):
                dropped += 1
                continue
            out.write(json.dumps({"text": doc.text}, ensure_ascii=False) + "\n")
            kept += 1
        grouped = group_by_abstract(task.sentences, corpus)
        for document in grouped:
            out.write((json.dumps({"text": document}, ensure_ascii=False) + "\n") * repeats)
    return AnnealText(path, kept, dropped, len(grouped))
