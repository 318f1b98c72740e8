"""Prove that no held-out sentence reached pre-training: search the shards' decoded text for each one.

Decontamination (`data.decontaminate`) filters documents on the way in; this check reads what was actually
written, so it also covers corpora prepared without it, text added by hand, and a tokenizer or chunking
that changed the text. Each sample's token ids are decoded with the corpus' tokenizer and matched on
lower-cased word sequences, as decontamination matches:

- a held-out sentence of at least `min_words` words is a leak when it occurs inside a sample or across
  consecutive samples (prepare-data writes a long document's chunks one after the other, so a sentence
  cut by chunk boundaries is still found);
- a shorter one is a leak only when it is a whole sample (sentence-level corpora, e.g. task-adaptive
  MLM text): short fragments such as "Case report." occur in countless unrelated documents.

Shards are read in place and never modified: compressed shards are decompressed in memory.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer
from tqdm.auto import tqdm

from modernenc.data.decontaminate import WORD_RE, Decontaminator, words


@dataclass(frozen=True)
class Leak:
    folder: Path
    sample: int  # index in the folder's sample order: the sample where the sentence ends
    sentence: str
    whole_sample: bool  # the sample is the sentence, rather than containing it


@dataclass
class LeakReport:
    sentences: int = 0  # distinct held-out sentences searched for
    short_sentences: int = 0  # of which matched only as whole samples
    samples: dict[str, int] = field(default_factory=dict)  # per shard folder
    leaks: list[Leak] = field(default_factory=list)

    def format(self) -> str:
        scanned = ", ".join(f"{folder} {n:,}" for folder, n in self.samples.items())
        lines = [
            f"searched {sum(self.samples.values()):,} samples ({scanned}) for {self.sentences:,} held-out "
            f"sentences ({self.short_sentences:,} shorter ones as whole samples only)"
        ]
        if not self.leaks:
            lines.append("no held-out sentence found in any shard")
        for leak in self.leaks[:10]:
            where = "is" if leak.whole_sample else "contains"
            lines.append(f"LEAK: {leak.folder} sample {leak.sample:,} {where} {leak.sentence[:100]!r}")
        if len(self.leaks) > 10:
            lines.append(f"... and {len(self.leaks) - 10:,} more")
        return "\n".join(lines)


def shard_folders(path: str | Path) -> list[Path]:
    """The MDS folders under `path`: itself when it holds an index.json, else its prepared splits."""
    path = Path(path)
    if (path / "index.json").is_file():
        return [path]
    found = sorted(p.parent for p in path.glob("*/index.json"))
    if not found:
        raise FileNotFoundError(f"{path} holds no MDS shards (no index.json in it or in its sub-folders)")
    return found


def iter_samples(folder: str | Path) -> Iterator[np.ndarray]:
    """Every sample's `input_ids` of a local MDS folder, in index order, without writing to the folder."""
    from streaming.base.compression import decompress
    from streaming.base.format import reader_from_json

    folder = Path(folder)
    index = json.loads((folder / "index.json").read_text())
    for entry in index["shards"]:
        reader = reader_from_json(str(folder.parent), folder.name, entry)
        raw, packed = entry.get("raw_data"), entry.get("zip_data")
        if raw and (folder / raw["basename"]).is_file():
            data = (folder / raw["basename"]).read_bytes()
        elif packed:
            data = decompress(entry["compression"], (folder / packed["basename"]).read_bytes())
        else:
            raise FileNotFoundError(f"shard {entry} listed in {folder / 'index.json'} is missing")
        # MDS layout: sample count (uint32), then count + 1 uint32 offsets, then the samples.
        count = int(np.frombuffer(data[:4], np.uint32)[0])
        offsets = np.frombuffer(data[4 : 8 + 4 * count], np.uint32)
        for begin, end in zip(offsets[:-1], offsets[1:], strict=True):
            yield np.asarray(reader.decode_sample(data[begin:end])["input_ids"], dtype=np.int64)


def find_leaks(
    folders: list[str | Path],
    sentences: list[str],
    tokenizer: Tokenizer,
    min_words: int = 6,
    progress: bool = True,
) -> LeakReport:
    """Search every sample of every folder for `sentences`; each sentence found is reported once per
    folder, at the first sample where it ends. See the module docstring for the rules."""
    unique = list(dict.fromkeys(s for s in sentences if words(s)))
    contained = Decontaminator(unique, min_words=min_words)
    by_words = {tuple(words(s)): s for s in unique}
    report = LeakReport(sentences=len(unique), short_sentences=contained.num_ignored)
    for folder in folders:
        folder = Path(folder)
        count, tail, found = 0, "", set()
        bar = tqdm(desc=f"checking {folder}", unit="sample", disable=not progress, mininterval=1.0)
        for texts in _decoded_batches(folder, tokenizer):
            for text in texts:
                hits = [(by_words[w], False) for w in contained.matches(tail + text)]
                whole = by_words.get(tuple(words(text)))
                hits += [(whole, True)] if whole is not None else []
                for sentence, whole_sample in hits:
                    if sentence not in found:
                        found.add(sentence)
                        report.leaks.append(Leak(folder, count, sentence, whole_sample))
                # A long document's chunks follow each other and are cut at token boundaries: the next
                # chunk's text continues this one's. Keep enough of it to hold the longest sentence.
                tail = _last_words(tail + text, contained.longest)
                count += 1
            bar.update(len(texts))
        bar.close()
        report.samples[str(folder)] = count
    return report


def _last_words(text: str, n: int) -> str:
    """The shortest suffix of `text` that holds its last `n` words (all of it when it has fewer)."""
    if n == 0:
        return ""
    starts = [m.start() for m in WORD_RE.finditer(text)]
    return text[starts[-n] :] if len(starts) > n else text


def _decoded_batches(folder: Path, tokenizer: Tokenizer, size: int = 1024) -> Iterator[list[str]]:
    """The samples' text (special tokens dropped), a batch at a time: decoding runs in Rust, in bulk."""
    vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    batch: list[list[int]] = []
    for index, ids in enumerate(iter_samples(folder)):
        if len(ids) and int(ids.max()) >= vocab_size:  # the decoder would drop such ids without a word
            raise ValueError(
                f"sample {index:,} of {folder} holds token id {int(ids.max())}, beyond the tokenizer's "
                f"{vocab_size:,} ids: the shards were prepared with another tokenizer; pass that one"
            )
        batch.append(ids.tolist())
        if len(batch) == size:
            yield tokenizer.decode_batch(batch, skip_special_tokens=True)
            batch = []
    if batch:
        yield tokenizer.decode_batch(batch, skip_special_tokens=True)
