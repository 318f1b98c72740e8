"""Where the bundled data lives (ADE corpus, Wikipedia, PubMed, ModernBERT's tokenizer).

In order: `$MODERNENC_SHARED_DATA`; `../shared/data` beside the working directory; `shared/data` beside
the source checkout this package was loaded from (when it was).
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "MODERNENC_SHARED_DATA"
# The checkout's root when modernenc runs from a source tree (src/modernenc/pv/ -> the root); else None.
_ROOT = Path(__file__).resolve().parents[3]
SOURCE_CHECKOUT = _ROOT if (_ROOT / "pyproject.toml").is_file() else None


def shared_data_dir() -> Path:
    """The shared data folder; a missing one is an error that says how to point at it."""
    env = os.environ.get(ENV_VAR)
    if env:
        if not Path(env).is_dir():
            raise FileNotFoundError(f"{ENV_VAR}={env} is not a folder")
        return Path(env)
    candidates = [Path("..") / "shared" / "data"]
    if SOURCE_CHECKOUT is not None:
        candidates.append(SOURCE_CHECKOUT.parent / "shared" / "data")
    for folder in candidates:
        if folder.is_dir():
            return folder.resolve()
    raise FileNotFoundError(f"shared data folder {candidates[-1]} not found; set {ENV_VAR} to its path")


def modernbert_tokenizer_dir() -> Path:
    return shared_data_dir() / "tokenizers" / "modernbert"
