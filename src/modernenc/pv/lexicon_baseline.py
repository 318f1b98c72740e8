"""A lexicon baseline for ADE span extraction: every drug and effect mention seen in training, matched back.

Mentions are compared as sequences of lowercased word pieces (runs of letters and digits, or single other
characters), so matches start and end at word boundaries ("azithromycin" matches in
"azithromycin-induced", not inside "clarithromycin"). Scanning left to right, the longest entry that
matches at a position wins, and matching resumes after it. A mention seen under both labels takes the one
seen more often (DRUG on a tie). This is the floor a tagger must beat: it knows only what training named.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

PIECES = re.compile(r"[^\W_]+|\S", re.UNICODE)  # word pieces: letter/digit runs, or one other character


def pieces(text: str) -> list[tuple[str, int, int]]:
    """(lowercased piece, start, end) for each word piece of ``text``."""
    return [(m.group().lower(), m.start(), m.end()) for m in PIECES.finditer(text)]


class Lexicon:
    """Training mentions, as piece tuples, with the label each was seen under most."""

    def __init__(self, mentions: Iterable[tuple[str, str]]) -> None:
        seen: dict[tuple[str, ...], Counter] = defaultdict(Counter)
        for text, label in mentions:
            key = tuple(p for p, _, _ in pieces(text))
            if key:
                seen[key][label] += 1
        # Most frequent label; ties go to the alphabetically first (DRUG before EFFECT).
        self.entries = {key: min(c, key=lambda label: (-c[label], label)) for key, c in seen.items()}
        # Entry lengths by first piece, longest first: a position tries only lengths that can match.
        lengths: dict[str, set[int]] = defaultdict(set)
        for key in self.entries:
            lengths[key[0]].add(len(key))
        self.lengths = {first: sorted(n, reverse=True) for first, n in lengths.items()}

    @classmethod
    def from_rows(cls, rows: Iterable[dict]) -> Lexicon:
        """From span rows ``{"text", "spans": [{"start", "end", "label"}]}``."""
        return cls((row["text"][s["start"] : s["end"]], s["label"]) for row in rows for s in row["spans"])

    def __len__(self) -> int:
        return len(self.entries)

    def match(self, text: str) -> list[dict[str, object]]:
        """Longest-match spans ``{start, end, label, text}`` of ``text``, left to right, non-overlapping."""
        found, toks, i = [], pieces(text), 0
        while i < len(toks):
            for n in self.lengths.get(toks[i][0], ()):
                label = self.entries.get(tuple(t for t, _, _ in toks[i : i + n]))
                if label is not None:
                    start, end = toks[i][1], toks[i + n - 1][2]
                    found.append({"start": start, "end": end, "label": label, "text": text[start:end]})
                    i += n
                    break
            else:
                i += 1
        return found

    def extract(self, texts: Sequence[str]) -> list[list[dict[str, object]]]:
        return [self.match(text) for text in texts]
