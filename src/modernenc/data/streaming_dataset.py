"""Token chunks from MDS shards via ``streaming.StreamingDataset``, masked and packed, with exact resume.

Data flow on every rank::

    StreamingDataset (this rank's shuffled share) -> DataLoader workers (decompression)
        -> SequencePacker(transform=MLMMasker) in the main process -> micro-batch dicts

The packer runs in the main process so its buffer and counters can be checkpointed. Each rank consumes a
different number of samples per micro-batch (documents differ in length), so the checkpoint holds every
rank's packer state (gathered across ranks). On resume all ranks tell StreamingDataset to skip the number
of samples the *slowest* rank had consumed (StreamingDataset needs one common offset), and each rank then
reads and discards only its own small surplus.

Each iteration is one epoch; iterating again starts the next epoch (StreamingDataset's order for it).
With several ranks, the ranks reach the end of the epoch a few micro-batches apart: composer ends the
epoch on every rank as soon as one rank's stream ends, and the others' last micro-batches are dropped.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
import torch.distributed as dist
from streaming import StreamingDataset
from streaming.base.dataset import _ShardState  # private, needed to unstick failed shards
from torch.utils.data import DataLoader

from modernenc.data.masking import DEFAULT_TRAIN_MLM_PROBABILITY
from modernenc.data.packing import DEFAULT_PAD_ID, SequencePacker, Transform


class SampleTooLongError(ValueError):
    """A sample is longer than the run's ``data.max_seq_len``."""


class UnknownTokenIdError(ValueError):
    """A sample holds an id beyond the tokenizer's vocabulary: the shards were made with another tokenizer."""


class ShardReadError(RuntimeError):
    """Raised when a shard is missing or cannot be decoded; the message names the shard file."""


