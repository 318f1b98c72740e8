"""StreamingDataset wrapper: coverage, seeded shuffle, masked+packed exact resume, shard errors."""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from modernenc.data.corpus import iter_documents
from modernenc.data.masking import load_tokenizer
from modernenc.data.mds import write_mds_corpus
from modernenc.data.streaming_dataset import (
    PackedStreamingDataset,
    ShardReadError,
    TokenStreamingDataset,
    UnknownTokenIdError,
    build_packed_mlm_stream,
)
from modernenc.pv.bundled_data import shared_data_dir

DATA = shared_data_dir()
TOKENIZER = DATA / "tokenizers" / "modernbert"
PAD = 50283


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, list[tuple[int, ...]]]:
    """~100 PubMed abstracts in 128-token chunks over several small shards, plus the chunks in write order."""
    root = tmp_path_factory.mktemp("corpus")
    src = root / "docs.jsonl"
    src.write_text("".join((DATA / "pubmed" / "pubmed_002.jsonl").open().readlines()[:100]))
    out = root / "mds"
    tok = load_tokenizer(TOKENIZER)
    write_mds_corpus(iter_documents([src]), tok, out, max_length=128, shard_size_limit="4kb", progress=False)
    # Independent truth: tokenize again here and chunk by hand.
    chunks = []
    for line in src.read_text().splitlines():
        ids = tok.encode(json.loads(line)["text"], add_special_tokens=False).ids
        chunks += [(50281, *ids[i : i + 126], 50282) for i in range(0, len(ids), 126)]
    return out, chunks


@pytest.fixture
def mds_dir(corpus, tmp_path) -> Path:
    # StreamingDataset refuses two live datasets on one folder; a private copy per test avoids that.
    dst = tmp_path / "mds"
    shutil.copytree(corpus[0], dst)
    return dst


def segments(batch: dict) -> list[tuple[int, ...]]:
    cu = batch["cu_seqlens"].tolist()
    ids = batch["input_ids"].tolist()
    return [tuple(ids[a:b]) for a, b in zip(cu[:-1], cu[1:], strict=True) if ids[a] != PAD]


def stream(mds_dir: Path, **kw) -> PackedStreamingDataset:
    kw = {"tokenizer": TOKENIZER, "capacity": 512, "buffer_size": 16, "split": "train", **kw}
    return build_packed_mlm_stream(mds_dir, **kw)


def test_epoch_yields_every_chunk_exactly_once(corpus, mds_dir):
    ds = TokenStreamingDataset(mds_dir, split="train", shuffle=True, shuffle_seed=3)
    packed = PackedStreamingDataset(ds, capacity=512, buffer_size=16)
    got = [seg for b in packed for seg in segments(b)]
    assert len(corpus[1]) > 200
    assert sorted(got) == sorted(corpus[1])
    assert packed.efficiency > 0.9


def test_iterating_again_starts_the_next_epoch(corpus, mds_dir):
    # Composer iterates the train stream once per epoch; continuing the finished position instead would
    # give empty epochs forever. Each new pass is a whole epoch in that epoch's order, even after a
    # partial one (as on a rank whose epoch composer ended early because another rank ran out).
    packed = PackedStreamingDataset(TokenStreamingDataset(mds_dir, split="train", shuffle_seed=3), 512, 16)
    epoch0 = [seg for b in packed for seg in segments(b)]
    it = iter(packed)
    epoch1_head = [seg for _ in range(3) for seg in segments(next(it))]
    del it
    epoch2 = [seg for b in packed for seg in segments(b)]
    assert sorted(epoch0) == sorted(epoch2) == sorted(corpus[1])
    assert epoch0 != epoch2 and epoch1_head != epoch0[: len(epoch1_head)] != epoch2[: len(epoch1_head)]


def test_shuffle_is_seeded(corpus, tmp_path):
    def order(seed, shuffle=True, name="x"):
        shutil.copytree(corpus[0], tmp_path / name)
        ds = TokenStreamingDataset(tmp_path / name, split="train", shuffle=shuffle, shuffle_seed=seed)
        out = [tuple(x.tolist()) for x in ds]
        del ds
        return out

    unshuffled = order(0, shuffle=False, name="a")
    assert unshuffled == corpus[1]  # write order when not shuffled
    first, again, other = order(1, name="b"), order(1, name="c"), order(2, name="d")
    assert first == again
    assert first != other and first != unshuffled
    assert sorted(first) == sorted(unshuffled)


