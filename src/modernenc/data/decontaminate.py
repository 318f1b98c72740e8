"""Drop pre-training documents that contain any sentence of an evaluation set.

Matching works on lower-cased word sequences (``\\w+`` runs), so differences in spacing and punctuation
(e.g. detokenised abstracts) do not hide a leaked sentence. Sentences are indexed by their first
``anchor`` words; a document is scanned once and each anchor hit is verified against the full sentence,
so cost grows with document length, not with the number of evaluation sentences.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

from modernenc.utils.tables import TABLE_FORMATS, read_lines, read_rows

WORD_RE = re.compile(r"\w+")


def words(text: str) -> list[str]:
    return WORD_RE.findall(text.lower())


def load_eval_sentences(
    path: str | Path, text_field: str = "text", folder_reader: Callable[[Path], list[str]] | None = None
) -> list[str]:
    """Read evaluation sentences from a table (JSONL, CSV, parquet: ``text_field``), a text file (one per
    line), or a folder that ``folder_reader`` understands (an application's corpus layout, e.g. the ADE
    corpus in ``modernenc.pv.ade_data``).

    A set that yields no sentence is an error: it would turn decontamination off without a word.
    """
    path = Path(path)
    if path.is_dir():
        if folder_reader is None:
            raise ValueError(
                f"decontamination set {path} is a folder; pass a JSONL, CSV, parquet or text file"
            )
        sentences = folder_reader(path)
        if not sentences:
            raise ValueError(f"decontamination folder {path} holds no sentences to decontaminate against")
        return sentences
    if not path.is_file():
        raise FileNotFoundError(f"decontamination set {path} does not exist")
    if path.suffix.lower() in TABLE_FORMATS:  # a non-UTF-8 file fails naming its line
        rows = read_rows(path, [text_field], hint=" (choose one with --decontaminate-field)")
        sentences = [row[text_field] for row in rows if isinstance(row[text_field], str)]
    else:
        sentences = [line for line in read_lines(path) if line.strip()]
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
        self.longest = 0  # words in the longest indexed sentence
        self.num_sentences = 0
        self.num_ignored = 0
        for sentence in dict.fromkeys(sentences):  # de-duplicate, keep order
            w = tuple(words(sentence))
            if len(w) < min_words:
                self.num_ignored += 1
                continue
            self._index[w[: self.anchor]].append(w)
            self.longest = max(self.longest, len(w))
            self.num_sentences += 1

    def contains_eval_sentence(self, text: str) -> bool:
        return next(self.matches(text), None) is not None

    def matches(self, text: str) -> Iterator[tuple[str, ...]]:
        """The word sequence of each indexed sentence found in ``text``, in order of where it starts."""
        doc = words(text)
        for i in range(len(doc) - self.anchor + 1):
            for candidate in self._index.get(tuple(doc[i : i + self.anchor]), ()):
                if tuple(doc[i : i + len(candidate)]) == candidate:
                    yield candidate
