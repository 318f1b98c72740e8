"""Packing invariants, hand-computed examples and exact resume of the best-fit packer."""

import numpy as np
import pytest
import torch

from modernenc.data.packing import IGNORE_INDEX, SequencePacker, pack_sequences

PAD = 50283


def _seq(start: int, n: int) -> np.ndarray:
    return np.arange(start, start + n, dtype=np.int64)


def _unique_sequences(lengths: list[int]) -> list[np.ndarray]:
    """Sequences whose tokens are globally unique ids 0..sum(lengths)-1 so each can be traced."""
    out, start = [], 0
    for n in lengths:
        out.append(_seq(start, n))
        start += n
    return out


def test_hand_computed_best_fit_example():
    # capacity 10, lengths A=4 B=7 C=3 D=2 E=5, all buffered at once.
    # batch 1: best fit 7 (B), then 3 (C) -> full. batch 2: 5 (E), then 4 (A), 1 slot of padding.
    # batch 3: 2 (D) + 8 padding. Efficiencies 10/10, 9/10, 2/10; running (10+9+2)/30 = 0.7.
    a, b, c, d, e = _seq(100, 4), _seq(200, 7), _seq(300, 3), _seq(400, 2), _seq(500, 5)
    packer = SequencePacker([a, b, c, d, e], capacity=10, buffer_size=10, pad_token_id=PAD)
    batches = list(packer)
    assert len(batches) == 3

    b1, b2, b3 = batches
    assert b1["input_ids"].tolist() == [200, 201, 202, 203, 204, 205, 206, 300, 301, 302]
    assert b1["cu_seqlens"].tolist() == [0, 7, 10]
    assert b1["max_seqlen"] == 7
    assert b1["packing_efficiency"] == 1.0

    assert b2["input_ids"].tolist() == [500, 501, 502, 503, 504, 100, 101, 102, 103, PAD]
    assert b2["cu_seqlens"].tolist() == [0, 5, 9, 10]
    assert b2["position_ids"].tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3, 0]
    assert b2["num_real_tokens"] == 9
    assert b2["packing_efficiency"] == pytest.approx(0.9)

    assert b3["input_ids"].tolist() == [400, 401] + [PAD] * 8
    assert b3["cu_seqlens"].tolist() == [0, 2, 10]
    assert b3["max_seqlen"] == 8  # the padding segment is the longest here
    assert b3["position_ids"].tolist() == [0, 1, 0, 1, 2, 3, 4, 5, 6, 7]
    assert packer.efficiency == pytest.approx(0.7)
    assert packer.samples_consumed == 5


def test_equal_lengths_are_taken_oldest_first():
    seqs = [_seq(10 * i, 5) for i in range(4)]
    batches = list(SequencePacker(seqs, capacity=10, buffer_size=4))
    assert batches[0]["input_ids"].tolist() == list(range(0, 5)) + list(range(10, 15))
    assert batches[1]["input_ids"].tolist() == list(range(20, 25)) + list(range(30, 35))


def test_output_dtypes_and_shapes():
    batch = pack_sequences([(_seq(0, 3), None)], capacity=8)
    assert batch["input_ids"].dtype == torch.long and batch["input_ids"].shape == (8,)
    assert batch["position_ids"].dtype == torch.long and batch["position_ids"].shape == (8,)
    assert batch["cu_seqlens"].dtype == torch.int32
    assert isinstance(batch["max_seqlen"], int)
    assert "labels" not in batch


def _check_invariants(batch: dict, capacity: int) -> None:
    ids, pos, cu = batch["input_ids"], batch["position_ids"], batch["cu_seqlens"].tolist()
    assert ids.shape == (capacity,) and pos.shape == (capacity,)
    assert cu[0] == 0 and cu[-1] == capacity
    assert all(lo < hi for lo, hi in zip(cu[:-1], cu[1:], strict=True)), "empty segment"
    # position_ids restart exactly at segment starts and count up inside a segment.
    starts = set(cu[:-1])
    for i in range(capacity):
        assert (pos[i].item() == 0) == (i in starts)
        if i not in starts:
            assert pos[i].item() == pos[i - 1].item() + 1
    assert batch["max_seqlen"] == max(hi - lo for lo, hi in zip(cu[:-1], cu[1:], strict=True))
    real = int((ids != PAD).sum())
    assert batch["num_real_tokens"] == real
    assert batch["packing_efficiency"] == pytest.approx(real / capacity)
    if real < capacity:  # padding is exactly the final segment
        assert (ids[cu[-2] :] == PAD).all() and (ids[: cu[-2]] != PAD).all()


