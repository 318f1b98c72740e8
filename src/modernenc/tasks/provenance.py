"""What a file of predictions was made from, written beside it: ``OUT.provenance.json``.

A decision read from a predictions file must be reproducible and traceable months later, after the
model folder's thresholds were re-calibrated or its weights replaced: which weights (their SHA-256), which
precision and int8 kernel, which threshold and where it came from, which review band and truncation,
which input (its SHA-256), which software, and when. ``modernenc serve`` records the same per decision in
its audit trail; ``predict`` records it once per file, here. The record also holds the predictions file's
own SHA-256, so a record that does not belong to the file beside it (a crash between the two writes, a
file edited since) shows.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from modernenc.tasks.decisions import weights_sha256
from modernenc.utils.files import sha256_file
from modernenc.utils.outputs import check_output_file, write_text

PROVENANCE_SUFFIX = ".provenance.json"
PROVENANCE_KIND = "provenance"
PROVENANCE_VERSION = 1


def provenance_path(out: str | Path) -> Path:
    """Where the record of ``out`` goes: ``predictions.jsonl`` -> ``predictions.jsonl.provenance.json``."""
    out = Path(out)
    return out.with_name(out.name + PROVENANCE_SUFFIX)


def check_provenance_path(out: str | Path, force: bool) -> Path:
    """Refuse, before any work, a record that may not be replaced (see ``check_output_file``)."""
    return check_output_file(
        provenance_path(out), kind=PROVENANCE_KIND, force=force, what="provenance record of --out"
    )


def _versions() -> dict[str, str]:
    import torch
    import transformers

    from modernenc import __version__

    return {"modernenc": __version__, "torch": torch.__version__, "transformers": transformers.__version__}


def model_record(model_dir: str | Path, precision: str, **more: Any) -> dict[str, Any]:
    """A model as the record names it: its folder, the SHA-256 of its weights, the precision it ran in."""
    from modernenc.model.precision import int8_setup

    return {
        "path": str(Path(model_dir).absolute()),
        "weights_sha256": weights_sha256(model_dir),
        "precision": precision,
        **(int8_setup() if precision == "int8" else {}),
        **more,
    }


def write_provenance(
    out: str | Path,
    *,
    tool: str,
    model_dir: str | Path,
    input_path: str | Path,
    precision: str,
    counts: dict[str, int],
    decision: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the record of the predictions file ``out`` (already written). ``decision``: the threshold,
    its source, the review band and what else decided the labels; ``extra``: more top-level entries (the
    span tagger of ``--with-spans``, say)."""
    out, input_path = Path(out), Path(input_path)
    record: dict[str, Any] = {
        "version": PROVENANCE_VERSION,
        "tool": tool,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "output": {"path": str(out.absolute()), "sha256": sha256_file(out), **counts},
        "input": {"path": str(input_path.absolute()), "sha256": sha256_file(input_path)},
        "model": model_record(model_dir, precision),
        "decision": decision,
        **(extra or {}),
        "versions": _versions(),
    }
    path = provenance_path(out)
    write_text(path, json.dumps(record, indent=2, default=str) + "\n", kind=PROVENANCE_KIND, tool=tool)
    return path
