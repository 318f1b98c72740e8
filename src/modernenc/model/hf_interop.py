"""Read and write `transformers` ModernBERT checkpoints (`config.json` + `model.safetensors`).

Module names match `transformers`' ModernBert classes, so weights map name for name; the only
translation is the config, and the tied decoder weight, which is not stored (unless untied).
"""

from __future__ import annotations

import itertools
import json
import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from modernenc.model.config import HF_FIELDS, IGNORE_INDEX, ModernEncoderConfig

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"  # a checkpoint sharded over several files
CONFIG_NAME = "config.json"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
)
# Tensors that exist in the module but are not stored when tied: the decoder shares the embedding matrix.
TIED_KEYS = {"decoder.weight": "model.embeddings.tok_embeddings.weight"}
# `transformers` options that would add parameters modernenc does not have.
UNSUPPORTED_TRUE_FLAGS = ("norm_bias", "attention_bias", "mlp_bias", "classifier_bias")


class CheckpointMismatchError(ValueError):
    """The checkpoint's tensors do not fit the model: names which are missing, unexpected or mis-shaped."""


def tied_keys(model: torch.nn.Module) -> set[str]:
    """The keys of `model`'s state dict that alias another tensor and are not stored."""
    if hasattr(model, "decoder") and model.config.tie_word_embeddings:
        return set(TIED_KEYS)
    return set()


def resolve_checkpoint_dir(path_or_hub_id: str | Path) -> Path:
    """A local folder as is; otherwise a hub id, downloaded (or found in the cache) with huggingface_hub."""
    path = Path(path_or_hub_id).expanduser()
    if path.is_dir():
        return path
    name = str(path_or_hub_id)
    if path.is_file():
        raise FileNotFoundError(
            f"{name!r} is a file; pass the checkpoint folder that holds it ({path.parent})"
        )
    looks_like_hub_id = name.count("/") <= 1 and not name.startswith((".", "/", "~")) and not path.suffix
    if not looks_like_hub_id:
        raise FileNotFoundError(f"checkpoint folder {name!r} does not exist")
    from huggingface_hub import snapshot_download

    from modernenc.utils.hub import offline_unless_reachable

    try:
        with offline_unless_reachable():  # cached snapshots still resolve
            return Path(
                snapshot_download(
                    repo_id=name, allow_patterns=[CONFIG_NAME, "*.safetensors", *TOKENIZER_FILES]
                )
            )
    except Exception as err:  # offline, unknown repo, no network: all end the same way for the user
        if "/" in name and path.parent.is_dir():  # e.g. a mistyped checkpoints/run
            raise FileNotFoundError(
                f"checkpoint folder {name!r} does not exist (nor could it be loaded as a Hugging Face hub "
                f"id: {type(err).__name__})"
            ) from None
        raise OSError(
            f"Could not load {name!r} from the Hugging Face hub ({type(err).__name__}); "
            f"pass the path of a local checkpoint folder instead."
        ) from None


def config_from_hf_dict(hf: dict[str, Any], **overrides: Any) -> ModernEncoderConfig:
    """Translate a ModernBERT `config.json` (with `transformers`' defaults filled in) into ours."""
    from transformers import ModernBertConfig

    model_type = hf.get("model_type")
    if model_type != "modernbert":
        raise ValueError(
            f"config.json has model_type={model_type!r}; modernenc reads ModernBERT checkpoints "
            f"(model_type='modernbert') only"
        )
    full = ModernBertConfig.from_dict(hf).to_dict()
    enabled = [flag for flag in UNSUPPORTED_TRUE_FLAGS if full.get(flag)]
    if enabled:
        raise ValueError(f"checkpoint enables {enabled}; modernenc's encoder has no such biases")
    if full.get("rope_scaling"):
        raise ValueError(
            f"checkpoint uses rope_scaling={full['rope_scaling']}; modernenc supports plain RoPE only"
        )
    full.update(_fields_of_transformers_5(full))
    values = {k: full[k] for k in HF_FIELDS if k in full}
    # Read for parity with transformers, which then returns compacted MLM logits; never written.
    values["sparse_prediction"] = bool(full.get("sparse_prediction"))
    ignored = full.get("sparse_pred_ignore_index", IGNORE_INDEX)
    if values["sparse_prediction"] and ignored != IGNORE_INDEX:
        raise ValueError(
            f"checkpoint sets sparse_pred_ignore_index={full['sparse_pred_ignore_index']}; modernenc "
            f"ignores label {IGNORE_INDEX} only"
        )
    if values.get("local_rope_theta") is None:
        values["local_rope_theta"] = values["global_rope_theta"]
    # ModernBertConfig has no mask_token_id; ours is written alongside. Older folders get ModernBERT's id
    # when their vocab has it.
    default_mask = ModernEncoderConfig.mask_token_id
    values["mask_token_id"] = hf.get(
        "mask_token_id", default_mask if default_mask < values["vocab_size"] else None
    )
    label_names = full.get("id2label")  # transformers derives num_labels from it
    if label_names:
        values["num_labels"] = len(label_names)
        values["id2label"] = {int(k): v for k, v in label_names.items()}
    if overrides.get("num_labels", values.get("num_labels")) != values.get("num_labels"):
        values.pop("id2label", None)  # a new label count: the checkpoint's names no longer apply
    values.update(overrides)
    return ModernEncoderConfig.from_dict(values)


