"""Per-sequence MLM masking (BERT 80/10/10) with randomness derived from ``(seed, sample_index)``.

Seeding every sequence from its stream position (instead of one shared generator) makes masks independent
of worker count, buffering and restarts, which is what exact resume of the packed stream needs.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from modernenc.model.config import IGNORE_INDEX

DEFAULT_TRAIN_MLM_PROBABILITY = 0.3  # ModernBERT pre-training rate
DEFAULT_EVAL_MLM_PROBABILITY = 0.15
_UNUSED_RE = re.compile(r"^\[unused\d+\]$")


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load a ``tokenizers.Tokenizer`` from a ``tokenizer.json`` file or a directory holding one, with its
    padding and truncation turned off."""
    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"no tokenizer.json at {path}")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as err:  # the tokenizers library raises a bare Exception that names no file
        raise ValueError(f"{path} is not a tokenizers tokenizer.json: {err}") from None
    # A tokenizer.json may carry padding or truncation settings: they would pad packed sequences or cut
    # documents and sentences silently. Chunking and truncation here are explicit instead.
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def special_and_random_ids(tokenizer: Tokenizer) -> tuple[np.ndarray, np.ndarray]:
    """Split the vocabulary into ids that must never be masked and ids usable as random replacements.

    Special added tokens ([CLS], [SEP], [PAD], [MASK], [UNK], <|endoftext|>, ...) are never masked.
    Random replacements come from the real vocabulary only: specials and ``[unused*]`` slots are excluded,
    since the model never sees those in text and would learn nothing useful from them.
    """
    vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    special, unused = [], []
    for token_id, token in tokenizer.get_added_tokens_decoder().items():
        if _UNUSED_RE.match(token.content):
            unused.append(token_id)
        elif token.special:
            special.append(token_id)
    special_ids = np.array(sorted(special), dtype=np.int64)
    excluded = np.zeros(vocab_size, dtype=bool)
    excluded[special_ids] = True
    excluded[np.array(unused, dtype=np.int64)] = True
    return special_ids, np.flatnonzero(~excluded)


def mask_tokens(
    input_ids: np.ndarray,
    rng: np.random.Generator,
    *,
    mask_token_id: int,
    never_mask: np.ndarray,
    random_ids: np.ndarray,
    mlm_probability: float = DEFAULT_TRAIN_MLM_PROBABILITY,
    mask_fraction: float = 0.8,
    random_fraction: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(masked_ids, labels)``; labels hold the original id at selected positions, else -100.

    Each maskable position is selected with probability ``mlm_probability``; of the selected ones
    ``mask_fraction`` become [MASK], ``random_fraction`` a random real token, the rest stay unchanged.
    ``never_mask`` is a boolean lookup over the vocabulary. A sequence with any maskable token (anything
    longer than CLS+SEP) always gets at least one selection, so no packed document is label-free.
    """
    ids = np.asarray(input_ids, dtype=np.int64)
    maskable = ~never_mask[ids]
    selected = (rng.random(ids.shape) < mlm_probability) & maskable
    if not selected.any() and maskable.any():
        selected[rng.choice(np.flatnonzero(maskable))] = True

    labels = np.full_like(ids, IGNORE_INDEX)
    labels[selected] = ids[selected]
    masked = ids.copy()
    action = rng.random(ids.shape)
    to_mask = selected & (action < mask_fraction)
    to_random = selected & (action >= mask_fraction) & (action < mask_fraction + random_fraction)
    masked[to_mask] = mask_token_id
    masked[to_random] = rng.choice(random_ids, size=int(to_random.sum()))
    return masked, labels


class MLMMasker:
    """Callable ``(input_ids, sample_index) -> (masked_ids, labels)``; a ``SequencePacker`` transform."""

    def __init__(
        self,
        mask_token_id: int,
        special_ids: np.ndarray,
        random_ids: np.ndarray,
        vocab_size: int,
        mlm_probability: float = DEFAULT_TRAIN_MLM_PROBABILITY,
        seed: int = 0,
        mask_fraction: float = 0.8,
        random_fraction: float = 0.1,
    ) -> None:
        if not 0.0 < mlm_probability < 1.0:
            raise ValueError(f"mlm_probability must be in (0, 1), got {mlm_probability}")
        if mask_fraction < 0 or random_fraction < 0 or mask_fraction + random_fraction > 1:
            raise ValueError("mask_fraction and random_fraction must be >= 0 and sum to at most 1")
        self.mask_token_id = mask_token_id
        self.never_mask = np.zeros(vocab_size, dtype=bool)
        self.never_mask[np.asarray(special_ids, dtype=np.int64)] = True
        self.random_ids = np.asarray(random_ids, dtype=np.int64)
        if self.never_mask[self.random_ids].any():
            raise ValueError("random replacement ids must not include special tokens")
        self.mlm_probability = mlm_probability
        self.seed = seed
        self.mask_fraction = mask_fraction
        self.random_fraction = random_fraction

    @classmethod
    def from_tokenizer(cls, tokenizer: Tokenizer | str | Path, **kwargs) -> MLMMasker:
        tok = tokenizer if isinstance(tokenizer, Tokenizer) else load_tokenizer(tokenizer)
        mask_id = tok.token_to_id("[MASK]")
        if mask_id is None:
            raise ValueError("tokenizer has no [MASK] token")
        special_ids, random_ids = special_and_random_ids(tok)
        return cls(mask_id, special_ids, random_ids, tok.get_vocab_size(with_added_tokens=True), **kwargs)

    def __call__(self, input_ids: np.ndarray, sample_index: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, sample_index])
        return mask_tokens(
            input_ids,
            rng,
            mask_token_id=self.mask_token_id,
            never_mask=self.never_mask,
            random_ids=self.random_ids,
            mlm_probability=self.mlm_probability,
            mask_fraction=self.mask_fraction,
            random_fraction=self.random_fraction,
        )
