"""MLM masking statistics and special-token safety on real ModernBERT-tokenized Wikipedia text."""

import json

import numpy as np
import pytest

from modernenc.data.masking import MLMMasker, load_tokenizer
from modernenc.pv.bundled_data import shared_data_dir

TOKENIZER_DIR = shared_data_dir() / "tokenizers" / "modernbert"
WIKI_FILE = shared_data_dir() / "wikipedia_en" / "AA" / "wiki_00"
CLS, SEP, PAD, MASK, UNK = 50281, 50282, 50283, 50284, 50280


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(TOKENIZER_DIR)


@pytest.fixture(scope="module")
def wiki_sequences(tokenizer):
    """~40k tokens of real text as 512-token [CLS] ... [SEP] sequences."""
    text = WIKI_FILE.read_text(encoding="utf-8")[:200_000]
    ids = tokenizer.encode(text, add_special_tokens=False).ids[:40_000]
    return [np.array([CLS, *ids[i : i + 510], SEP]) for i in range(0, len(ids), 510)]


@pytest.fixture(scope="module")
def banned_ids():
    """Special and [unused*] ids read straight from tokenizer.json, independently of the code under test."""
    added = json.loads((TOKENIZER_DIR / "tokenizer.json").read_text())["added_tokens"]
    special = {t["id"] for t in added if t["special"]}
    unused = {t["id"] for t in added if t["content"].startswith("[unused")}
    assert {CLS, SEP, PAD, MASK, UNK} <= special and len(unused) == 83
    return special, unused


def _mask_all(masker, seqs):
    pairs = [masker(s, i) for i, s in enumerate(seqs)]
    return (
        np.concatenate(seqs),
        np.concatenate([m for m, _ in pairs]),
        np.concatenate([lab for _, lab in pairs]),
    )


@pytest.mark.parametrize("rate", [0.3, 0.15])
def test_rate_and_80_10_10_split(tokenizer, wiki_sequences, rate):
    masker = MLMMasker.from_tokenizer(tokenizer, mlm_probability=rate, seed=123)
    orig, masked, labels = _mask_all(masker, wiki_sequences)
    selected = labels != -100
    maskable = ~np.isin(orig, [CLS, SEP])
    n_sel = selected.sum()
    assert abs(n_sel / maskable.sum() - rate) < 0.01  # ~4 sigma for 40k tokens
    assert np.array_equal(labels[selected], orig[selected])
    assert np.array_equal(masked[~selected], orig[~selected])  # unselected positions untouched

    to_mask = (masked == MASK) & selected
    changed = (masked != orig) & (masked != MASK) & selected
    kept = (masked == orig) & selected
    assert abs(to_mask.sum() / n_sel - 0.8) < 0.025
    assert abs(changed.sum() / n_sel - 0.1) < 0.02
    assert abs(kept.sum() / n_sel - 0.1) < 0.02


def test_special_tokens_are_never_selected(tokenizer, banned_ids):
    special, _ = banned_ids
    masker = MLMMasker.from_tokenizer(tokenizer, mlm_probability=0.9, seed=0)
    specials = np.array(sorted(special))
    rng = np.random.default_rng(0)
    for i in range(200):
        body = rng.integers(100, 50000, size=30)
        seq = np.concatenate([[CLS], body, rng.choice(specials, size=10), body[:5], [SEP, PAD, PAD]])
        masked, labels = masker(seq, i)
        is_special = np.isin(seq, specials)
        assert (labels[is_special] == -100).all()
        assert np.array_equal(masked[is_special], seq[is_special])


def test_random_replacements_come_from_real_vocabulary(tokenizer, wiki_sequences, banned_ids):
    special, unused = banned_ids
    masker = MLMMasker.from_tokenizer(
        tokenizer, mlm_probability=0.5, mask_fraction=0.0, random_fraction=1.0, seed=7
    )
    orig, masked, labels = _mask_all(masker, wiki_sequences)
    replaced = masked[labels != -100]
    assert len(replaced) > 10_000
    assert not np.isin(replaced, list(special | unused)).any()
    assert replaced.min() >= 0 and replaced.max() < 50368
    # the draws cover the vocabulary broadly rather than a handful of ids
    assert len(np.unique(replaced)) > 5_000


def test_at_least_one_mask_per_nontrivial_sequence(tokenizer):
    masker = MLMMasker.from_tokenizer(tokenizer, mlm_probability=0.01, seed=0)
    for i in range(300):
        _, labels = masker(np.array([CLS, 1000 + i, SEP]), i)
        assert (labels != -100).sum() == 1 and labels[1] == 1000 + i
    _, labels = masker(np.array([CLS, SEP]), 0)
    assert (labels == -100).all()


def test_masks_depend_only_on_seed_and_sample_index(tokenizer, wiki_sequences):
    seq = wiki_sequences[0]
    a = MLMMasker.from_tokenizer(tokenizer, seed=1)
    b = MLMMasker.from_tokenizer(tokenizer, seed=1)
    assert all(np.array_equal(x, y) for x, y in zip(a(seq, 5), b(seq, 5), strict=True))
    assert not np.array_equal(a(seq, 5)[1], a(seq, 6)[1])
    assert not np.array_equal(a(seq, 5)[1], MLMMasker.from_tokenizer(tokenizer, seed=2)(seq, 5)[1])


def test_invalid_configuration_is_rejected(tokenizer):
    with pytest.raises(ValueError, match="mlm_probability"):
        MLMMasker.from_tokenizer(tokenizer, mlm_probability=0.0)
    with pytest.raises(ValueError, match="sum to at most 1"):
        MLMMasker.from_tokenizer(tokenizer, mask_fraction=0.8, random_fraction=0.3)