@pytest.mark.parametrize("stop_after", [2, 5])
def test_masked_packed_stream_resumes_exactly(mds_dir, tmp_path, stop_after):
    reference = list(stream(mds_dir))
    assert len(reference) > stop_after + 3

    first = stream(mds_dir)
    it = iter(first)
    head = [next(it) for _ in range(stop_after)]
    torch.save(first.state_dict(), tmp_path / "state.pt")
    del it, first

    resumed = stream(mds_dir)
    resumed.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    tail = list(resumed)
    assert len(head) + len(tail) == len(reference)
    for got, want in zip(head + tail, reference, strict=True):
        for key in ("input_ids", "labels", "position_ids", "cu_seqlens"):
            assert torch.equal(got[key], want[key]), key
    labels = torch.cat([b["labels"] for b in reference])
    assert (labels != -100).float().mean() > 0.2  # masking really happened at ~30% of real tokens


def test_resume_skips_consumed_shards_without_reading_them(mds_dir, corpus):
    first = stream(mds_dir, shuffle=False)
    it = iter(first)
    for _ in range(10):
        next(it)
    state = first.state_dict()
    del it, first
    consumed = state["ranks"][0]["samples_consumed"]

    # Delete every shard whose samples were all consumed before the checkpoint: a resume that re-read
    # consumed data would now fail on a missing shard.
    index = json.loads((mds_dir / "train" / "index.json").read_text())
    start, removed = 0, 0
    for shard in index["shards"]:
        if start + shard["samples"] <= consumed:
            (mds_dir / "train" / shard["zip_data"]["basename"]).unlink()
            removed += 1
        start += shard["samples"]
    assert removed >= 2

    resumed = stream(mds_dir, shuffle=False, check_local_shards=False)
    resumed.load_state_dict(state)
    tail = [seg for b in resumed for seg in segments(b)]
    buffered = state["ranks"][0]["buffer_lengths"].numel()
    assert len(tail) == len(corpus[1]) - consumed + buffered


def test_worker_processes_give_the_same_stream(mds_dir):
    single = [b["input_ids"] for b in stream(mds_dir, num_workers=0)]
    multi = [b["input_ids"] for b in stream(mds_dir, num_workers=2)]
    assert len(single) == len(multi) and all(torch.equal(a, b) for a, b in zip(single, multi, strict=True))


def test_missing_index_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no MDS index at .*nowhere/train/index.json"):
        TokenStreamingDataset(tmp_path / "nowhere", split="train")


def test_missing_shard_is_reported_up_front(mds_dir):
    (mds_dir / "train" / "shard.00001.mds.zstd").unlink()
    with pytest.raises(FileNotFoundError, match=r"shard .*train/shard\.00001\.mds\.zstd listed in"):
        TokenStreamingDataset(mds_dir, split="train")


def test_shard_vanishing_mid_run_is_an_error_not_a_short_epoch(mds_dir):
    # StreamingDataset alone would log the failure and end the epoch early, silently.
    ds = TokenStreamingDataset(mds_dir, split="train", shuffle=False, check_local_shards=False)
    (mds_dir / "train" / "shard.00001.mds.zstd").unlink()
    with pytest.raises(ShardReadError, match=r"shard .*train/shard\.00001\.mds"):
        list(ds)