def _fields_of_transformers_5(full: dict[str, Any]) -> dict[str, Any]:
    """Our fields from the forms `transformers` 5 gives them: rope thetas inside `rope_parameters` (one entry
    per layer type), and `layer_types` in place of `global_attn_every_n_layers`. Empty under 4.x."""
    fields: dict[str, Any] = {}
    rope = full.get("rope_parameters")
    if rope:
        if any(params.get("rope_type", "default") != "default" for params in rope.values()):
            raise ValueError(f"checkpoint uses rope_parameters={rope}; modernenc supports plain RoPE only")
        fields["global_rope_theta"] = rope["full_attention"]["rope_theta"]
        fields["local_rope_theta"] = rope.get("sliding_attention", rope["full_attention"])["rope_theta"]
    layer_types = full.get("layer_types")
    if layer_types:
        global_at = [i for i, kind in enumerate(layer_types) if kind == "full_attention"]
        every = global_at[1] if len(global_at) > 1 else len(layer_types)
        pattern = ["sliding_attention" if i % every else "full_attention" for i in range(len(layer_types))]
        if list(layer_types) != pattern:
            raise ValueError(
                f"checkpoint has layer_types={layer_types}; modernenc's global layers are every n-th from "
                "layer 0 (global_attn_every_n_layers)"
            )
        fields["global_attn_every_n_layers"] = every
    return fields


def config_to_hf_dict(
    config: ModernEncoderConfig, architecture: str, dtype: torch.dtype = torch.float32
) -> dict[str, Any]:
    from transformers import ModernBertConfig

    values = {k: getattr(config, k) for k in HF_FIELDS}
    id2label = config.id2label or {i: f"LABEL_{i}" for i in range(config.num_labels)}
    hf = ModernBertConfig(
        **values,
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
        bos_token_id=config.cls_token_id,
        eos_token_id=config.sep_token_id,
        norm_bias=False,
        attention_bias=False,
        mlp_bias=False,
        classifier_bias=False,
        architectures=[architecture],
    ).to_diff_dict()  # what transformers' save_pretrained writes: no generation defaults
    hf["mask_token_id"] = config.mask_token_id
    hf["dtype"] = str(dtype).removeprefix("torch.")  # what dtype="auto" loads it as
    return hf


