"""Batch-size warmup schedule checked against hand-computed values."""

import pytest

from modernenc.data.batch_size_warmup import BatchSizeWarmup, batch_size_at, split_global_batch

B = 1_000_000_000


def test_modernbert_base_schedule_by_hand():
    # 768 -> 4608 in steps of 768: stages 768, 1536, 2304, 3072, 3840, each held 50B / 5 = 10B tokens.
    kw = dict(min_batch_size=768, max_batch_size=4608, warmup_tokens=50 * B, increment=768)
    expected = {
        0: 768,
        10 * B - 1: 768,
        10 * B: 1536,
        25 * B: 2304,
        30 * B: 3072,
        49 * B: 3840,
        50 * B - 1: 3840,
        50 * B: 4608,
        2000 * B: 4608,
    }
    for tokens, size in expected.items():
        assert batch_size_at(tokens, **kw) == size, tokens


def test_uneven_token_budget_uses_exact_integer_boundaries():
    # 3 stages over 10 tokens: boundaries at 10/3 and 20/3 -> sizes switch at tokens 4 and 7.
    kw = dict(min_batch_size=2, max_batch_size=8, warmup_tokens=10, increment=2)
    assert [batch_size_at(t, **kw) for t in range(12)] == [2, 2, 2, 2, 4, 4, 4, 6, 6, 6, 8, 8]


def test_no_warmup_cases():
    assert batch_size_at(0, min_batch_size=64, max_batch_size=64, warmup_tokens=100, increment=32) == 64
    assert batch_size_at(0, min_batch_size=32, max_batch_size=64, warmup_tokens=0, increment=32) == 64


def test_sizes_must_be_multiples_of_increment():
    with pytest.raises(ValueError, match="multiples of the increment 48"):
        batch_size_at(0, min_batch_size=64, max_batch_size=480, warmup_tokens=10, increment=48)
    with pytest.raises(ValueError, match="exceeds"):
        batch_size_at(0, min_batch_size=64, max_batch_size=32, warmup_tokens=10, increment=32)


def test_split_across_ranks_and_accumulation():
    # 4608 sequences on 8 GPUs with micro-batches of 16: 576 per rank = 36 accumulation steps.
    assert split_global_batch(4608, world_size=8, micro_batch_size=16) == (576, 36)
    with pytest.raises(ValueError, match="not a multiple"):
        split_global_batch(100, world_size=8, micro_batch_size=16)


def test_tracker_with_gradient_accumulation_and_ranks():
    # 2 ranks x micro-batch 4 -> increment 8; 16 -> 48 in 4 stages over 1000 tokens (250 each).
    w = BatchSizeWarmup(
        min_batch_size=16, max_batch_size=48, warmup_tokens=1000, micro_batch_size=4, world_size=2
    )
    seq_len = 10
    history = []
    for _ in range(8):
        gb = w.global_batch_size
        history.append((gb, w.per_rank_batch_size, w.grad_accum_steps))
        w.step(gb * seq_len)  # every rank adds the same global count
    # tokens before each step: 0, 160, 320, 560, 880, 1280, 1760, 2240 -> stages 0,0,1,2,3,max,...
    assert history == [
        (16, 8, 2),
        (16, 8, 2),
        (24, 12, 3),
        (32, 16, 4),
        (40, 20, 5),
        (48, 24, 6),
        (48, 24, 6),
        (48, 24, 6),
    ]
    restored = BatchSizeWarmup(16, 48, 1000, micro_batch_size=4, world_size=2)
    restored.load_state_dict(w.state_dict())
    assert restored.tokens_seen == 1280 + 3 * 480 and restored.global_batch_size == 48