def test_an_id_beyond_the_tokenizers_vocabulary_names_the_sample_and_the_shard(corpus, mds_dir):
    """Shards of a bigger vocabulary read with a smaller tokenizer: before, an IndexError in the masking."""
    largest = max(max(chunk) for chunk in corpus[1])  # [SEP], 50282, ends every chunk
    ds = TokenStreamingDataset(mds_dir, split="train", shuffle=False, vocab_size=largest)
    where = r"sample 0 of .*train/shard\.00000\.mds\.zstd"
    with pytest.raises(
        UnknownTokenIdError, match=rf"{where} holds token id {largest}, beyond .* {largest:,} ids"
    ):
        next(iter(ds))
    ds = TokenStreamingDataset(mds_dir, split="train", shuffle=False, vocab_size=largest + 1)
    assert [tuple(ids) for ids in ds] == corpus[1]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_corrupt_shard_error_names_the_file(mds_dir, num_workers):
    shard = mds_dir / "train" / "shard.00002.mds.zstd"
    shard.write_bytes(b"\x00garbage" * 100)
    packed = stream(mds_dir, shuffle=False, num_workers=num_workers)
    with pytest.raises(ShardReadError, match=r"shard .*train/shard\.00002\.mds"):
        for batch in packed:
            assert batch["input_ids"].shape == (512,)


RANK_SCRIPT = """
import gc, os, sys
import torch, torch.distributed as dist
from modernenc.data.streaming_dataset import build_packed_mlm_stream

mds, tokenizer, out, k = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
rank = int(os.environ["RANK"])
dist.init_process_group("gloo", init_method=f"file://{out}/store", rank=rank, world_size=2)


def make():
    return build_packed_mlm_stream(mds, tokenizer=tokenizer, capacity=512, buffer_size=16, split="train")


s = make()
reference = list(s)
del s
gc.collect()
dist.barrier()
s = make()
it = iter(s)
head = [next(it) for _ in range(k)]
state = s.state_dict()  # collective: gathers both ranks' packer states
del it, s
gc.collect()
dist.barrier()
s = make()
s.load_state_dict(state)
resumed = head + list(s)
keys = ("input_ids", "labels", "cu_seqlens")
torch.save(
    {
        "reference": [{k: b[k] for k in keys} for b in reference],
        "resumed": [{k: b[k] for k in keys} for b in resumed],
        "consumed": [r["samples_consumed"] for r in state["ranks"]],
    },
    f"{out}/rank{rank}.pt",
)
dist.destroy_process_group()
"""


def test_two_ranks_partition_the_data_and_resume_exactly(mds_dir, corpus, tmp_path):
    # ~17 s on an idle 2-core machine. It used to fail now and then with JSONDecodeError: one rank read
    # StreamingDataset's shared resume block after another rank had created it but before it was written
    # (_RankSource._write_resume_block explains the fix).
    import subprocess
    import sys

    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    procs = []
    for rank in range(2):
        env = {
            **os.environ,
            "RANK": str(rank),
            "WORLD_SIZE": "2",
            "LOCAL_RANK": str(rank),
            "LOCAL_WORLD_SIZE": "2",
        }
        env["MASTER_ADDR"], env["MASTER_PORT"] = "127.0.0.1", "29531"
        cmd = [sys.executable, str(script), str(mds_dir), str(TOKENIZER), str(tmp_path), "7"]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    for p in procs:
        out, _ = p.communicate(timeout=240)
        assert p.returncode == 0, out.decode()[-3000:]

    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    consumed = results[0]["consumed"]
    assert consumed == results[1]["consumed"] and len(consumed) == 2
    # Deterministic for this data: the ranks had consumed different counts, so resume used the common
    # StreamingDataset offset plus a per-rank discard.
    assert consumed[0] != consumed[1]
    for res in results:
        assert len(res["resumed"]) == len(res["reference"])
        for got, want in zip(res["resumed"], res["reference"], strict=True):
            for key in got:
                assert torch.equal(got[key], want[key]), key

    # The ranks split the epoch between them: together they see every chunk, each at most twice
    # (StreamingDataset pads the shorter rank by repeating samples).
    def unmasked(b):  # labels hold the original id wherever masking changed (or kept) a token
        return {**b, "input_ids": torch.where(b["labels"] != -100, b["labels"], b["input_ids"])}

    seen = [{seg for b in res["reference"] for seg in segments(unmasked(b))} for res in results]
    assert seen[0] | seen[1] == set(corpus[1])
    assert len(seen[0] & seen[1]) <= 1
    assert abs(len(seen[0]) - len(seen[1])) <= 1
