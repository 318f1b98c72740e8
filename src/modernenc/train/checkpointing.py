"""Checkpoints that survive a kill: written whole or not at all, and resumed from the last complete one.

composer 0.32.1 writes a checkpoint in place (`composer.utils.checkpoint._write_checkpoint_file`), so a
run killed while saving `ep0-ba8-rank0.pt` leaves a truncated file under that name, with `latest-rank0.pt`
still pointing at `ep0-ba4-rank0.pt`. composer's autoresume then stops on its own conflict check
(`FileExistsError`: "set overwrite=True"), or, with `latest` pointing at the torn file, on torch's error,
which names no file. Here:

* `SafeCheckpointSaver`, composer's `CheckpointSaver` with its one file write done through
  `modernenc.utils.outputs.writing_file`: the checkpoint is written under a temporary name, synced and
  renamed, and recorded in the run folder's manifest (so `force=true` later removes exactly the run's
  files). At the start of training it counts the checkpoints earlier processes of the run left, so
  `save_num_checkpoints_to_keep` applies to them too.
* `find_resume_checkpoint`, which autoresume uses instead of the `latest` link: the newest checkpoint
  that can be read back. A damaged one is renamed `NAME.damaged` (with a message saying why), the
  temporary files of a killed save are removed, and `latest-rank0.pt` is pointed at the one chosen.

Sharded (FSDP `state_dict_type: sharded`) and remote checkpoints are left to composer.
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from composer.callbacks import CheckpointSaver
from composer.core import State
from composer.loggers import Logger
from composer.utils import checkpoint as composer_checkpoint
from composer.utils import dist, format_name_with_dist

from modernenc.train.export import UnreadableCheckpointError, load_checkpoint_file
from modernenc.utils.outputs import PARTIAL_SUFFIX, record, recorded_part, writing_file

CHECKPOINT_FILENAME = "ep{epoch}-ba{batch}-rank{rank}.pt"  # what train.py's runs save
LATEST_FILENAME = "latest-rank{rank}.pt"
CHECKPOINT_NAME = re.compile(r"^ep(?P<epoch>\d+)-ba(?P<batch>\d+)-rank(?P<rank>\d+)\.pt$")
LATEST_NAME = re.compile(r"^latest-rank\d+\.pt$")
DAMAGED_SUFFIX = ".damaged"
DAMAGED_NAME = re.compile(r"^ep\d+-ba\d+-rank\d+\.pt" + re.escape(DAMAGED_SUFFIX) + r"(\.\d+)?$")
# writing_file's temporary name for a checkpoint: `.ep0-ba8-rank0.pt.XXXXXXXX.partial.pt`
PARTIAL_CHECKPOINT = re.compile(
    r"^\.(ep\d+-ba\d+|latest)-rank\d+\.pt\..+" + re.escape(PARTIAL_SUFFIX) + r"\.pt$"
)


class CheckpointError(RuntimeError):
    """A run folder whose checkpoints cannot be resumed as they are; the message names the file."""


def checkpoint_files(folder: str | Path, rank: int = 0) -> list[tuple[int, Path]]:
    """(batch, path) of `rank`'s checkpoint files in `folder` (links skipped), oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = CHECKPOINT_NAME.match(path.name)
        if match and int(match["rank"]) == rank and path.is_file() and not path.is_symlink():
            found.append((int(match["batch"]), path))
    return sorted(found)


def why_unreadable(path: Path) -> str | None:
    """None when `path` reads back as a checkpoint; else why not. The zip index at the end of a torch file
    goes first (a cut-short file has none), then the whole pickle, with the tensors left on disk."""
    try:
        with zipfile.ZipFile(path) as archive:
            if not any(name.endswith("data.pkl") for name in archive.namelist()):
                return "it holds no pickled state"
    except (zipfile.BadZipFile, OSError) as err:
        return f"it is cut short or not a torch file ({err})"
    try:
        checkpoint = load_checkpoint_file(path, mmap=True)
    except (UnreadableCheckpointError, OSError) as err:
        return str(err)
    if "timestamp" not in checkpoint["state"]:
        return "it holds no training clock (state.timestamp)"
    return None


@dataclass(frozen=True)
class ResumePoint:
    path: Path | None  # None: no complete checkpoint, the run starts from step 0
    set_aside: list[tuple[Path, Path, str]]  # (damaged file, its new name, why)