def load_pretrained(cls: type[nn.Module], path_or_hub_id: str | Path, **config_overrides: Any) -> nn.Module:
    folder = resolve_checkpoint_dir(path_or_hub_id)
    config_file = folder / CONFIG_NAME
    if not config_file.is_file():
        raise FileNotFoundError(
            f"{config_file} is missing; a checkpoint folder holds {CONFIG_NAME} and {WEIGHTS_NAME}"
        )
    try:
        hf_config = json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:  # their messages do not name the file
        raise ValueError(f"{config_file} is not valid JSON: {err}") from None
    if not isinstance(hf_config, dict):
        raise ValueError(f"{config_file} must hold a JSON object (a ModernBERT config)")
    config = config_from_hf_dict(hf_config, **config_overrides)
    weights = read_weights(folder)
    architectures = hf_config.get("architectures") or []
    # A checkpoint of this very class (or any, for the bare encoder) fills every tensor, or strict loading
    # fails: the model is then built without random init (at the base shape that was most of `predict`'s
    # start-up) in uninitialised memory, which no page of is touched before the checkpoint's tensors
    # replace it. (Not on the meta device: torch's meta `normal_` and `arange` import torch._dynamo, 1.5 s
    # more.) Another task's checkpoint starts a fresh task layer, which needs the init.
    fills_every_tensor = cls.hf_architecture in (*architectures, "ModernBertModel")
    if fills_every_tensor:
        with _random_init_skipped():
            model = cls(config)
    else:
        model = cls(config)
    state = adapt_state_dict(weights, model, architectures)
    load_state_strict(model, state, source=folder, assign=fills_every_tensor)
    if fills_every_tensor:
        _finish_assigned_model(model, device=next(iter(state.values())).device)
    model.name_or_path = str(path_or_hub_id)
    return model.eval()  # as transformers does: dropout off until training asks for it


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The tensors of `model.safetensors`, or of every shard a `model.safetensors.index.json` lists."""
    from safetensors import SafetensorError

    index_file = folder / WEIGHTS_INDEX_NAME
    if (folder / WEIGHTS_NAME).is_file():
        files = [folder / WEIGHTS_NAME]
    elif index_file.is_file():
        try:
            weight_map = json.loads(index_file.read_text(encoding="utf-8"))["weight_map"]
            files = [folder / name for name in sorted(set(weight_map.values()))]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError):
            raise ValueError(f"{index_file} is not a safetensors index (no 'weight_map')") from None
    else:
        pickled = [n for n in ("pytorch_model.bin", "pytorch_model.bin.index.json") if (folder / n).is_file()]
        hint = (
            f"; it holds {pickled[0]}, which modernenc does not unpickle: re-save it with transformers' "
            "save_pretrained (safetensors is its default)"
            if pickled
            else ""
        )
        raise FileNotFoundError(f"{folder / WEIGHTS_NAME} is missing{hint}")
    weights: dict[str, torch.Tensor] = {}
    for file in files:
        if not file.is_file():
            raise FileNotFoundError(f"{file} is missing; {index_file.name} lists it")
        try:
            weights.update(load_file(str(file)))
        except (SafetensorError, OSError) as err:
            raise ValueError(f"{file} is not a readable safetensors file: {err}") from None
    return weights


def adapt_state_dict(
    state: dict[str, torch.Tensor], model: nn.Module, architectures: list[str]
) -> dict[str, torch.Tensor]:
    """Fit a checkpoint's keys to `model`: the bare encoder drops the `model.` prefix and any head; a task
    model loaded from another task's checkpoint keeps the shared encoder and `head` and starts a fresh
    task layer (the usual fine-tuning start)."""
    for tied in tied_keys(model):
        state.pop(tied, None)
    own_keys = set(model.state_dict())
    if model.hf_architecture == "ModernBertModel":
        if any(k.startswith("model.") for k in state):
            state = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
        return state
    if not any(k.startswith("model.") for k in state):  # a bare-encoder checkpoint
        state = {f"model.{k}": v for k, v in state.items()}
    same_task = not architectures or model.hf_architecture in architectures
    if not same_task:

        def task_layer(key: str) -> bool:  # what follows the shared encoder and head block
            return not key.startswith(("model.", "head."))

        def replaced(key: str, other: set[str]) -> bool:  # a task layer, or a head part only one side has
            return task_layer(key) or (key.startswith("head.") and key not in other)

        dropped = sorted(k for k in state if replaced(k, own_keys))
        fresh = sorted(k for k in own_keys - tied_keys(model) if replaced(k, set(state)))
        state = {k: v for k, v in state.items() if k not in dropped}
        for key in fresh:  # keep this model's own (freshly initialised) task layer
            state[key] = model.state_dict()[key]
        if dropped or fresh:
            logger.warning(
                "Loading a %s checkpoint into %s: dropped %s, newly initialised %s",
                "/".join(architectures),
                type(model).__name__,
                dropped or "nothing",
                fresh or "nothing",
            )
    return state


@contextmanager
def _random_init_skipped() -> Iterator[None]:
    """`torch.nn.init`'s functions as no-ops while a model is built that a checkpoint fills whole, as
    transformers' `no_init_weights` does: its parameters keep `torch.empty`'s uninitialised memory."""
    names = [name for name in vars(nn.init) if name.endswith("_") and not name.startswith("_")]
    originals = {name: getattr(nn.init, name) for name in names}
    for name in names:
        setattr(nn.init, name, lambda tensor, *args, **kwargs: tensor)
    try:
        yield
    finally:
        for name, function in originals.items():
            setattr(nn.init, name, function)


def _finish_assigned_model(model: nn.Module, device: torch.device) -> None:
    """After the checkpoint's tensors replaced the model's own (``assign``): compute the buffers no
    checkpoint stores on the checkpoint's device (modules say how, with `reset_buffers`), and tie the
    weights that share a tensor."""
    for module in model.modules():
        if hasattr(module, "reset_buffers"):
            module.reset_buffers(device)
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    left = [n for n, t in itertools.chain(model.named_parameters(), model.named_buffers()) if t.is_meta]
    if left:  # a module with a computed buffer but no reset_buffers: a bug, not the checkpoint's fault
        raise RuntimeError(f"{type(model).__name__} kept tensors without values after loading: {left}")


def load_state_strict(
    model: nn.Module, state: dict[str, torch.Tensor], source: Path, assign: bool = False
) -> None:
    tied = tied_keys(model)
    expected = {k: v for k, v in model.state_dict().items() if k not in tied}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = sorted(
        f"{k} (checkpoint {tuple(state[k].shape)}, model {tuple(expected[k].shape)})"
        for k in set(state) & set(expected)
        if state[k].shape != expected[k].shape
    )
    if missing or unexpected or misshaped:
        parts = [
            f"{label}: {', '.join(keys[:12])}{' ...' if len(keys) > 12 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped))
            if keys
        ]
        raise CheckpointMismatchError(
            f"checkpoint {source} does not fit {type(model).__name__}: " + "; ".join(parts)
        )
    if assign:  # the model takes the checkpoint's tensors themselves: keep its dtypes, as copying does
        state = {k: v.to(expected[k].dtype) for k, v in state.items()}
    model.load_state_dict(state, strict=False, assign=assign)  # strict=False: tied keys are absent


def find_tokenizer_files(tokenizer_dir: str | Path) -> list[Path]:
    """The tokenizer files in `tokenizer_dir` that a checkpoint folder carries; none is an error."""
    tokenizer_dir = Path(tokenizer_dir)
    found = [tokenizer_dir / f for f in TOKENIZER_FILES if (tokenizer_dir / f).is_file()]
    if not found:
        raise FileNotFoundError(f"no tokenizer files ({', '.join(TOKENIZER_FILES)}) in {tokenizer_dir}")
    return found


def save_pretrained(
    model: nn.Module,
    out_dir: str | Path,
    tokenizer_path: str | Path | None = None,
    overwrite: bool = False,
) -> Path:
    out = Path(out_dir)
    precision = getattr(model, "inference_precision", None)
    if precision not in (None, "fp32"):  # its linear layers hold bf16 or int8 copies, not the checkpoint
        raise ValueError(
            f"this model was converted for {precision} inference (for_inference), so it no longer holds the "
            "checkpoint's weights and is not saved: a folder keeps the fp32 checkpoint, and the precision "
            "is chosen when loading it. Save the model before converting it"
        )
    weights_file = out / WEIGHTS_NAME
    if weights_file.exists() and not overwrite:
        raise FileExistsError(f"{out} already holds a checkpoint; pass overwrite=True (--force) to replace")
    tokenizer_files = find_tokenizer_files(tokenizer_path) if tokenizer_path is not None else []
    out.mkdir(parents=True, exist_ok=True)
    tied = tied_keys(model)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items() if k not in tied}
    save_file(state, str(weights_file), metadata={"format": "pt"})
    dtype = next((v.dtype for v in state.values() if v.is_floating_point()), torch.float32)
    hf_config = config_to_hf_dict(model.config, model.hf_architecture, dtype)
    (out / CONFIG_NAME).write_text(json.dumps(hf_config, indent=2, sort_keys=True) + "\n")
    for file in tokenizer_files:
        # Through a new file: the originals may be read-only (copy2 would pass that on to our copy), and
        # the source may be the target itself, when a folder is re-saved with its own tokenizer.
        partial = out / f".{file.name}.partial"
        shutil.copyfile(file, partial)
        partial.replace(out / file.name)
    return out
