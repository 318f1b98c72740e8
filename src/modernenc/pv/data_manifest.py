"""What a bundled-data folder holds: SHA-256 per file in `manifest.json`, and one digest for the whole folder.

The digest is the SHA-256 of the folder's `sha256sum`-style listing: a line `<sha256>  <path>` per file,
sorted by path, `manifest.json` and hidden files left out. A folder without a manifest (`../shared/data`)
gets the same digest from its files, so a results table can always say which data it ran on, and
`cd DIR && find . -type f ! -path ./manifest.json ! -path '*/.*' -printf '%P\\0' | LC_ALL=C sort -z |
xargs -0 sha256sum | sha256sum` reproduces it outside Python.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from modernenc.utils.files import sha256_file

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1


class ManifestMismatch(ValueError):
    """A file of a fetched folder is missing or differs from what its manifest recorded."""


def data_files(folder: Path) -> list[str]:
    """Every file of the folder as a sorted POSIX path relative to it; the manifest and hidden files aside."""
    return sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        and p.relative_to(folder).as_posix() != MANIFEST
    )


def listing_digest(sha256_by_path: dict[str, str]) -> str:
    listing = "".join(f"{sha}  {path}\n" for path, sha in sorted(sha256_by_path.items()))
    return hashlib.sha256(listing.encode("utf-8")).hexdigest()


def write_manifest(folder: Path, info: dict) -> dict:
    """Record SHA-256 and size of every file under ``folder`` (written last: a manifest means complete)."""
    files = {
        path: {"sha256": sha256_file(folder / path), "bytes": (folder / path).stat().st_size}
        for path in data_files(folder)
    }
    digest = listing_digest({path: entry["sha256"] for path, entry in files.items()})
    manifest = {"format": MANIFEST_FORMAT, **info, "files": files, "digest": digest}
    (folder / MANIFEST).write_text(
        json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return manifest


def read_manifest(folder: Path) -> dict | None:
    """The folder's manifest, or None when it has none; an unreadable one is an error naming it."""
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ManifestMismatch(f"{path} is not a readable manifest ({err})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise ManifestMismatch(f"{path} is not a modernenc data manifest (it has no 'files' table)")
    return manifest


def verify(folder: Path, remedy: str) -> dict:
    """Check every file against the manifest; the first missing or changed one is an error naming it."""
    manifest = read_manifest(folder)
    if manifest is None:
        raise ManifestMismatch(f"{folder} has no {MANIFEST}; {remedy}")
    for path, entry in sorted(manifest["files"].items()):
        target = folder / path
        if not target.is_file():
            raise ManifestMismatch(f"{target} is listed in {folder / MANIFEST} but missing; {remedy}")
        sha = sha256_file(target)
        if sha != entry["sha256"]:
            raise ManifestMismatch(
                f"{target} does not match {folder / MANIFEST} (SHA-256 {sha[:12]}..., recorded "
                f"{entry['sha256'][:12]}...): it changed after it was fetched; {remedy}"
            )
    expected = listing_digest({path: entry["sha256"] for path, entry in manifest["files"].items()})
    if manifest.get("digest") != expected:
        raise ManifestMismatch(
            f"{folder / MANIFEST} has a digest that does not match its own files; {remedy}"
        )
    return manifest


def describe(folder: Path) -> str:
    """One line naming the data: its folder and digest, from the verified manifest or from its files."""
    folder = folder.resolve()
    manifest = read_manifest(folder)
    if manifest is not None:
        manifest = verify(folder, "fetch it again with `modernenc fetch-data --force`")
        return f"`{folder}`, manifest digest sha256:{manifest['digest']} ({len(manifest['files'])} files)"
    files = data_files(folder)
    digest = listing_digest({path: sha256_file(folder / path) for path in files})
    return f"`{folder}`, no manifest; digest of its {len(files)} files (as a manifest's): sha256:{digest}"
