"""API keys: read from a file, compared in constant time, known to the rest of the server by name only.

The file holds one key per line, optionally ``name:key`` (the name goes into the audit trail; a bare key
on line N is named ``key-N``). A line splits at its first colon: a key containing one must be named.
Blank lines and lines starting with ``#`` are skipped. Keys themselves are never logged, echoed in an
error, or stored.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from pathlib import Path

NAME_PATTERN = re.compile(r"[A-Za-z0-9_.@-]{1,64}")


class ApiKeys:
    """Name lookup by key. Each presented key is compared with every known key (no early exit), on SHA-256
    digests, so the time taken says nothing about how much of a key was right or which key it was."""

    def __init__(self, keys: dict[str, str]) -> None:  # name -> key
        self._digests = [(name, hashlib.sha256(key.encode()).digest()) for name, key in keys.items()]

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self._digests]

    def name_of(self, presented: str) -> str | None:
        digest = hashlib.sha256(presented.encode()).digest()
        found = None
        for name, known in self._digests:
            if hmac.compare_digest(digest, known):
                found = name
        return found


def read_api_keys(path: str | Path) -> ApiKeys:
    """Parse an --api-keys file; a bad line is an error naming its number (never its content)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"--api-keys {path} is a folder; give the keys file")
    if not path.is_file():
        raise FileNotFoundError(f"--api-keys file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:  # the codec's message names neither the file nor the option
        raise ValueError(f"--api-keys file {path} is not UTF-8 text (at byte offset {err.start})") from None
    keys: dict[str, str] = {}
    seen: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, key = line.partition(":")
        if not sep:
            name, key = f"key-{number}", line
        name, key = name.strip(), key.strip()
        if not NAME_PATTERN.fullmatch(name):
            raise ValueError(
                f"{path}, line {number}: a key's name is 1-64 letters, digits or _.@- (format: name:key)"
            )
        if not key or any(c.isspace() for c in key):
            raise ValueError(f"{path}, line {number}: the key is empty or contains spaces")
        if name in keys:
            raise ValueError(f"{path}, line {number}: the name {name!r} is used twice")
        if key in seen:
            raise ValueError(
                f"{path}, line {number}: the same key as line {seen[key]}; give each key its own"
            )
        keys[name], seen[key] = key, number
    if not keys:
        raise ValueError(f"--api-keys file {path} holds no keys")
    return ApiKeys(keys)
