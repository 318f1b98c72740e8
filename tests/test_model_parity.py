"""Parity with `transformers`' own ModernBert, in both directions, on padded mixed-length batches.

The window is 16 tokens (8 per side) and the batch mixes lengths 9..200, so local and global layers both
matter, and every CPU attention backend's paths run; for the bucketed one: bucket grids with and without
padding (global layers), banded attention over the packed stream (local layers), the in-order grid of an
equal-length batch, and band-masked grids for local layers on short sequences. Every test runs once per
CPU backend (`cpu_backend`): eager, bucketed with its grids on sdpa's fused kernel and as the CPU's
explicit matmuls, and flex.
"""

from __future__ import annotations

import pytest
import torch
from conftest import padded_batch, small_hf_config, use_backend
from transformers import (
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

from modernenc import (
    ModernEncoderForMaskedLM,
    ModernEncoderForSequenceClassification,
    ModernEncoderForTokenClassification,
)

LENGTHS = [200, 57, 130, 9, 151]
TOLERANCE = 1e-4

TASKS = {
    "mlm": (AutoModelForMaskedLM, ModernEncoderForMaskedLM),
    "seq-cls": (AutoModelForSequenceClassification, ModernEncoderForSequenceClassification),
    "tok-cls": (AutoModelForTokenClassification, ModernEncoderForTokenClassification),
}


def max_diff_on_real_tokens(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    assert a.shape == b.shape
    if a.dim() == 3:  # per-token logits: compare non-pad positions only
        a, b = a[mask.bool()], b[mask.bool()]
    return float((a - b).abs().max())


@pytest.mark.parametrize("pooling", ["cls", "mean"])
@pytest.mark.parametrize("task", list(TASKS))
def test_hf_to_modernenc(task, pooling, tmp_path, cpu_backend):
    if task != "seq-cls" and pooling == "cls":
        pytest.skip("pooling only matters for sequence classification")
    auto_cls, our_cls = TASKS[task]
    hf = auto_cls.from_config(small_hf_config(classifier_pooling=pooling, num_labels=3)).eval()
    hf.save_pretrained(tmp_path)
    ours = use_backend(our_cls.from_pretrained(tmp_path).eval(), cpu_backend)
    ids, mask = padded_batch(LENGTHS)
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask).logits
        got = ours(input_ids=ids, attention_mask=mask).logits
    assert max_diff_on_real_tokens(expected, got, mask) < TOLERANCE


@pytest.mark.parametrize("task", list(TASKS))
def test_modernenc_to_hf(task, tmp_path, cpu_backend):
    auto_cls, our_cls = TASKS[task]
    hf_template = auto_cls.from_config(small_hf_config(classifier_pooling="mean", num_labels=3))
    hf_template.save_pretrained(tmp_path / "template")
    # Random weights of our own, so nothing of transformers' initialisation is carried over.
    ours = our_cls.from_pretrained(tmp_path / "template")
    with torch.no_grad():
        for p in ours.parameters():
            p.normal_(0.0, 0.05)
    use_backend(ours.eval(), cpu_backend)
    ours.save_pretrained(tmp_path / "ours")

    hf, info = auto_cls.from_pretrained(
        tmp_path / "ours", output_loading_info=True, attn_implementation="sdpa"
    )
    assert [list(info[k]) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")] == [[], [], []]
    assert type(hf).__name__ == ours.hf_architecture
    ids, mask = padded_batch(LENGTHS, seed=1)
    with torch.no_grad():
        expected = hf.eval()(input_ids=ids, attention_mask=mask).logits
        got = ours(input_ids=ids, attention_mask=mask).logits
    assert max_diff_on_real_tokens(expected, got, mask) < TOLERANCE


def test_hf_to_modernenc_fixed_length_batch(tmp_path, cpu_backend):
    """Equal lengths: the fused kernel takes the packed tokens as its grid in place, with no gather."""
    hf = AutoModelForMaskedLM.from_config(small_hf_config()).eval()
    hf.save_pretrained(tmp_path)
    ours = use_backend(ModernEncoderForMaskedLM.from_pretrained(tmp_path).eval(), cpu_backend)
    ids, mask = padded_batch([96, 96, 96])
    with torch.no_grad():
        diff = max_diff_on_real_tokens(
            hf(input_ids=ids, attention_mask=mask).logits, ours(ids, mask).logits, mask
        )
    assert diff < TOLERANCE


def test_hf_to_modernenc_short_sequences_just_over_the_window(tmp_path, cpu_backend):
    """Sequences a little longer than the window: local layers take band-masked bucket grids."""
    hf = AutoModelForMaskedLM.from_config(small_hf_config()).eval()
    hf.save_pretrained(tmp_path)
    ours = use_backend(ModernEncoderForMaskedLM.from_pretrained(tmp_path).eval(), cpu_backend)
    ids, mask = padded_batch([20, 12, 17, 9, 20])
    with torch.no_grad():
        diff = max_diff_on_real_tokens(
            hf(input_ids=ids, attention_mask=mask).logits, ours(ids, mask).logits, mask
        )
    assert diff < TOLERANCE


def test_parity_is_sensitive_to_the_local_window(tmp_path, cpu_backend):
    """Guards the parity tests: a wrong window must show up as a difference well above the tolerance."""
    hf = AutoModelForMaskedLM.from_config(small_hf_config()).eval()
    hf.save_pretrained(tmp_path)
    wrong = use_backend(
        ModernEncoderForMaskedLM.from_pretrained(tmp_path, local_attention=32).eval(), cpu_backend
    )
    ids, mask = padded_batch(LENGTHS)
    with torch.no_grad():
        diff = max_diff_on_real_tokens(
            hf(input_ids=ids, attention_mask=mask).logits, wrong(ids, mask).logits, mask
        )
    assert diff > 10 * TOLERANCE


def test_mlm_loss_matches_transformers_and_sparse_prediction(tmp_path, cpu_backend):
    hf = AutoModelForMaskedLM.from_config(small_hf_config()).eval()
    hf.save_pretrained(tmp_path)
    dense = use_backend(ModernEncoderForMaskedLM.from_pretrained(tmp_path).eval(), cpu_backend)
    sparse = ModernEncoderForMaskedLM.from_pretrained(tmp_path, sparse_prediction=True).eval()
    use_backend(sparse, cpu_backend)
    ids, mask = padded_batch(LENGTHS)
    labels = torch.full_like(ids, -100)
    chosen = (torch.rand(ids.shape) < 0.3) & mask.bool()
    labels[chosen] = ids[chosen]
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask, labels=labels).loss
        out_dense = dense(ids, mask, labels=labels)
        out_sparse = sparse(ids, mask, labels=labels)
    assert abs(float(expected - out_dense.loss)) < TOLERANCE
    assert abs(float(expected - out_sparse.loss)) < TOLERANCE
    assert out_dense.logits.shape == (*ids.shape, 512)
    assert out_sparse.logits.shape == (int(chosen.sum()), 512)