def find_resume_checkpoint(folder: str | Path, may_modify: bool = True) -> ResumePoint:
    """The newest checkpoint in `folder` that reads back (`latest-rank0.pt` last, when it is a file of its
    own rather than composer's link, as when a checkpoint is copied in to resume from). With `may_modify`
    (one process per node), damaged newer ones are renamed `NAME.damaged`, temporary files of killed saves
    removed, and `latest-rank0.pt` (composer's link) pointed at the checkpoint chosen."""
    folder = Path(folder)
    if not folder.is_dir():
        return ResumePoint(None, [])
    set_aside: list[tuple[Path, Path, str]] = []
    chosen = None
    candidates = [path for _, path in reversed(checkpoint_files(folder))]
    latest = folder / LATEST_FILENAME.format(rank=0)
    if latest.is_file() and not latest.is_symlink():  # a checkpoint copied in to resume from
        candidates.append(latest)
    for path in candidates:
        reason = why_unreadable(path)
        if reason is None:
            chosen = path
            break
        target = _free_name(path.with_name(path.name + DAMAGED_SUFFIX))
        if may_modify:
            ours = recorded_part(path)
            path.rename(target)  # set aside, not deleted: it may be all there is of a long run
            if ours:
                record(target)  # still the run's: force=true removes it with the rest
        set_aside.append((path, target, reason))
    if may_modify:
        for leftover in folder.iterdir():  # a save killed before its rename
            if PARTIAL_CHECKPOINT.match(leftover.name):
                leftover.unlink()
        if chosen is not None and chosen != latest:
            point_latest_at(chosen)
    return ResumePoint(chosen, set_aside)


def _free_name(path: Path) -> Path:
    candidate, n = path, 1
    while candidate.exists() or candidate.is_symlink():
        candidate, n = path.with_name(f"{path.name}.{n}"), n + 1
    return candidate


def point_latest_at(path: Path) -> None:
    """`latest-rank0.pt` -> `path` (relative), replaced atomically so no moment is without it."""
    latest = path.with_name(LATEST_FILENAME.format(rank=0))
    if latest.exists() and not latest.is_symlink():  # a file of its own (copied in): never replaced
        return
    if latest.is_symlink() and os.readlink(latest) == path.name:
        return
    tmp = latest.with_name(f".{latest.name}.{os.getpid()}{PARTIAL_SUFFIX}.pt")  # PARTIAL_CHECKPOINT
    tmp.unlink(missing_ok=True)
    os.symlink(path.name, tmp)
    record(latest, as_=tmp)
    os.replace(tmp, latest)


@contextmanager
def _checkpoint_writes_renamed_into_place() -> Iterator[None]:
    """composer's checkpoint file write, done under a temporary name and renamed (see the module doc)."""
    write_in_place = composer_checkpoint._write_checkpoint_file

    def write(state_dict: dict, filename: str) -> None:
        with writing_file(filename, kind=None) as tmp:  # kind None: a part of the run's output
            write_in_place(state_dict, str(tmp))

    composer_checkpoint._write_checkpoint_file = write
    try:
        yield
    finally:
        composer_checkpoint._write_checkpoint_file = write_in_place


class SafeCheckpointSaver(CheckpointSaver):
    """composer's CheckpointSaver, writing each file whole or not at all, recording it in the run folder's
    manifest, and counting an earlier process's checkpoints of the run towards `num_checkpoints_to_keep`."""

    def __init__(self, folder: str, **kwargs) -> None:
        super().__init__(
            folder=folder,
            filename=CHECKPOINT_FILENAME,
            remote_file_name=None,  # local folders only; remote ones keep composer's own saver
            latest_filename=LATEST_FILENAME,
            latest_remote_file_name=None,
            **kwargs,
        )

    def fit_start(self, state: State, logger: Logger) -> None:
        folder = Path(format_name_with_dist(self.folder, state.run_name))
        try:
            super().fit_start(state, logger)
        except FileExistsError:  # composer's advice ("set overwrite=True") is no setting of ours
            later = [p.name for batch, p in checkpoint_files(folder) if batch > int(state.timestamp.batch)]
            raise CheckpointError(
                f"{folder} holds checkpoints from later in the run than step {int(state.timestamp.batch)}, "
                f"where this run starts ({', '.join(later)}); resume from them with autoresume=true, or "
                "start over with force=true"
            ) from None
        if self.num_checkpoints_to_keep < 0 or state.fsdp_sharded_state_dict_enabled:
            return
        if dist.get_global_rank() == 0:
            now = int(state.timestamp.batch)
            earlier = [
                str(path)
                for batch, path in checkpoint_files(folder)
                if batch <= now and recorded_part(path) and str(path) not in self.saved_checkpoints
            ]
            self.saved_checkpoints[:0] = earlier

    def _save_checkpoint(self, state: State, logger: Logger) -> None:
        with _checkpoint_writes_renamed_into_place():
            super()._save_checkpoint(state, logger)
        latest = Path(self.latest_filename.format(state)) if self.latest_filename is not None else None
        if latest is not None and latest.is_symlink() and dist.get_global_rank() == 0:
            record(latest)
