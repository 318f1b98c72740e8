"""Where the bundled data lives (ADE corpus, Wikipedia, PubMed, ModernBERT's tokenizer).

In order:
1. `$MODERNENC_SHARED_DATA`;
2. `../shared/data` beside the working directory, then `shared/data` beside the source checkout this
   package was loaded from (when it was);
3. the folder `modernenc fetch-data` fills by default: `$XDG_CACHE_HOME/modernenc/data`
   (`~/.cache/modernenc/data`), once its `manifest.json` is there (it is written last).

The fetched copy goes in the user's cache rather than Hugging Face's (`$HF_HOME`): it is modernenc's own
derived data, rebuilt from the hub whenever it is deleted, and `huggingface-cli delete-cache` should not
have to know about it.
"""

from __future__ import annotations

import os
from pathlib import Path

from modernenc.pv.data_manifest import MANIFEST

ENV_VAR = "MODERNENC_SHARED_DATA"
# The checkout's root when modernenc runs from a source tree (src/modernenc/pv/ -> the root); else None.
_ROOT = Path(__file__).resolve().parents[3]
SOURCE_CHECKOUT = _ROOT if (_ROOT / "pyproject.toml").is_file() else None


class DataNotFound(FileNotFoundError):
    """No bundled data in any of the places looked in."""


def user_data_dir() -> Path:
    """`$XDG_CACHE_HOME/modernenc/data`, or `~/.cache/modernenc/data` (a relative XDG path is ignored, as
    the XDG spec says)."""
    cache = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(cache) if cache and Path(cache).is_absolute() else Path.home() / ".cache"
    return base / "modernenc" / "data"


def _shared_candidates() -> list[Path]:
    candidates = [Path("..") / "shared" / "data"]
    if SOURCE_CHECKOUT is not None:
        candidates.append(SOURCE_CHECKOUT.parent / "shared" / "data")
    return candidates


def shared_data_dir() -> Path:
    """The bundled data folder; none anywhere is a `DataNotFound` that names every way to provide it."""
    env = os.environ.get(ENV_VAR)
    if env:
        if not Path(env).is_dir():
            raise FileNotFoundError(f"{ENV_VAR}={env} is not a folder")
        return Path(env)
    for folder in _shared_candidates():
        if folder.is_dir():
            return folder.resolve()
    fetched = user_data_dir()
    if (fetched / MANIFEST).is_file():
        return fetched
    raise DataNotFound(
        f"no bundled data found (${ENV_VAR} is unset, no ../shared/data, nothing fetched in {fetched}); "
        f"set {ENV_VAR} to a copy of the data folder, or run `modernenc fetch-data` where the Hugging Face "
        "hub is reachable"
    )


def modernbert_tokenizer_dir() -> Path:
    return shared_data_dir() / "tokenizers" / "modernbert"
