"""Where the bundled data lives: `../shared/data` beside the checkout, or `$MODERNENC_SHARED_DATA`."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def shared_data_dir() -> Path:
    """The shared data folder (ADE corpus, Wikipedia, PubMed, ModernBERT's tokenizer)."""
    env = os.environ.get("MODERNENC_SHARED_DATA")
    folder = Path(env) if env else REPO_ROOT.parent / "shared" / "data"
    if not folder.is_dir():
        raise FileNotFoundError(
            f"shared data folder {folder} not found; set MODERNENC_SHARED_DATA to its path"
        )
    return folder


def modernbert_tokenizer_dir() -> Path:
    return shared_data_dir() / "tokenizers" / "modernbert"
