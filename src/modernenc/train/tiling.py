"""Grow a trained encoder into a bigger one by centred weight tiling (how ModernBERT-large started from base).

Width: every weight is repeated periodically along each dimension that grows, with the small tensor's
centre on the big tensor's centre (`tile_tensor`). Fused projections are split first (Wqkv into q, k, v;
GLU Wi into input and gate), so q never spills into k, and attention is tiled whole heads at a time, so a
big head is always a copy of a small head and rotary pairs stay intact.

Depth: big layer i copies small layer `layer_map(...)[i]`. Global-attention layers are filled from global
layers and local from local (the research code's `round(i * L_small / L_big)` puts local layers into global
slots). A map that is monotone over the whole depth, uses every small layer and keeps the attention types
does not exist when the local/global pattern repeats more often in the big model (base -> large: 8 -> 10
global layers), so each type is spread evenly and in order on its own; see `layer_map`.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import torch

from modernenc.model.config import PRESETS, TILING_GROWS, TILING_KEPT, ModernEncoderConfig
from modernenc.model.encoder import ModernEncoderPreTrainedModel
from modernenc.model.hf_interop import CONFIG_NAME, TOKENIZER_FILES, find_tokenizer_files, tied_keys
from modernenc.utils.outputs import check_output_folder

_LAYER_KEY = re.compile(r"^(?P<prefix>(?:model\.)?layers\.)(?P<idx>\d+)\.(?P<rest>.+)$")


def tile_tensor(src: torch.Tensor, shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
    """`src` repeated periodically to `shape`, centred.

    Along each dimension d, with n = src.shape[d], m = shape[d] and offset o = (m - n) // 2::

        out[..., j, ...] = src[..., (j - o) mod n, ...]        for j in 0 .. m - 1

    so `out[o : o + n]` is `src` itself and the copies wrap around it on both sides. For [a, b, c]:
    m = 5 gives [c, a, b, c, a] and m = 7 gives [b, c, a, b, c, a, b]. When m - n is odd the extra element
    goes to the end. A dimension may not shrink.
    """
    if len(shape) != src.dim():
        raise ValueError(f"cannot tile a {src.dim()}-d tensor to shape {tuple(shape)}")
    out = src
    for dim, (n, m) in enumerate(zip(src.shape, shape, strict=True)):
        if m < n:
            raise ValueError(f"cannot tile {tuple(src.shape)} to {tuple(shape)}: dimension {dim} shrinks")
        if m != n:
            index = (torch.arange(m) - (m - n) // 2) % n
            out = out.index_select(dim, index.to(src.device))
    return out.clone()


def _tile_heads(weight: torch.Tensor, shape: tuple[int, int], head_dim: int, head_axis: int) -> torch.Tensor:
    """Tile a projection whose `head_axis` is heads x head_dim, whole heads at a time."""
    split = list(weight.shape)
    split[head_axis : head_axis + 1] = [weight.shape[head_axis] // head_dim, head_dim]
    target = list(shape)
    target[head_axis : head_axis + 1] = [shape[head_axis] // head_dim, head_dim]
    return tile_tensor(weight.reshape(split), target).reshape(shape)


def _tile_fused(weight: torch.Tensor, shape: tuple[int, int], parts: int, tile) -> torch.Tensor:
    """Split a fused projection along dim 0, tile each part, and fuse again."""
    part_shape = (shape[0] // parts, shape[1])
    return torch.cat([tile(p, part_shape) for p in weight.chunk(parts, dim=0)], dim=0)


def repeat_counts(n: int, m: int) -> torch.Tensor:
    """For each of the m positions of a dimension tiled from n, how many positions share its source."""
    index = (torch.arange(m) - (m - n) // 2) % n
    return torch.bincount(index, minlength=n)[index]


def _input_counts(
    key: str, small: ModernEncoderConfig, big: ModernEncoderConfig, tied_decoder: bool
) -> torch.Tensor | None:
    """Repeat counts along the input dimension (dim 1, or dim 0 of a vector) of the tensor `key`, or None
    when its input does not come from a tiled dimension."""
    hidden = repeat_counts(small.hidden_size, big.hidden_size)
    if key.endswith(("attn.Wqkv.weight", "mlp.Wi.weight", "head.dense.weight", "classifier.weight")):
        return hidden
    if key == "decoder.weight" and not tied_decoder:
        return hidden
    if key.endswith("attn.Wo.weight"):  # heads were tiled whole
        heads = repeat_counts(small.num_attention_heads, big.num_attention_heads)
        return heads.repeat_interleave(big.head_dim)
    if key.endswith("mlp.Wo.weight"):
        return repeat_counts(small.intermediate_size, big.intermediate_size)
    if key == "head.norm.weight" and tied_decoder:  # the decoder shares the embeddings: scale its input
        return hidden
    return None


def _spread(sources: list[int], slots: int) -> list[int]:
    """`slots` picks from `sources`, in order, each used, repeats spread symmetrically over the slots."""
    return [sources[int((k + 0.5) * len(sources) / slots)] for k in range(slots)]


def layer_map(small_config: ModernEncoderConfig, big_config: ModernEncoderConfig) -> list[int]:
    """For each big layer, the small layer it copies.

    Global slots take the small model's global layers and local slots its local ones. Within each type the
    k-th of n big slots takes the small layer floor((k + 1/2) * m / n) of that type's m: in order, every one
    used, first to first and last to last, the repeats placed symmetrically about the middle.
    """
    kinds = {}
    for name, config in (("small", small_config), ("big", big_config)):
        layers = range(config.num_hidden_layers)
        kinds[name] = {
            is_global: [i for i in layers if config.is_global_layer(i) == is_global]
            for is_global in (True, False)
        }
    result = [0] * big_config.num_hidden_layers
    for is_global in (True, False):
        sources, slots = kinds["small"][is_global], kinds["big"][is_global]
        kind = "global" if is_global else "local"
        if len(slots) < len(sources) or (sources == [] and slots):
            raise ValueError(
                f"cannot map {len(sources)} {kind}-attention layers of the small model onto "
                f"{len(slots)} of the big one; the big model needs at least as many of each type"
            )
        for slot, source in zip(slots, _spread(sources, len(slots)), strict=True):
            result[slot] = source
    return result


def config_for_preset(small_config: ModernEncoderConfig, preset: str) -> ModernEncoderConfig:
    """`small_config` with the sizes of `preset`; everything else (vocab, tokens, rope, heads) kept."""
    if preset not in PRESETS:
        raise ValueError(f"unknown model preset {preset!r}; choose one of {sorted(PRESETS)}")
    return dataclasses.replace(small_config, **PRESETS[preset])


def _check_configs(small: ModernEncoderConfig, big: ModernEncoderConfig) -> None:
    # The head size is derived, not a field, but rotary works on it: it must agree too.
    differing = [f for f in (*TILING_KEPT, "head_dim") if getattr(small, f) != getattr(big, f)]
    if differing:
        detail = ", ".join(f"{f} {getattr(small, f)} vs {getattr(big, f)}" for f in differing)
        raise ValueError(f"cannot tile: the small and big configs must agree on {detail}")
    shrinking = [f for f in TILING_GROWS if getattr(big, f) < getattr(small, f)]
    if shrinking:
        detail = ", ".join(f"{f} {getattr(small, f)} -> {getattr(big, f)}" for f in shrinking)
        raise ValueError(f"cannot tile to a smaller model: {detail}")


def tile_model(
    small: ModernEncoderPreTrainedModel, big_config: ModernEncoderConfig, scale_inputs: bool = False
) -> ModernEncoderPreTrainedModel:
    """A `type(small)` model of `big_config` whose every weight is tiled from `small`'s.

    Big layers that copy small layer 0 but are not layer 0 themselves need an attention pre-norm, which
    layer 0 lacks (the embedding norm stands in front of it): they take the embedding norm's weight, the
    scale layer 0's attention was trained on.

    Plain tiling makes every projection sum over the repeated inputs, so outputs grow by the width ratio
    and the big model no longer computes what the small one did. `scale_inputs=True` divides each input
    column by the number of times its source was repeated (Net2Net's rule): a model grown in width only then
    gives the small model's MLM logits exactly (and its hidden states, tiled) when the widths are multiples,
    and nearly so otherwise (the LayerNorm statistics shift a little); copied layers still change it.
    """
    _check_configs(small.config, big_config)
    mapping = layer_map(small.config, big_config)
    head_dim = big_config.head_dim
    source = {k: v.detach() for k, v in small.state_dict().items()}
    embedding_norm = next(k for k in source if k.endswith("embeddings.norm.weight"))
    big = type(small)(big_config)
    tied = tied_keys(big)
    tiled = {}
    for key, target in big.state_dict().items():
        if key in tied:
            continue
        src_key = key
        match = _LAYER_KEY.match(key)
        if match:
            src_key = f"{match['prefix']}{mapping[int(match['idx'])]}.{match['rest']}"
            if src_key not in source and match["rest"] == "attn_norm.weight":
                src_key = embedding_norm
        weight, shape = source[src_key], tuple(target.shape)
        if key.endswith("attn.Wqkv.weight"):
            value = _tile_fused(weight, shape, 3, lambda w, s: _tile_heads(w, s, head_dim, 0))
        elif key.endswith("attn.Wo.weight"):
            value = _tile_heads(weight, shape, head_dim, 1)
        elif key.endswith("mlp.Wi.weight"):
            value = _tile_fused(weight, shape, 2, tile_tensor)
        else:
            value = tile_tensor(weight, shape)
        counts = _input_counts(key, small.config, big_config, bool(tied)) if scale_inputs else None
        if counts is not None:
            value = value / counts.to(value)  # broadcasts along the last (input) dimension
        tiled[key] = value.to(target.dtype)
    missing, _ = big.load_state_dict(tiled, strict=False)
    if set(missing) - tied:  # only the tied decoder weight may be absent
        raise RuntimeError(f"tiling left {sorted(set(missing) - tied)} uninitialised")
    return big


def load_source(source: str | Path) -> tuple[ModernEncoderPreTrainedModel, Path | None]:
    """The model in a train.py checkpoint (`*.pt`) or a Hugging Face folder / hub id (the class its
    config.json names, masked LM by default), and the folder it came from, if any."""
    from modernenc.train.export import MODEL_CLASSES, load_composer_checkpoint

    if str(source).endswith(".pt"):
        return load_composer_checkpoint(source), None
    from modernenc.model import ModernEncoderForMaskedLM
    from modernenc.model.hf_interop import resolve_checkpoint_dir

    folder = resolve_checkpoint_dir(source)
    try:
        architectures = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8")).get("architectures")
    except (OSError, ValueError, AttributeError):  # from_pretrained below names what is wrong with it
        architectures = None
    cls = MODEL_CLASSES.get((architectures or [""])[0], ModernEncoderForMaskedLM)
    return cls.from_pretrained(folder), folder


def tile_checkpoint(
    source: str | Path,
    out_dir: str | Path,
    preset: str,
    tokenizer_path: str | Path | None = None,
    overwrite: bool = False,
    scale_inputs: bool = False,
) -> tuple[ModernEncoderPreTrainedModel, ModernEncoderPreTrainedModel]:
    """Tile `source` to `preset`'s sizes and save it as a Hugging Face folder; returns (small, big).

    The tokenizer is copied from `tokenizer_path`, else from the source folder when it has one.
    """
    from modernenc.train.export import write_hf_folder

    if preset not in PRESETS:  # before the (slow) load
        raise ValueError(f"unknown model preset {preset!r}; choose one of {sorted(PRESETS)}")
    out_dir = check_output_folder(out_dir, kind="hf-model", force=overwrite, inputs=[source])
    if tokenizer_path is not None:
        find_tokenizer_files(tokenizer_path)
    small, folder = load_source(source)
    big = tile_model(small, config_for_preset(small.config, preset), scale_inputs=scale_inputs)
    if tokenizer_path is None and folder is not None and any((folder / f).is_file() for f in TOKENIZER_FILES):
        tokenizer_path = folder
    write_hf_folder(big, out_dir, tokenizer_path, tool="tile")
    return small, big