def test_random_stream_invariants_every_token_exactly_once():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 65, size=400).tolist()
    capacity = 128
    seqs = _unique_sequences(lengths)
    packer = SequencePacker(iter(seqs), capacity=capacity, buffer_size=32)
    seen = []
    for batch in packer:
        _check_invariants(batch, capacity)
        cu = batch["cu_seqlens"].tolist()
        # each real segment is one source sequence, intact and in order
        for lo, hi in zip(cu[:-1], cu[1:], strict=True):
            seg = batch["input_ids"][lo:hi]
            if seg[0] != PAD:
                assert torch.equal(seg, torch.arange(seg[0].item(), seg[0].item() + hi - lo))
        seen.append(batch["input_ids"][batch["input_ids"] != PAD])
    seen = torch.cat(seen).sort().values
    assert torch.equal(seen, torch.arange(sum(lengths)))
    assert packer.real_tokens == sum(lengths)
    assert packer.efficiency == pytest.approx(sum(lengths) / packer.total_slots)


def test_labels_are_carried_and_padding_is_ignored():
    ids = [_seq(0, 3), _seq(10, 4)]
    labels = [np.array([-100, 7, -100]), np.array([-100, -100, 9, -100])]
    (batch,) = list(SequencePacker(list(zip(ids, labels, strict=True)), capacity=9, buffer_size=4))
    # longest first: the 4-token sequence, then the 3-token one, then 2 padding slots
    assert batch["labels"].tolist() == [-100, -100, 9, -100, -100, 7, -100, IGNORE_INDEX, IGNORE_INDEX]


def test_exactly_capacity_fits_and_longer_is_a_clear_error():
    (batch,) = list(SequencePacker([_seq(0, 16)], capacity=16))
    assert batch["cu_seqlens"].tolist() == [0, 16] and batch["packing_efficiency"] == 1.0
    with pytest.raises(ValueError, match="17 tokens, more than the micro-batch capacity of 16"):
        list(SequencePacker([_seq(0, 17)], capacity=16))


def test_empty_sequence_is_rejected():
    with pytest.raises(ValueError, match="empty"):
        list(SequencePacker([_seq(0, 3), np.array([], dtype=np.int64)], capacity=16))


def test_drop_last_drops_only_the_partial_tail():
    seqs = [_seq(0, 8), _seq(8, 8), _seq(16, 3)]
    assert len(list(SequencePacker(seqs, capacity=8))) == 3
    assert len(list(SequencePacker(seqs, capacity=8, drop_last=True))) == 2


def _fake_mask(ids: np.ndarray, index: int) -> tuple[np.ndarray, np.ndarray]:
    # Depends on the sample index only, like MLMMasker, so resume must reproduce it.
    rng = np.random.default_rng(index)
    labels = np.where(rng.random(len(ids)) < 0.3, ids, -100)
    return ids, labels


class RecordingSource:
    """A seekable source that records which samples were actually read."""

    def __init__(self, seqs):
        self.seqs, self.read = seqs, []

    def iter_from(self, start):
        for i in range(start, len(self.seqs)):
            self.read.append(i)
            yield self.seqs[i]


@pytest.mark.parametrize("stop_after", [1, 4, 9])
def test_exact_resume_matches_uninterrupted_run(stop_after, tmp_path):
    rng = np.random.default_rng(1)
    seqs = _unique_sequences(rng.integers(2, 100, size=300).tolist())
    kwargs = dict(capacity=256, buffer_size=24, transform=_fake_mask)

    reference = list(SequencePacker(RecordingSource(seqs), **kwargs))

    first = SequencePacker(RecordingSource(seqs), **kwargs)
    it = iter(first)
    head = [next(it) for _ in range(stop_after)]
    consumed = first.samples_consumed
    torch.save(first.state_dict(), tmp_path / "packer.pt")
    del first, it

    source = RecordingSource(seqs)
    resumed = SequencePacker(source, **kwargs)
    resumed.load_state_dict(torch.load(tmp_path / "packer.pt", weights_only=True))
    tail = list(resumed)

    assert source.read[0] == consumed, "resume re-read already consumed samples"
    assert len(head) + len(tail) == len(reference)
    for got, want in zip(head + tail, reference, strict=True):
        for key in ("input_ids", "labels", "position_ids", "cu_seqlens"):
            assert torch.equal(got[key], want[key])
        assert got["max_seqlen"] == want["max_seqlen"]
    assert resumed.efficiency == pytest.approx(
        sum(b["num_real_tokens"] for b in reference) / (256 * len(reference))
    )


def test_resume_on_plain_iterable_skips_consumed_samples():
    seqs = _unique_sequences([5, 9, 3, 7, 2, 8, 6, 4, 1, 9, 9])
    reference = list(SequencePacker(seqs, capacity=12, buffer_size=3))
    first = SequencePacker(seqs, capacity=12, buffer_size=3)
    it = iter(first)
    head = [next(it), next(it)]
    resumed = SequencePacker(seqs, capacity=12, buffer_size=3)
    resumed.load_state_dict(first.state_dict())
    got = head + list(resumed)
    assert [b["input_ids"].tolist() for b in got] == [b["input_ids"].tolist() for b in reference]


def test_resume_with_different_capacity_is_refused():
    packer = SequencePacker([_seq(0, 4)], capacity=8)
    state = packer.state_dict()
    with pytest.raises(ValueError, match="8 tokens per micro-batch"):
        SequencePacker([_seq(0, 4)], capacity=16).load_state_dict(state)
