"""Drop pre-training documents that contain any sentence of an evaluation set.

Matching works on lower-cased word sequences (``\\w+`` runs), so differences in spacing and punctuation
(e.g. detokenised abstracts) do not hide a leaked sentence. Sentences are indexed by their first
``anchor`` words; a document is scanned once and each anchor hit is verified against the full sentence,
so cost grows with document length, not with the number of evaluation sentences.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from modernenc.tasks.tables import TABLE_FORMATS, read_lines, read_rows

_WORD_RE = re.compile(r"\w+")


def words(text: str) -> list[str]:
    return _WORD_RE.findall(text.lower())


def _ade_sentences(folder: Path) -> list[str]:
    """ADE corpus v2: DRUG-AE.rel / DRUG-DOSE.rel (``PMID|sentence|...``), ADE-NEG.txt (``PMID NEG text``)."""
    out = []
    for name in ("DRUG-AE.rel", "DRUG-DOSE.rel"):
        if (folder / name).exists():
            for line in read_lines(folder / name):
                parts = line.split("|")
                if len(parts) > 1:
                    out.append(parts[1])
    if (folder / "ADE-NEG.txt").exists():
        for line in read_lines(folder / "ADE-NEG.txt"):
            parts = line.split(" ", 2)
            if len(parts) == 3 and parts[1] == "NEG":
                out.append(parts[2])
    return out


def load_eval_sentences(path: str | Path, text_field: str = "text") -> list[str]:
    """Read evaluation sentences from an ADE corpus folder, a table (JSONL, CSV, parquet: ``text_field``)
    or a text file (one per line).

    A set that yields no sentence is an error: it would turn decontamination off without a word.
    """
    path = Path(path)
    if path.is_dir():
        sentences = _ade_sentences(path)
        if not sentences:
            raise ValueError(
                f"{path} holds no DRUG-AE.rel, DRUG-DOSE.rel or ADE-NEG.txt to decontaminate against"
            )
        return sentences
    if not path.is_file():
        raise FileNotFoundError(f"decontamination set {path} does not exist")
    try:
        if path.suffix.lower() in TABLE_FORMATS:
            rows = read_rows(path, [text_field], hint=" (choose one with --decontaminate-field)")
            sentences = [row[text_field] for row in rows if isinstance(row[text_field], str)]
        else:
            sentences = [line for line in read_lines(path) if line.strip()]
    except UnicodeDecodeError as err:
        raise ValueError(
            f"decontamination set {path} is not UTF-8 ({err.reason} at byte {err.start})"
        ) from None
    if not sentences:
        raise ValueError(f"decontamination set {path} holds no sentences")
    return sentences


class Decontaminator:
    """``contains_eval_sentence(text)`` is True when ``text`` holds any indexed sentence as a word sequence.

    Sentences shorter than ``min_words`` words are not indexed: fragments like "Case report." occur in
    countless unrelated documents and would drop them for no leakage reason. ``num_ignored`` counts them.
    """

    def __init__(self, sentences: list[str], min_words: int = 6, anchor: int = 6) -> None:
        self.anchor = min(anchor, min_words)
        self._index: dict[tuple[str, ...], list[tuple[str, ...]]] = defaultdict(list)
        self.num_sentences = 0
        self.num_ignored = 0
        for sentence in dict.fromkeys(sentences):  # de-duplicate, keep order
            w = tuple(words(sentence))
            if len(w) < min_words:
                self.num_ignored += 1
                continue
            self._index[w[: self.anchor]].append(w)
            self.num_sentences += 1

    def contains_eval_sentence(self, text: str) -> bool:
        doc = words(text)
        for i in range(len(doc) - self.anchor + 1):
            candidates = self._index.get(tuple(doc[i : i + self.anchor]))
            if candidates and any(tuple(doc[i : i + len(c)]) == c for c in candidates):
                return True
        return False
