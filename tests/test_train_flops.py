"""MFU's FLOP count against hand-computed values and a brute-force count of attention pairs."""

from __future__ import annotations

import pytest
import torch

from modernenc.model.config import ModernEncoderConfig
from modernenc.train.flops import model_flops, training_flops, window_pairs


@pytest.mark.parametrize("length", [1, 2, 3, 4, 5, 10, 37])
def test_window_pairs_counts_every_visible_key(length):
    window = 2
    brute = sum(1 for q in range(length) for k in range(length) if abs(q - k) <= window)
    assert window_pairs(length, window) == brute


def tiny_config() -> ModernEncoderConfig:
    # 3 layers: global at 0, sliding window of 4 (2 each side) at 1 and 2.
    return ModernEncoderConfig(
        vocab_size=16,
        hidden_size=8,
        intermediate_size=8,
        num_hidden_layers=3,
        num_attention_heads=2,
        local_attention=4,
        global_attn_every_n_layers=3,
        pad_token_id=0,
        cls_token_id=1,
        sep_token_id=2,
        mask_token_id=3,
    )


def test_model_flops_by_hand():
    # Documents of 3 and 10 tokens, 4 MLM labels, 100 encoder parameters:
    #   6 * 100 * 13                                   =  7,800  parameters
    #   12 * 8 * (global 9 + 100, local 2 * (9 + 44))  = 20,640  attention (44: 10 queries, <= 5 keys each)
    #   6 * (8 * 8 + 8 * 16) * 4                       =  4,608  MLM head on predicted tokens
    assert model_flops(tiny_config(), 100, [3, 10], 4) == 7_800 + 20_640 + 4_608


def test_training_flops_reads_packed_micro_batches():
    labels = torch.full((16,), -100)
    labels[[0, 5, 9, 12]] = 7
    micro = {  # two documents (3 + 10 tokens) and a 3-token padding tail
        "cu_seqlens": torch.tensor([0, 3, 13, 16], dtype=torch.int32),
        "num_sequences": 2,
        "labels": labels,
    }
    assert training_flops(tiny_config(), 100, [micro, micro]) == 2 * model_flops(
        tiny_config(), 100, [3, 10], 4
    )