class TokenStreamingDataset(StreamingDataset):
    """``StreamingDataset`` over MDS token chunks (column ``input_ids``) that yields ``np.int64`` arrays.

    ``local`` is a folder with ``index.json`` (or the cache folder when ``remote`` is a URI such as
    ``s3://bucket/corpus/train``). Shuffling is deterministic given ``shuffle_seed``; the partition
    across ranks and workers is StreamingDataset's, read from the usual ``RANK``/``WORLD_SIZE`` env vars.
    """

    def __init__(
        self,
        local: str | Path | None = None,
        remote: str | None = None,
        *,
        split: str | None = None,
        shuffle: bool = True,
        shuffle_seed: int = 9176,
        batch_size: int = 1,
        check_local_shards: bool = True,
        max_seq_len: int | None = None,
        vocab_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        self.max_seq_len = max_seq_len  # longer samples are an error, not silently longer sequences
        self.vocab_size = vocab_size  # a larger id: shards of another tokenizer (an error, not an IndexError)
        local = str(local) if local is not None else None
        if remote is None and local is not None:
            _check_local_index(Path(local) / (split or ""), check_local_shards)
        if kwargs.get("num_canonical_nodes") is None:
            # Pin it (streaming would pick it lazily) so a resume state always carries a concrete value.
            world = int(os.environ.get("WORLD_SIZE", 1))
            kwargs["num_canonical_nodes"] = max(1, world // int(os.environ.get("LOCAL_WORLD_SIZE", world)))
        super().__init__(
            local=local,
            remote=remote,
            split=split,
            shuffle=shuffle,
            shuffle_seed=shuffle_seed,
            batch_size=batch_size,
            **kwargs,
        )

    def _shard_file(self, shard_id: int, decompressed: bool = False) -> str:
        shard = self.shards[shard_id]
        name = (shard.raw_data if decompressed or not shard.zip_data else shard.zip_data).basename
        return str(Path(shard.dirname) / (shard.split or "") / name)

    # StreamingDataset prepares (downloads / decompresses) shards in a background thread. When that fails it
    # only logs the error and ends the epoch early, silently. These overrides name the shard and re-raise.
    def prepare_shard(self, shard_id: int, blocking: bool = True) -> None:
        try:
            super().prepare_shard(shard_id, blocking)
        except ShardReadError:
            raise
        except Exception as err:
            # A failed preparation leaves the shard in PREPARING, so whoever waits on it (the main thread
            # in get_item) would wait forever; mark it REMOTE again so they retry and fail too.
            self._shard_states[shard_id] = _ShardState.REMOTE
            raise ShardReadError(
                f"cannot read shard {self._shard_file(shard_id)}: {type(err).__name__}: {err}"
            ) from err

    def on_exception(self, future: Future) -> None:
        if future.exception() is not None:
            self._background_error = future.exception()
            self._event.set()  # stop the other background thread and the sample loop

    def __iter__(self) -> Iterator[np.ndarray]:
        self._background_error = None
        try:
            yield from super().__iter__()
        except GeneratorExit:
            # The consumer stopped early (an evaluation subset, or an epoch composer ended because another
            # rank ran out). Not a failure: the next __iter__ stops this pass's threads itself.
            raise
        except BaseException:
            # Stop the prefetch threads too, or one keeps waiting for the failed shard and blocks exit.
            if hasattr(self, "_event"):
                self._event.set()
            raise
        self._raise_background_error()

    def _raise_background_error(self) -> None:
        err = getattr(self, "_background_error", None)
        if isinstance(err, ShardReadError):
            raise ShardReadError(str(err)) from err
        if err is not None:
            raise ShardReadError(f"background shard preparation failed: {type(err).__name__}: {err}") from err

    def get_item(self, idx: int) -> np.ndarray:
        try:
            sample = super().get_item(idx)
        except ShardReadError:
            raise
        except Exception as err:  # zstd / decode / missing-file errors do not say which shard failed
            self._raise_background_error()
            shard_id = self.spanner[idx][0]
            where = self._shard_file(shard_id, decompressed=True)
            if self.shards[shard_id].zip_data:  # samples are read from the decompressed copy
                where += f" (decompressed from {self._shard_file(shard_id)}; delete it to decompress again)"
            raise ShardReadError(
                f"cannot read sample {idx} from {where}: {type(err).__name__}: {err}"
            ) from err
        ids = np.asarray(sample["input_ids"], dtype=np.int64)
        if self.max_seq_len is not None and len(ids) > self.max_seq_len:
            raise SampleTooLongError(
                f"sample {idx} of {self._shard_file(self.spanner[idx][0])} has {len(ids)} tokens, more than "
                f"data.max_seq_len={self.max_seq_len}; prepare the shards with --max-length "
                f"{self.max_seq_len} or raise data.max_seq_len"
            )
        if self.vocab_size is not None and len(ids) and int(ids.max()) >= self.vocab_size:
            raise UnknownTokenIdError(
                f"sample {idx} of {self._shard_file(self.spanner[idx][0])} holds token id {int(ids.max())}, "
                f"beyond the tokenizer's {self.vocab_size:,} ids: the shards were prepared with another "
                "tokenizer; give data.tokenizer the one they were prepared with"
            )
        return ids


def read_index_shards(folder: Path) -> list[dict[str, Any]]:
    """The shard entries listed in a local MDS folder's ``index.json``; a corrupt index names the file."""
    index = folder / "index.json"
    try:
        return json.loads(index.read_text())["shards"]
    except (json.JSONDecodeError, KeyError) as err:
        raise ShardReadError(f"corrupt MDS index {index}: {err}") from err


def _check_local_index(folder: Path, check_shards: bool) -> None:
    """Fail fast, naming the file, when a local dataset lacks its index or a shard listed in it."""
    index = folder / "index.json"
    if not index.is_file():
        raise FileNotFoundError(f"no MDS index at {index}; run data_prep/prepare_corpus.py first")
    shards = read_index_shards(folder)
    if not check_shards:
        return
    for shard in shards:
        names = [d["basename"] for d in (shard.get("zip_data"), shard.get("raw_data")) if d]
        if not any((folder / n).is_file() for n in names):
            raise FileNotFoundError(f"shard {folder / names[0]} listed in {index} is missing")


def _rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _launched_rank_and_world() -> tuple[int, int]:
    """This process's rank as the launcher set it, also before torch.distributed is initialized.

    ``composer -n N`` builds the datasets before the Trainer initializes the process group (and
    StreamingDataset tears down the group it makes for itself), so only the env vars say which rank we are.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


class _RankSource:
    """This rank's sample stream for one epoch; ``iter_from(start)`` skips already consumed samples."""

    def __init__(self, dataset: TokenStreamingDataset, num_workers: int) -> None:
        self.dataset = dataset
        self.num_workers = num_workers
        self.common_skip = 0  # per-rank samples every rank has consumed; StreamingDataset skips these
        self.epoch: int | None = None

    def _loader(self) -> DataLoader:
        # DataLoader batch size must equal the dataset's so StreamingDataset's per-worker partition
        # interleaves back into the rank's canonical sample order.
        return DataLoader(
            self.dataset,
            batch_size=self.dataset.batch_size,
            num_workers=self.num_workers,
            collate_fn=list,
            persistent_workers=False,
        )

    def _write_resume_block(self, sample_in_epoch: int, world: int) -> None:
        """Tell StreamingDataset (and its DataLoader workers) where this epoch starts, on every rank.

        ``load_state_dict`` writes a shared-memory block that all ranks of a node share and that
        ``StreamingDataset.__iter__`` (and ``state_dict``) read. The block is created zero-filled and
        written a moment later, so a rank that reads it in between sees an empty string and fails with
        ``JSONDecodeError``. Hence: build the state from the dataset's own fields (never read the block
        here), let every rank write the same bytes, and read it (``__iter__``) only after a barrier.
        """
        ds = self.dataset
        state = {
            "epoch": self.epoch,
            "sample_in_epoch": sample_in_epoch,
            "num_canonical_nodes": ds.num_canonical_nodes,  # pinned in TokenStreamingDataset.__init__
            "shuffle_seed": ds.shuffle_seed,
            "initial_physical_nodes": ds.initial_physical_nodes or ds._parallel_rank_world.num_nodes,
        }
        if world > 1:
            dist.barrier()  # no rank still reads a block of an earlier round that this write replaces
        ds.load_state_dict(state)
        if world > 1:
            dist.barrier()  # every rank has written before any rank reads

    def iter_from(self, start: int) -> Iterator[np.ndarray]:
        _, world = _rank_and_world()
        skip = min(self.common_skip, start)
        # Near the epoch's end StreamingDataset pads ranks differently after a skip; re-read instead.
        tail_margin = 4 * max(1, self.num_workers) * self.dataset.batch_size
        if len(self.dataset) - skip <= tail_margin:
            skip = 0
        if self.epoch is not None:
            self._write_resume_block(skip * world, world)
        else:
            skip = 0
        samples = (s for batch in self._loader() for s in batch)
        return itertools.islice(samples, start - skip, None)


class PackedStreamingDataset:
    """Iterable of packed (optionally MLM-masked) micro-batches from a ``TokenStreamingDataset``.

    ``capacity`` is the number of token slots per micro-batch (micro_batch_size x max_seq_len).
    ``state_dict()`` is a collective when torch.distributed is initialized: call it on every rank.
    """

    def __init__(
        self,
        dataset: TokenStreamingDataset,
        capacity: int,
        buffer_size: int = 128,
        transform: Transform | None = None,
        pad_token_id: int = DEFAULT_PAD_ID,
        num_workers: int = 0,
    ) -> None:
        self.dataset = dataset
        self.source = _RankSource(dataset, num_workers)
        if transform is not None:
            # Make the transform key unique across ranks, or ranks would mask with identical random draws.
            rank, world = _launched_rank_and_world()
            base = transform
            transform = lambda ids, index: base(ids, index * world + rank)  # noqa: E731
        self.packer = SequencePacker(self.source, capacity, buffer_size, pad_token_id, transform)
        self._iterated = False  # the next __iter__ continues the current position (fresh or loaded)

    @property
    def efficiency(self) -> float:
        return self.packer.efficiency

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self._iterated:
            # Iterated before, so this is the next pass: composer starts a new epoch once any rank's stream
            # ran out (the others drop their last few micro-batches). Continuing the old position instead
            # would give empty epochs, which composer repeats forever when max_duration is not reached.
            # Every rank calls this, so they stay in step. (An evaluation stream restarts from the top.)
            self.packer._reset()
            self.source.epoch = int(self.source.epoch) + 1
            self.source.common_skip = 0
        elif self.source.epoch is None:
            # Pin the epoch at the start so a checkpoint can name it; StreamingDataset counts epochs itself.
            self.source.epoch = int(self.dataset.next_epoch)
        self._iterated = True
        return iter(self.packer)

    def state_dict(self) -> dict[str, Any]:
        rank, world = _rank_and_world()
        local = self.packer.state_dict()
        local["epoch"] = self.source.epoch
        if world > 1:
            states: list[Any] = [None] * world
            dist.all_gather_object(states, local)
        else:
            states = [local]
        return {"world_size": world, "ranks": states}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        rank, world = _rank_and_world()
        if state["world_size"] != world:
            raise ValueError(
                f"checkpoint was written with {state['world_size']} ranks, now running {world}; exact resume "
                "of packed data needs the same world size"
            )
        mine = state["ranks"][rank]
        self.packer.load_state_dict(mine)
        self.source.epoch = mine["epoch"]
        self.source.common_skip = min(int(s["samples_consumed"]) for s in state["ranks"])
        self._iterated = False


def build_packed_mlm_stream(
    local: str | Path | None,
    *,
    tokenizer: str | Path,
    capacity: int,
    remote: str | None = None,
    split: str | None = None,
    mlm_probability: float = DEFAULT_TRAIN_MLM_PROBABILITY,
    seed: int = 17,
    buffer_size: int = 128,
    num_workers: int = 0,
    shuffle: bool = True,
    max_seq_len: int | None = None,
    **dataset_kwargs: Any,
) -> PackedStreamingDataset:
    """Convenience constructor: MDS folder/URI + tokenizer -> masked, packed micro-batch stream."""
    from modernenc.data.masking import MLMMasker, load_tokenizer

    tok = load_tokenizer(tokenizer)
    pad_id = tok.token_to_id("[PAD]")
    masker = MLMMasker.from_tokenizer(tok, mlm_probability=mlm_probability, seed=seed)
    dataset = TokenStreamingDataset(
        local,
        remote,
        split=split,
        shuffle=shuffle,
        shuffle_seed=seed,
        max_seq_len=max_seq_len,
        vocab_size=tok.get_vocab_size(with_added_tokens=True),
        **dataset_kwargs,
    )
    return PackedStreamingDataset(dataset, capacity, buffer_size, masker, pad_id, num_workers)


__all__ = [
    "PackedStreamingDataset",
    "SampleTooLongError",
    "ShardReadError",
    "TokenStreamingDataset",
    "UnknownTokenIdError",
    "build_packed_mlm_stream",
]
