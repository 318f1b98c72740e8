"""Average the weights of several train.py checkpoints of one run (ModernBERT-base averaged its last ones).

Checkpoints are chosen from a save folder by training step (`--last K`) or by a metric logged during the
run (`--best K --metric eval/LanguageCrossEntropy`). Metrics come from the `TrainingCurves` callback's
history, which composer stores in every checkpoint (composer's own metric state is saved only with
`save_metrics=True`, and then only for the latest evaluation); a checkpoint counts only if an evaluation
ran at its very step, so keep `save_interval` a multiple of `eval_interval`.

The result has the newest chosen checkpoint's structure (timestamp, optimizer, callbacks) with the averaged
model weights in `state.model`, so `modernenc export-hf` and `model.init_from` read it like any other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from modernenc.model.config import RUNTIME_FIELDS
from modernenc.train.export import EXTRA_STATE_KEY, load_checkpoint_file
from modernenc.utils.outputs import check_output_file, writing_file

CHECKPOINT_NAME = re.compile(r"^ep(?P<epoch>\d+)-ba(?P<batch>\d+)-rank0\.pt$")  # train.py's save_filename
LOWER_IS_BETTER = ("loss", "crossentropy", "perplexity")


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    batch: int


def list_checkpoints(folder: str | Path) -> list[Checkpoint]:
    """The rank-0 checkpoints in a train.py save folder, oldest first; `latest-rank0.pt` and other
    symlinks are skipped so no checkpoint counts twice."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"save folder {folder} does not exist")
    found = []
    for path in folder.iterdir():
        match = CHECKPOINT_NAME.match(path.name)
        if match and path.is_file() and not path.is_symlink():
            found.append(Checkpoint(path, int(match["batch"])))
    if not found:
        raise FileNotFoundError(f"no train.py checkpoints (ep*-ba*-rank0.pt) in {folder}")
    return sorted(found, key=lambda c: c.batch)


def _need(checkpoints: list[Checkpoint], k: int) -> None:
    if k < 1:
        raise ValueError(f"the number of checkpoints to average must be at least 1; got {k}")
    if len(checkpoints) < k:
        names = ", ".join(c.path.name for c in checkpoints)
        raise ValueError(
            f"asked for {k} checkpoints but the folder holds {len(checkpoints)} ({names}); train.py keeps "
            f"the last save_num_checkpoints_to_keep of them (-1 keeps all)"
        )


def select_last(checkpoints: list[Checkpoint], k: int) -> list[Checkpoint]:
    """The `k` checkpoints with the highest training step."""
    _need(checkpoints, k)
    return checkpoints[-k:]


def lower_is_better(metric: str) -> bool:
    return any(word in metric.lower().replace("_", "") for word in LOWER_IS_BETTER)


def logged_metric(checkpoints: list[Checkpoint], metric: str) -> dict[int, float]:
    """`metric`'s logged values by training step, read from the newest checkpoint's TrainingCurves history
    (which holds the whole run's). `metric` is a history key such as `eval/LanguageCrossEntropy`; a bare
    name gets the `eval/` prefix."""
    newest = checkpoints[-1].path
    state = load_checkpoint_file(newest, mmap=True)["state"]
    history = state.get("callbacks", {}).get("TrainingCurves", {}).get("history")
    if history is None:
        raise ValueError(
            f"{newest} holds no logged metrics (the TrainingCurves callback was off: logging.plots=false); "
            f"choose checkpoints with --last instead"
        )
    key = metric if metric in history else f"eval/{metric}"
    if key not in history:
        raise ValueError(f"{newest} has no logged metric {metric!r}; logged: {', '.join(sorted(history))}")
    return {int(step): float(value) for step, value in history[key]}


def select_best(checkpoints: list[Checkpoint], k: int, metric: str, minimize: bool) -> list[Checkpoint]:
    """The `k` checkpoints with the best `metric` value at their own step, oldest first."""
    _need(checkpoints, k)
    values = logged_metric(checkpoints, metric)
    scored = [c for c in checkpoints if c.batch in values]
    if len(scored) < k:
        unscored = [c.path.name for c in checkpoints if c.batch not in values]
        raise ValueError(
            f"{metric} was logged at batches {sorted(values) or 'none'}, so only {len(scored)} of the "
            f"checkpoints can be ranked (no evaluation at the step of {', '.join(unscored) or 'none'}); "
            f"make save_interval a multiple of eval_interval or use --last"
        )
    ranked = sorted(scored, key=lambda c: values[c.batch], reverse=not minimize)
    return sorted(ranked[:k], key=lambda c: c.batch)


