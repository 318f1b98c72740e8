"""What modernenc writes, and the one rule for replacing it: nothing the user made is ever lost.

Every command that writes a file or a folder goes through this module:

1. Before any work, ``check_output_file`` / ``check_output_folder`` refuse, naming the path the user gave:
   a path that cannot be written (a file where a folder must be, a folder it may not create files in), an
   output that is also an input or overlaps one (an input inside the output folder, or the output inside an
   input folder), and an existing output, unless the user consented (``--force``) *and* modernenc's own
   record says that it wrote what would be replaced.
2. While writing, ``writing_file`` / ``writing_folder`` write under a hidden temporary name beside the
   output and rename it into place only when complete: a kill never leaves a half-written file under the
   final name, and a failed run leaves an earlier output as it was.
3. The record is a manifest, ``.modernenc-outputs.json``, in the folder that holds the output. A folder
   that is wholly an output (a prepared corpus, a Hugging Face export) holds its own manifest: its
   ``owner`` says which kind of output it is, and ``entries`` list every file in it with its size. A
   single file (predictions, an averaged checkpoint, a plot) is an entry, with its ``kind``, in the
   manifest of the folder it was written to. A file modernenc wrote and someone changed since (another size)
   no longer counts as modernenc's.

``remove_recorded`` removes the entries of a folder's manifest and nothing else (a training run's
``force=true``, which keeps the user's own files in the run folder).

For a new command: call ``check_output_file(path, kind=..., force=..., inputs=[...])`` or
``check_output_folder`` first, then write inside ``with writing_file(path, kind=..., tool=...) as tmp`` or
``with writing_folder(path, kind=..., tool=...) as staging``. Kinds name what an output is, so a ``--force``
can only replace an output of the same kind (``KINDS`` lists those in use).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST_NAME = ".modernenc-outputs.json"
MANIFEST_VERSION = 1
PARTIAL_SUFFIX = ".partial"  # temporary names: `.NAME.XXXXXX.partial` beside the output
KINDS = {  # kind -> how a message names an output of it
    "mds-corpus": "a prepared corpus (prepare-data)",
    "ade-splits": "an ADE split folder (prepare-ade)",
    "tokenizer": "a tokenizer (train-tokenizer)",
    "hf-model": "a Hugging Face model folder",
    "train-run": "a training run folder",
    "checkpoint": "a checkpoint",
    "predictions": "a predictions file",
    "plot": "a plot",
    "recipe": "a recipe yaml",
    "report": "a report",
    "onnx-model": "an ONNX export (export-onnx)",
    "audit-export": "an audit export (audit export)",
    "provenance": "a predictions file's provenance record (predict)",
    "partial": "the unfinished output of a killed run",
}
# Copies that readers make inside an output, of files recorded in it: mosaicml-streaming decompresses each
# shard `X.mds.zstd` of a prepared corpus to `X.mds` beside it when training reads it. They belong to the
# output (a `--force` replaces them with it) as long as the recorded file they were made from is unchanged.
DERIVED_COPIES = {"mds-corpus": ".zstd"}  # kind -> suffix that a copy's name lacks
_SHOWN = 5  # names listed in a message before "..."
_PARTIAL_NAME = re.compile(r"^\..+\.partial(\.[^.]+)*$")  # what writing_file / writing_folder write first


class OutputError(ValueError):
    """An output that cannot or may not be written; the message names the path and what to do."""


def describe_kind(kind: str) -> str:
    return KINDS.get(kind, f"a {kind} output")


# ---------------------------------------------------------------------------------------------------------
# the manifest


@dataclass(frozen=True)
class Manifest:
    """The record of one folder: its owner (when the folder itself is an output) and the entries in it."""

    folder: Path
    owner: dict[str, str] | None
    entries: dict[str, dict[str, Any]]
    readable: bool = True  # False: a manifest is there but cannot be read, so it proves nothing

    @property
    def kind(self) -> str | None:
        return (self.owner or {}).get("kind")

    @property
    def tool(self) -> str | None:
        return (self.owner or {}).get("tool")


def read_manifest(folder: str | Path) -> Manifest:
    """The manifest of ``folder``; an empty one when it has none (or is no folder)."""
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    if not path.is_file():
        return Manifest(folder, None, {})
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        owner, entries = data.get("owner"), data["entries"]
        if not isinstance(entries, dict) or not (owner is None or isinstance(owner, dict)):
            raise TypeError
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return Manifest(folder, None, {}, readable=False)
    return Manifest(folder, owner, entries)


def _write_manifest(manifest: Manifest) -> None:
    data = {"version": MANIFEST_VERSION, "owner": manifest.owner, "entries": manifest.entries}
    manifest.folder.mkdir(parents=True, exist_ok=True)
    _replace_atomically(manifest.folder / MANIFEST_NAME, json.dumps(data, indent=1, sort_keys=True) + "\n")


def _replace_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=PARTIAL_SUFFIX)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        _usual_permissions(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _usual_permissions(path: Path) -> None:
    """mkstemp/mkdtemp create owner-only names; an output gets what open()/mkdir() would have given it."""
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~_umask())


def _describe(path: Path) -> dict[str, Any]:
    if path.is_symlink():
        return {"link": True}
    if path.is_dir():
        return {"folder": True}
    return {"size": path.stat().st_size}


def record(
    path: str | Path, kind: str | None = None, tool: str | None = None, *, as_: Path | None = None
) -> None:
    """Record an output modernenc has just written in the manifest of the folder holding it.

    ``kind=None``: the path is part of the output that folder is (a checkpoint of a training run, the
    thresholds beside a model's weights). With a ``kind``, it is an output of its own (predictions written
    into a folder of the user's). A folder recorded here carries its own manifest (``writing_folder``).
    ``as_``: describe that path (a temporary file about to be renamed to ``path``) instead.
    """
    path = Path(path)
    manifest = read_manifest(path.parent)
    entry = _describe(as_ if as_ is not None else path)
    if kind is not None:
        entry.update(kind=kind, **({"tool": tool} if tool else {}))
    _write_manifest(Manifest(manifest.folder, manifest.owner, {**manifest.entries, path.name: entry}))


def recorded_part(path: str | Path) -> bool:
    """Whether ``path`` is recorded, unchanged, as part of the output its folder is (not one of its own)."""
    path = Path(path)
    entry = read_manifest(path.parent).entries.get(path.name)
    return entry is not None and "kind" not in entry and not _changed(path, entry)


def record_if_tracked(path: str | Path) -> None:
    """After rewriting a file inside a folder modernenc recorded (the thresholds beside a model's weights),
    record it again as a part of that folder's output; a folder without a record is left without one."""
    path = Path(path)
    manifest = read_manifest(path.parent)
    if manifest.owner is not None or path.name in manifest.entries:
        record(path)


def claim_folder(folder: str | Path, kind: str, tool: str) -> None:
    """Make ``folder`` (created if needed) an output of ``kind`` that is filled over time (a training run),
    keeping the entries already recorded in it."""
    manifest = read_manifest(folder)
    _write_manifest(Manifest(Path(folder), {"kind": kind, "tool": tool}, manifest.entries))


# ---------------------------------------------------------------------------------------------------------
# is it ours?


def _changed(path: Path, entry: dict[str, Any]) -> bool:
    if entry.get("link"):
        return not path.is_symlink()
    if entry.get("folder"):
        return not path.is_dir() or path.is_symlink()
    return not path.is_file() or path.is_symlink() or path.stat().st_size != entry.get("size")


def why_file_is_not_ours(path: str | Path, kind: str) -> str | None:
    """None when ``path`` is a ``kind`` output modernenc wrote and nobody changed since; else the reason."""
    path = Path(path)
    manifest = read_manifest(path.parent)
    entry = manifest.entries.get(path.name)
    if entry is None or "kind" not in entry:
        return f"modernenc has no record of writing it (no entry in {path.parent / MANIFEST_NAME})"
    if entry["kind"] != kind:
        return f"it is {describe_kind(entry['kind'])}, not {describe_kind(kind)}"
    if _changed(path, entry):
        return "it was changed after modernenc wrote it"
    return None


def foreign_files(folder: str | Path) -> list[str]:
    """Files under an output folder that are not parts of that output: not listed in its manifest, changed
    since they were written, or outputs of their own (recorded with a kind). Paths relative to ``folder``;
    a sub-folder recorded as a folder output is judged by its own manifest."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    entries = manifest.entries
    copied_from = DERIVED_COPIES.get(manifest.kind)

    def derived_copy(rel: str) -> bool:
        source = entries.get(rel + copied_from) if copied_from else None
        return (
            source is not None and "kind" not in source and not _changed(folder / (rel + copied_from), source)
        )

    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        here = Path(dirpath)
        rel_dir = here.relative_to(folder).as_posix()
        for name in sorted(dirnames):
            rel = f"{rel_dir}/{name}".removeprefix("./")
            entry = entries.get(rel)
            if (here / name).is_symlink():
                filenames.append(name)  # judged as an entry below, never followed
            elif entry is not None and entry.get("folder") and "kind" not in entry:
                found += [f"{rel}/{inner}" for inner in foreign_files(here / name)]
            elif entry is not None or _is_partial_of_ours(here / name):
                found += [] if _is_partial_of_ours(here / name) else [rel + "/"]
            else:
                continue
            dirnames.remove(name)
        for name in sorted(filenames):
            rel = f"{rel_dir}/{name}".removeprefix("./")
            if rel == MANIFEST_NAME or _is_partial_of_ours(here / name):
                continue
            entry = entries.get(rel)
            if entry is None and derived_copy(rel):
                continue
            if entry is None or "kind" in entry or _changed(here / name, entry):
                found.append(rel)
    return sorted(found)


def _contents(folder: Path) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir() if p.name != MANIFEST_NAME)
    return _names(names)


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown + (f", ... ({len(names)} in all)" if len(names) > _SHOWN else "")


# ---------------------------------------------------------------------------------------------------------
# checks before the work


def _resolved(path: str | Path) -> Path:
    return Path(path).expanduser().resolve()


def check_not_overlapping(
    output: str | Path, inputs: Iterable[str | Path | None], what: str = "output"
) -> None:
    """Refuse an output that is an input, holds one (it would be replaced), or lies inside an input folder
    (it would be read as input, or the input replaced with it)."""
    out = _resolved(output)
    for given in inputs:
        if given is None or "://" in str(given):
            continue
        source = _resolved(given)
        if source == out:
            raise OutputError(f"the {what} {output} is also an input ({given}); choose another {what}")
        if source.is_relative_to(out):
            raise OutputError(
                f"the input {given} lies inside the {what} {output}, which this command replaces; "
                f"choose another {what}"
            )
        if out.is_relative_to(source) and source.is_dir():
            raise OutputError(
                f"the {what} {output} lies inside the input folder {given}; put the {what} elsewhere"
            )


def check_writable(path: str | Path, what: str = "output", files_inside: bool = False) -> None:
    """Refuse, before any work, a path whose folder cannot be created or written, naming the path given.
    ``files_inside``: ``path`` is a folder that files will be created in (else they go beside it)."""
    path = Path(path)
    ancestor = path if files_inside else path.parent
    while not ancestor.exists() and not ancestor.is_symlink() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if ancestor.is_symlink() and not ancestor.exists():
        raise OutputError(f"cannot write the {what} {path}: {ancestor} is a broken link")
    if not ancestor.is_dir():
        raise OutputError(f"cannot write the {what} {path}: {ancestor} is a file, not a folder")
    try:  # os.access says yes to root even on read-only mounts; a real file says what will happen
        fd, probe = tempfile.mkstemp(dir=ancestor, prefix=".modernenc-write-check.")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise OutputError(
            f"cannot write the {what} {path}: no file can be created in {ancestor} ({err.strerror})"
        ) from None


def check_output_file(
    path: str | Path,
    *,
    kind: str,
    force: bool = False,
    inputs: Iterable[str | Path | None] = (),
    consent: str | None = "--force",
    what: str = "output",
) -> Path:
    """``path`` as a Path, once it is certain it can be written without losing anything (see module doc).
    ``consent``: the option that gives it (None: the output is rewritten on every run, as ``force=True``)."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"the {what} {path} is a folder; give a file name")
    check_not_overlapping(path, inputs, what)
    check_writable(path, what)
    if path.exists() or path.is_symlink():
        if not force:
            raise FileExistsError(f"the {what} {path} already exists; pass {consent} to replace it")
        reason = why_file_is_not_ours(path, kind)
        if reason is not None:
            even = f" even with {consent}" if consent else ""
            raise OutputError(
                f"refusing to replace {path}{even}: {reason}. Move it away or choose another {what}"
            )
    return path


def check_output_folder(
    path: str | Path,
    *,
    kind: str,
    force: bool = False,
    inputs: Iterable[str | Path | None] = (),
    consent: str = "--force",
    what: str = "output folder",
) -> Path:
    """``path`` as a Path, once it is certain it can be written without losing anything: new or empty, or
    (with consent) an earlier ``kind`` output that holds nothing modernenc did not write there."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"the {what} {path} is a file; give a folder")
    check_not_overlapping(path, inputs, what)
    check_writable(path, what)
    if not path.is_dir() or not any(p.name != MANIFEST_NAME for p in path.iterdir()):
        return path
    manifest = read_manifest(path)
    label = describe_kind(kind)
    if manifest.kind is None:
        unreadable = f" (its {MANIFEST_NAME} cannot be read)" if not manifest.readable else ""
        raise OutputError(
            f"the {what} {path} is not empty and is not {label} modernenc wrote{unreadable}: it holds "
            f"{_contents(path)}. Refusing to replace it even with {consent}; choose a new or empty folder"
        )
    if manifest.kind != kind:
        raise OutputError(
            f"the {what} {path} holds {describe_kind(manifest.kind)}, not {label}; choose another folder"
        )
    if not force:
        raise FileExistsError(
            f"the {what} {path} already holds {label} modernenc wrote; pass {consent} to replace it"
        )
    foreign = foreign_files(path)
    if foreign:
        raise OutputError(
            f"the {what} {path} holds files modernenc did not write there (or that changed since): "
            f"{_names(foreign)}. Refusing to replace it even with {consent}; move them out or choose "
            "another folder"
        )
    return path


# ---------------------------------------------------------------------------------------------------------
# writing


def temp_suffix(path: Path) -> str:
    """The end of a temporary name for ``path``: ``.partial`` and the path's own suffixes."""
    return PARTIAL_SUFFIX + "".join(path.suffixes)


def _is_partial_of_ours(path: Path) -> bool:
    return _PARTIAL_NAME.match(path.name) is not None


@contextmanager
def _renamed_errors(tmp: Path, final: Path) -> Iterator[None]:
    """OSErrors about the temporary name (or a file inside it), re-raised naming the output the user gave."""
    try:
        yield
    except OSError as err:
        names = [Path(os.path.abspath(n)) for n in (err.filename, err.filename2) if isinstance(n, str)]
        if any(n.is_relative_to(tmp.absolute()) for n in names):
            raise OSError(f"could not write {final}: {err.strerror or err}") from None
        raise


@contextmanager
def writing_file(path: str | Path, *, kind: str | None, tool: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write; on success it is renamed to ``path`` and recorded
    (``kind=None``: as part of the output the folder is). On failure it is removed and ``path`` is as it
    was. Check ``path`` with ``check_output_file`` before the work."""
    path = Path(os.path.realpath(path))  # through links: a linked output is replaced where it really is
    path.parent.mkdir(parents=True, exist_ok=True)
    # The suffixes stay last, as writers pick a format by them (matplotlib, compressed checkpoints).
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=temp_suffix(path))
    os.close(fd)
    tmp = Path(name)
    _usual_permissions(tmp)
    try:
        with _renamed_errors(tmp, path):
            yield tmp
            with tmp.open("rb+") as f:  # on disk before the rename, so no crash can expose a torn file
                os.fsync(f.fileno())
            record(path, kind, tool, as_=tmp)  # recorded first: a kill after the rename leaves it ours
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str, *, kind: str | None, tool: str | None = None) -> Path:
    """``writing_file`` for a text: written whole under a temporary name, renamed, recorded."""
    with writing_file(path, kind=kind, tool=tool) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def _remove_leftovers(path: Path) -> None:
    """Staging folders of this output left by a killed run (they carry a `partial` manifest)."""
    if not path.parent.is_dir():
        return
    for leftover in path.parent.glob(f".{path.name}.*{PARTIAL_SUFFIX}"):
        if leftover.is_dir() and read_manifest(leftover).kind == "partial":
            shutil.rmtree(leftover, ignore_errors=True)


def _list_files(folder: Path) -> dict[str, dict[str, Any]]:
    entries = {}
    for path in sorted(folder.rglob("*")):
        if path.name == MANIFEST_NAME or (path.is_dir() and not path.is_symlink()):
            continue
        entries[path.relative_to(folder).as_posix()] = _describe(path)
    return entries


@contextmanager
def writing_folder(path: str | Path, *, kind: str, tool: str) -> Iterator[Path]:
    """Yield an empty staging folder beside ``path`` to write an output into; on success it gets a manifest
    of every file in it and replaces ``path`` (an earlier output of the same kind, checked again now that
    the work is done). On failure, or a kill, ``path`` is as it was."""
    path = Path(os.path.realpath(path))  # a linked folder (checkpoints -> /scratch/...) stays where it is
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(path)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=PARTIAL_SUFFIX))
    _usual_permissions(staging)
    _write_manifest(Manifest(staging, {"kind": "partial", "tool": tool}, {}))
    try:
        with _renamed_errors(staging, path):
            yield staging
        _write_manifest(Manifest(staging, {"kind": kind, "tool": tool}, _list_files(staging)))
        _replace_folder(staging, path, kind)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _replace_folder(staging: Path, path: Path, kind: str) -> None:
    if path.is_dir() and any(p.name != MANIFEST_NAME for p in path.iterdir()):
        manifest = read_manifest(path)
        foreign = foreign_files(path) if manifest.kind == kind else [_contents(path)]
        if foreign:  # someone put files there while the work ran: keep both, say where the new one is
            kept = staging.with_name(f"{path.name}.new")
            staging.rename(kept)
            raise OutputError(
                f"{path} changed while this command ran (it now holds {_names(foreign)}); nothing was "
                f"replaced, the new output is in {kept}"
            )
        old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
        old.rmdir()
        path.rename(old)
        staging.rename(path)
        shutil.rmtree(old, ignore_errors=True)
        return
    if path.is_dir():
        shutil.rmtree(path)  # empty, or only an empty manifest
    staging.rename(path)


# ---------------------------------------------------------------------------------------------------------
# removing


def remove_recorded(folder: str | Path) -> tuple[list[str], list[str]]:
    """Remove what ``folder``'s manifest lists as parts of the folder's output (recorded sub-folders only as
    far as their own manifests go, files changed since they were written not at all) and the temporary
    files of killed writes; keep everything else.

    Returns (removed, kept): the names removed, and those left in the folder (the user's own files, and
    outputs of other commands recorded with a kind of their own).
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    removed, entries = [], dict(manifest.entries)
    for name, entry in sorted(manifest.entries.items()):
        target = folder / name
        if "kind" in entry:
            continue
        if not (target.exists() or target.is_symlink()):
            entries.pop(name)
            continue
        if _changed(target, entry):
            continue
        if entry.get("folder"):
            inner_removed, inner_kept = remove_recorded(target)
            if inner_kept:
                removed += [f"{name}/{inner}" for inner in inner_removed]
                continue
            shutil.rmtree(target)
        else:
            target.unlink()
            _remove_empty_parents(target.parent, folder)
        removed.append(name)
        entries.pop(name)
    for leftover in folder.iterdir():
        if _is_partial_of_ours(leftover):
            shutil.rmtree(leftover) if leftover.is_dir() and not leftover.is_symlink() else leftover.unlink()
    if entries != manifest.entries:
        _write_manifest(Manifest(folder, manifest.owner, entries))
    kept = sorted(p.name for p in folder.iterdir() if p.name != MANIFEST_NAME)
    return removed, kept


def _remove_empty_parents(folder: Path, top: Path) -> None:
    while folder != top and folder.is_relative_to(top) and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent
