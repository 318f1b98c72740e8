"""Read and write `transformers` ModernBERT checkpoints (`config.json` + `model.safetensors`).

Module names match `transformers`' ModernBert classes, so weights map name for name; the only
translation is the config, and the tied decoder weight, which is not stored.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file

from modernenc.model.config import ModernEncoderConfig

if TYPE_CHECKING:
    from modernenc.model.encoder import ModernEncoderPreTrainedModel

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
)
# The decision thresholds fine-tuning chose for the weights beside them (`tasks.predict`): stale once the
# weights are replaced, so overwriting a folder removes it.
THRESHOLDS_FILE = "thresholds.json"
# Tensors that exist in the module but are never stored: the decoder shares the embedding matrix.
TIED_KEYS = {"decoder.weight": "model.embeddings.tok_embeddings.weight"}
# `transformers` options that would add parameters modernenc does not have.
UNSUPPORTED_TRUE_FLAGS = ("norm_bias", "attention_bias", "mlp_bias", "classifier_bias")
# ModernBertConfig fields that are ours too, under the same name.
SHARED_FIELDS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "hidden_activation",
    "max_position_embeddings",
    "norm_eps",
    "global_attn_every_n_layers",
    "local_attention",
    "global_rope_theta",
    "local_rope_theta",
    "embedding_dropout",
    "attention_dropout",
    "mlp_dropout",
    "classifier_pooling",
    "classifier_dropout",
    "classifier_activation",
    "decoder_bias",
    "pad_token_id",
    "cls_token_id",
    "sep_token_id",
    "initializer_range",
    "initializer_cutoff_factor",
    "sparse_prediction",
    "num_labels",
    "problem_type",
)


class CheckpointMismatchError(ValueError):
    """The checkpoint's tensors do not fit the model: names which are missing, unexpected or mis-shaped."""


def resolve_checkpoint_dir(path_or_hub_id: str | Path) -> Path:
    """A local folder as is; otherwise a hub id, downloaded (or found in the cache) with huggingface_hub."""
    path = Path(path_or_hub_id).expanduser()
    if path.is_dir():
        return path
    name = str(path_or_hub_id)
    looks_like_hub_id = name.count("/") <= 1 and not name.startswith((".", "/", "~")) and not path.suffix
    if not looks_like_hub_id:
        raise FileNotFoundError(f"checkpoint folder {name!r} does not exist")
    from huggingface_hub import snapshot_download

    from modernenc.hub import offline_unless_reachable

    try:
        with offline_unless_reachable():  # cached snapshots still resolve
            return Path(
                snapshot_download(
                    repo_id=name, allow_patterns=[CONFIG_NAME, "*.safetensors", *TOKENIZER_FILES]
                )
            )
    except Exception as err:  # offline, unknown repo, no network: all end the same way for the user
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
    values = {k: full[k] for k in SHARED_FIELDS if k in full}
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
    values.update(overrides)
    return ModernEncoderConfig.from_dict(values)


def config_to_hf_dict(config: ModernEncoderConfig, architecture: str) -> dict[str, Any]:
    from transformers import ModernBertConfig

    values = {k: getattr(config, k) for k in SHARED_FIELDS}
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
    ).to_dict()
    hf["mask_token_id"] = config.mask_token_id
    hf["torch_dtype"] = "float32"
    return hf


def load_pretrained(
    cls: type[ModernEncoderPreTrainedModel], path_or_hub_id: str | Path, **config_overrides: Any
) -> ModernEncoderPreTrainedModel:
    folder = resolve_checkpoint_dir(path_or_hub_id)
    config_file, weights_file = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    for needed in (config_file, weights_file):
        if not needed.is_file():
            raise FileNotFoundError(
                f"{needed} is missing; a checkpoint folder holds {CONFIG_NAME} and {WEIGHTS_NAME}"
            )
    try:
        hf_config = json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:  # their messages do not name the file
        raise ValueError(f"{config_file} is not valid JSON: {err}") from None
    if not isinstance(hf_config, dict):
        raise ValueError(f"{config_file} must hold a JSON object (a ModernBERT config)")
    config = config_from_hf_dict(hf_config, **config_overrides)
    model = cls(config)
    state = adapt_state_dict(load_file(str(weights_file)), model, hf_config.get("architectures") or [])
    load_state_strict(model, state, source=folder)
    model.name_or_path = str(path_or_hub_id)
    return model


def adapt_state_dict(
    state: dict[str, torch.Tensor], model: ModernEncoderPreTrainedModel, architectures: list[str]
) -> dict[str, torch.Tensor]:
    """Fit a checkpoint's keys to `model`: the bare encoder drops the `model.` prefix and any head; a task
    model loaded from another task's checkpoint keeps the shared encoder and `head` and starts a fresh
    task layer (the usual fine-tuning start)."""
    for tied in TIED_KEYS:
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
        dropped = sorted(k for k in state if k not in own_keys and not k.startswith("model."))
        fresh = sorted(k for k in own_keys - set(state) - set(TIED_KEYS) if not k.startswith("model."))
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


def load_state_strict(
    model: ModernEncoderPreTrainedModel, state: dict[str, torch.Tensor], source: Path
) -> None:
    expected = {k: v for k, v in model.state_dict().items() if k not in TIED_KEYS}
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
    model.load_state_dict(state, strict=False)  # strict=False only because tied keys are absent


def find_tokenizer_files(tokenizer_dir: str | Path) -> list[Path]:
    """The tokenizer files in `tokenizer_dir` that a checkpoint folder carries; none is an error."""
    tokenizer_dir = Path(tokenizer_dir)
    found = [tokenizer_dir / f for f in TOKENIZER_FILES if (tokenizer_dir / f).is_file()]
    if not found:
        raise FileNotFoundError(f"no tokenizer files ({', '.join(TOKENIZER_FILES)}) in {tokenizer_dir}")
    return found


def save_pretrained(
    model: ModernEncoderPreTrainedModel,
    out_dir: str | Path,
    tokenizer_path: str | Path | None = None,
    overwrite: bool = False,
) -> Path:
    out = Path(out_dir)
    weights_file = out / WEIGHTS_NAME
    if weights_file.exists() and not overwrite:
        raise FileExistsError(f"{out} already holds a checkpoint; pass overwrite=True (--force) to replace")
    tokenizer_files = find_tokenizer_files(tokenizer_path) if tokenizer_path is not None else []
    out.mkdir(parents=True, exist_ok=True)
    (out / THRESHOLDS_FILE).unlink(missing_ok=True)
    state = {
        k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items() if k not in TIED_KEYS
    }
    save_file(state, str(weights_file), metadata={"format": "pt"})
    hf_config = config_to_hf_dict(model.config, model.hf_architecture)
    (out / CONFIG_NAME).write_text(json.dumps(hf_config, indent=2, sort_keys=True) + "\n")
    for file in tokenizer_files:
        shutil.copy2(file, out / file.name)
    return out
