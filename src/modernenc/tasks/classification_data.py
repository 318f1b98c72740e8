"""Labelled texts for sequence classification: read, map labels to ids, tokenize, pack into batches.

Sources are JSONL, CSV or parquet files, or a split of a Hugging Face dataset. Batches are packed
(unpadded): the texts of a batch sit back to back in one flat `input_ids`, described by `cu_seqlens`,
so the encoder spends nothing on padding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer
from torch.utils.data import Dataset, DistributedSampler

from modernenc.data.masking import load_tokenizer
from modernenc.data.packing import pack_sequences
from modernenc.model.config import IGNORE_INDEX
from modernenc.utils.tables import DataColumnError, missing_column, read_rows

COLUMN_HINT = " (choose others with data.text_column / data.label_column)"


def read_labelled_texts(
    source: str,
    text_column: str = "text",
    label_column: str = "label",
    dataset: str | None = None,
    dataset_config: str | None = None,
) -> tuple[list, list]:
    """Texts and labels from a file, or from split `source` of HF `dataset`.

    Sequence tasks get strings; token tasks get lists of words and of tags (a list of words per row), or
    texts and their lists of character spans (``tasks/spans.py``), returned as they are.
    """
    if dataset:
        import datasets

        from modernenc.utils.hub import offline_unless_reachable

        with offline_unless_reachable() as offline:
            try:
                rows = datasets.load_dataset(dataset, dataset_config, split=source)
            except Exception as err:  # hub errors come in many types (connection, not found, offline, split)
                hint = "; the Hugging Face Hub is unreachable, so only a cached copy loads" if offline else ""
                raise ValueError(
                    f"data.dataset={dataset!r} split {source!r} cannot be loaded ({type(err).__name__}: "
                    f"{' '.join(str(err).split())[:300]}){hint}"
                ) from None
        for column in (text_column, label_column):
            if column not in rows.column_names:
                raise missing_column(f"{dataset}[{source}]", column, rows.column_names, COLUMN_HINT)
    else:
        rows = read_rows(source, (text_column, label_column), COLUMN_HINT)
    texts = [row[text_column] for row in rows]
    labels = [row[label_column] for row in rows]
    if isinstance(texts[0], list):
        return texts, [[str(tag) for tag in tags] for tags in labels]
    if isinstance(labels[0], list):  # character spans per text: checked by tasks/spans.py
        return [str(t) for t in texts], labels
    return [str(t) for t in texts], [str(label) for label in labels]


def label_vocabulary(train_labels: Sequence, declared: Sequence[str] | None = None) -> list[str]:
    """Label values in class-id order: as declared, else the training data's values sorted (integers by
    value, so "2" before "10"; other labels alphabetically)."""
    values = train_labels
    if isinstance(train_labels[0], list):  # token tags
        values = [tag for tags in train_labels for tag in tags]
    integers = all(v.removeprefix("-").isdigit() for v in set(values))
    found = sorted(set(values), key=int if integers else None)
    if declared is None:
        return found
    declared = [str(v) for v in declared]
    unknown = sorted(set(found) - set(declared))
    if unknown:
        raise DataColumnError(f"training labels {unknown} are not in data.labels={declared}")
    return declared


def encode_labels(labels: Sequence[str], vocabulary: Sequence[str], origin: str) -> np.ndarray:
    index = {value: i for i, value in enumerate(vocabulary)}
    unknown = sorted(set(labels) - set(index))
    if unknown:
        raise DataColumnError(
            f"{origin} has labels {unknown} that training does not have; known labels: {list(vocabulary)}"
        )
    return np.array([index[v] for v in labels], dtype=np.int64)


@dataclass
class TokenizedTexts(Dataset):
    """Token ids (CLS ... SEP, truncated to `max_length`) and class ids, indexable for a DataLoader."""

    input_ids: list[np.ndarray]
    labels: np.ndarray | list[np.ndarray]  # a class id per text, or an array of ids per token
    num_truncated: int = 0

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> tuple[np.ndarray, Any]:
        label = self.labels[i]
        return self.input_ids[i], label if isinstance(label, np.ndarray) else int(label)


def tokenize_texts(
    tokenizer: Tokenizer, texts: Sequence[str], max_length: int, cls_id: int, sep_id: int
) -> tuple[list[list[int]], int]:
    """Ids ``[CLS] ... [SEP]`` per text, cut to ``max_length`` (keeping [SEP]), and how many were cut."""
    ids, cut = encode_texts(tokenizer, texts, max_length, cls_id, sep_id)
    return ids, sum(cut)


def encode_texts(
    tokenizer: Tokenizer, texts: Sequence[str], max_length: int, cls_id: int, sep_id: int
) -> tuple[list[list[int]], list[bool]]:
    """Ids ``[CLS] ... [SEP]`` per text, cut to ``max_length`` (keeping [SEP]), and whether each was cut."""
    if max_length < 2:
        raise ValueError(f"max_length must leave room for [CLS] and [SEP]; got {max_length}")
    tokenizer.no_padding()  # a caller's tokenizer may pad or truncate by itself; packing needs neither
    tokenizer.no_truncation()
    # ModernBERT's post-processor adds [CLS]/[SEP] itself; a tokenizer without one gets them here.
    adds_specials = tokenizer.encode("").ids == [cls_id, sep_id]
    encoded = tokenizer.encode_batch(list(texts), add_special_tokens=adds_specials)
    ids, cut = [], []
    for enc in encoded:
        body = enc.ids[1:-1] if adds_specials else enc.ids
        cut.append(len(body) > max_length - 2)
        ids.append([cls_id, *body[: max_length - 2], sep_id])
    return ids, cut


def tokenize_words(
    words: Sequence[Sequence[str]],
    tags: Sequence[Sequence[str]],
    vocabulary: list[str],
    tokenizer_path: str | Path,
    max_length: int,
) -> TokenizedTexts:
    """Token ids and per-token labels for pre-split words: each word's first sub-token carries its tag,
    the other sub-tokens and CLS/SEP get IGNORE_INDEX (ignored by the loss), as `transformers` token tasks
    do."""
    tokenizer = load_tokenizer(tokenizer_path)
    index = {tag: i for i, tag in enumerate(vocabulary)}
    # A space before every word but the first, so byte-level BPE tokenizes it as it would in running text.
    spaced = [[w if i == 0 else f" {w}" for i, w in enumerate(ws)] for ws in words]
    ids_out, labels_out, truncated = [], [], 0
    encodings = tokenizer.encode_batch(spaced, is_pretokenized=True)
    for row, (encoding, row_tags) in enumerate(zip(encodings, tags, strict=True)):
        if len(row_tags) != len(words[row]):
            raise DataColumnError(f"row {row}: {len(words[row])} words but {len(row_tags)} tags")
        unknown = sorted(set(row_tags) - set(index))
        if unknown:
            raise DataColumnError(f"row {row} has tags {unknown} that training does not have: {vocabulary}")
        labels, previous = [], None
        for word in encoding.word_ids:
            labels.append(IGNORE_INDEX if word is None or word == previous else index[row_tags[word]])
            previous = word
        ids, labels = np.asarray(encoding.ids, dtype=np.int64), np.asarray(labels, dtype=np.int64)
        if len(ids) > max_length:
            ids = np.concatenate([ids[: max_length - 1], ids[-1:]])
            labels = np.concatenate([labels[: max_length - 1], [IGNORE_INDEX]])
            truncated += 1
        ids_out.append(ids)
        labels_out.append(labels)
    return TokenizedTexts(ids_out, labels_out, truncated)


def collate_packed(examples: list[tuple[np.ndarray, Any]]) -> dict[str, Any]:
    """Pack (ids, label) pairs into one unpadded batch: one label per text, or per token for token tasks."""
    if isinstance(examples[0][1], np.ndarray):  # token labels travel packed, like the ids
        return pack_sequences(examples, capacity=sum(len(ids) for ids, _ in examples), with_labels=True)
    sequences = [(ids, None) for ids, _ in examples]
    batch = pack_sequences(sequences, capacity=sum(len(ids) for ids, _ in examples), with_labels=False)
    batch["labels"] = torch.tensor([label for _, label in examples], dtype=torch.long)
    return batch


def longest_first(lengths: Sequence[int]) -> np.ndarray:
    """Indices of `lengths` from the longest to the shortest, ties in input order."""
    return np.argsort(-np.asarray(lengths), kind="stable")


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Index batches of similar-length texts (longest first), for fast evaluation and prediction."""
    order = longest_first(lengths)
    return [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]


class RankBatches(DistributedSampler):
    """This rank's share of length-sorted batches, for evaluation under DDP: every example exactly once.

    ``DistributedSampler`` would repeat examples to even the ranks out, and a repeat counts twice in the
    metrics synced over ranks. Composer's evaluation also stops every rank when the first runs out of
    batches, so the examples are cut into a multiple of ``world_size`` batches (of at most ``batch_size``)
    and dealt round-robin: each rank gets the same number. A ``DistributedSampler`` so that composer
    accepts it for world_size > 1.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, world_size: int, rank: int) -> None:
        if len(lengths) < world_size:
            raise ValueError(f"{len(lengths)} evaluation examples cannot be shared by {world_size} ranks")
        per_rank = -(-len(lengths) // (batch_size * world_size))  # ceil
        batches = [chunk.tolist() for chunk in np.array_split(longest_first(lengths), per_rank * world_size)]
        super().__init__(batches, num_replicas=world_size, rank=rank, shuffle=False)  # type: ignore[arg-type]

    def __iter__(self):
        return iter(self.dataset[self.rank :: self.num_replicas])

    def __len__(self) -> int:
        return len(self.dataset[self.rank :: self.num_replicas])
