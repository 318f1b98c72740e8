"""LoRA fine-tuning through peft, kept invisible outside training.

`apply_lora` wraps a task model in a `peft.PeftModel`: low-rank adapters on the named linear layers, the
modules in `modules_to_save` (the classification head and classifier) trained in full, everything else
frozen. Whatever leaves training (the best model, a final model, an exported checkpoint) goes through
`plain_model`, which merges the adapters into a copy: every saved folder is a plain `transformers`
ModernBERT folder, and training continues on the unmerged original.

peft is an optional extra, imported only here and only when a config asks for LoRA.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from torch import nn

from modernenc.model.encoder import ModernEncoderPreTrainedModel
from modernenc.train.config import ConfigError

PEFT_EXTRA = "finetune.lora needs peft, an optional extra: pip install 'modernenc[peft]'"


def _import_peft():
    try:
        import peft
    except ImportError:
        raise ConfigError(PEFT_EXTRA) from None
    return peft


def _matches(name: str, target: str) -> bool:
    """peft's rule for a list of target names: the full module name, or its last dotted components."""
    return name == target or name.endswith("." + target)


def _check_names(model: nn.Module, targets: list[str], modules_to_save: list[str]) -> None:
    """Every target must match a linear layer and every module to save some module, or the message lists
    what the model has (peft's own error names only what it did not find)."""
    modules = [(name, m) for name, m in model.named_modules() if name]
    linear_names = [name for name, m in modules if isinstance(m, nn.Linear)]
    missing = [t for t in targets if not any(_matches(n, t) for n in linear_names)]
    if missing:
        has = sorted({name.rsplit(".", 1)[-1] for name in linear_names})
        raise ConfigError(
            f"finetune.lora.target_modules names {', '.join(missing)}, which {type(model).__name__} has no "
            f"linear layer called; its linear layers are named {', '.join(has)}"
        )
    missing = [t for t in modules_to_save if not any(_matches(n, t) for n, _ in modules)]
    if missing:
        top = [name for name, _ in modules if "." not in name]
        raise ConfigError(
            f"finetune.lora.modules_to_save names {', '.join(missing)}, which {type(model).__name__} lacks; "
            f"its top-level modules are {', '.join(top)}"
        )


def apply_lora(model: ModernEncoderPreTrainedModel, settings: Mapping[str, Any]) -> nn.Module:
    """`model` wrapped for LoRA training with `settings` (the keys of `train.config.LoraConfig`)."""
    peft = _import_peft()
    targets, to_save = list(settings["target_modules"]), list(settings["modules_to_save"])
    _check_names(model, targets, to_save)
    config = peft.LoraConfig(
        r=int(settings["r"]),
        lora_alpha=float(settings["alpha"]),
        lora_dropout=float(settings["dropout"]),
        target_modules=targets,
        modules_to_save=to_save,
        bias="none",
        # No task_type: peft's task wrappers re-map forward arguments to a padded transformers signature and
        # would drop the packed-batch ones (cu_seqlens, max_seqlen, position_ids).
    )
    return peft.get_peft_model(model, config)


def is_lora(model: nn.Module) -> bool:
    """True for a model wrapped by `apply_lora` (checked without importing peft)."""
    return type(model).__module__.startswith("peft.")


def plain_model(model: nn.Module) -> ModernEncoderPreTrainedModel:
    """The model to save: a LoRA model's adapters merged into a copy (the original keeps training), or
    the model itself."""
    if not is_lora(model):
        return model
    return copy.deepcopy(model).merge_and_unload()


def lora_settings(model: nn.Module) -> dict[str, Any] | None:
    """The `LoraConfig` keys a wrapped model was built with (stored in checkpoints), or None."""
    if not is_lora(model):
        return None
    config = model.peft_config["default"]
    return {
        "r": config.r,
        "alpha": config.lora_alpha,
        "dropout": config.lora_dropout,
        "target_modules": sorted(config.target_modules),
        "modules_to_save": sorted(config.modules_to_save or []),
    }


def trainable_parameters(model: nn.Module) -> int:
    """Parameters the optimizer updates (tied weights count once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters() if p.requires_grad}.values())