def _check_same_model(reference: dict, other: dict, ref_name: str, name: str) -> None:
    """Same architecture and config (checked first: a model of another size then names the sizes, not its
    hundreds of tensors), then the same tensor names and shapes (a changed tensor is named)."""
    ref_extra, extra = reference.get(EXTRA_STATE_KEY) or {}, other.get(EXTRA_STATE_KEY) or {}
    if ref_extra.get("architecture") != extra.get("architecture"):
        raise ValueError(
            f"{name} holds a {extra.get('architecture')} model "
            f"but {ref_name} a {ref_extra.get('architecture')}"
        )
    a, b = ref_extra.get("model_config") or {}, extra.get("model_config") or {}
    changed = sorted(f for f in set(a) | set(b) if f not in RUNTIME_FIELDS and a.get(f) != b.get(f))
    if changed:
        raise ValueError(f"{name} and {ref_name} are different models: their configs differ in {changed}")
    missing, unexpected = sorted(set(reference) - set(other)), sorted(set(other) - set(reference))
    if missing or unexpected:
        raise ValueError(
            f"{name} and {ref_name} hold different tensors: {name} lacks {_some(missing)} "
            f"and has extra {_some(unexpected)}"
        )
    for key, ref in reference.items():
        if isinstance(ref, torch.Tensor) and tuple(ref.shape) != tuple(other[key].shape):
            raise ValueError(
                f"tensor {key} has shape {tuple(other[key].shape)} in {name} "
                f"but {tuple(ref.shape)} in {ref_name}"
            )


def _some(names: list[str], shown: int = 3) -> str:
    """The first few of `names` and how many there are in all, for a one-line message."""
    if not names:
        return "none"
    return ", ".join(names[:shown]) + (f", ... ({len(names)} in all)" if len(names) > shown else "")


def _alias_of(state: dict) -> dict[str, str]:
    """Keys whose tensor is a view of an earlier key's (the decoder weight tied to the embeddings)."""
    seen: dict[tuple, str] = {}
    aliases = {}
    for key, value in state.items():
        if isinstance(value, torch.Tensor):
            ident = (value.untyped_storage().data_ptr(), value.storage_offset(), value.shape, value.stride())
            aliases[key] = seen.setdefault(ident, key)
    return {k: v for k, v in aliases.items() if k != v}


def check_output_name(out: str | Path) -> Path:
    """`out` as a Path, refused unless it ends in `.pt`: `model.init_from` takes only such a path for a
    train.py checkpoint (anything else is read as a Hugging Face folder)."""
    out = Path(out)
    if out.suffix != ".pt":
        raise ValueError(
            f"output {out} must end in .pt, the suffix model.init_from and export-hf expect of a checkpoint"
        )
    return out


def average_checkpoints(paths: list[str | Path], out: str | Path, overwrite: bool = False) -> Path:
    """Write `out`: the last of `paths` with `state.model` replaced by the mean over all of `paths`.

    Floating-point tensors are summed in fp32 and cast back; other tensors (integer buffers) and
    non-tensor entries are the last checkpoint's. Mismatched models fail naming the tensor.
    """
    if not paths:
        raise ValueError("no checkpoints to average")
    paths = [Path(p) for p in paths]
    out = check_output_file(check_output_name(out), kind="checkpoint", force=overwrite, inputs=paths)
    template_path = paths[-1]
    template = load_checkpoint_file(template_path, mmap=True)
    reference = template["state"]["model"]
    if (reference.get(EXTRA_STATE_KEY) or {}).get("lora"):
        raise ValueError(
            f"{template_path} holds LoRA adapters: averaging their two factors separately is not the average "
            "of the updates they make; export each checkpoint with `modernenc export-hf` (which merges them)"
        )
    aliases = _alias_of(reference)
    sums = {
        k: v.to(torch.float32, copy=True)
        for k, v in reference.items()
        if isinstance(v, torch.Tensor) and v.is_floating_point() and k not in aliases
    }
    for path in paths[:-1]:
        model = load_checkpoint_file(path, mmap=True)["state"]["model"]
        _check_same_model(reference, model, template_path.name, path.name)
        for key, total in sums.items():
            total += model[key].to(torch.float32)
    averaged = dict(reference)
    for key, total in sums.items():
        averaged[key] = (total / len(paths)).to(reference[key].dtype)
    for key, source in aliases.items():  # keep tied weights tied, stored once
        averaged[key] = averaged[source]
    template["state"]["model"] = averaged
    template["modernenc_averaged_from"] = [str(p.resolve()) for p in paths]  # which run each came from
    with writing_file(out, kind="checkpoint", tool="average-checkpoints") as tmp:
        torch.save(template, tmp)  # under a temporary name: never a half-written file under `out`
    return out
