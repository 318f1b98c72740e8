"""Checkpoint folders written by `transformers` 5, read under whichever `transformers` is installed.

transformers 5 writes the rope thetas inside `rope_parameters` (one entry per layer type) and the layer
pattern as `layer_types`; 4.x wrote `global_rope_theta`, `local_rope_theta` and
`global_attn_every_n_layers`. The config below is what transformers 5.0 writes for these settings.
"""

from __future__ import annotations

import json

import pytest
from conftest import padded_batch

from modernenc import ModernEncoderConfig, ModernEncoderForMaskedLM

SMALL = dict(
    vocab_size=512,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=4,
    num_attention_heads=4,
    local_attention=16,
    pad_token_id=0,
    cls_token_id=1,
    sep_token_id=2,
    mask_token_id=3,
)
FULL, SLIDING = "full_attention", "sliding_attention"


@pytest.fixture
def transformers5_folder(tmp_path):
    """A folder whose config.json holds the transformers 5 forms only (thetas 80k / 5k, global every 2)."""
    folder = tmp_path / "tf5"
    ModernEncoderForMaskedLM(ModernEncoderConfig(**SMALL)).save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    for key in ("global_rope_theta", "local_rope_theta", "global_attn_every_n_layers"):
        config.pop(key, None)
    config["layer_types"] = [FULL, SLIDING, FULL, SLIDING]
    config["rope_parameters"] = {
        SLIDING: {"rope_type": "default", "rope_theta": 5000.0},
        FULL: {"rope_type": "default", "rope_theta": 80000.0},
    }
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_rope_parameters_and_layer_types_are_read(transformers5_folder):
    model = ModernEncoderForMaskedLM.from_pretrained(transformers5_folder)
    config = model.config
    assert (config.global_rope_theta, config.local_rope_theta, config.global_attn_every_n_layers) == (
        80000.0,
        5000.0,
        2,
    )
    assert [layer.attn.is_global for layer in model.model.layers] == [True, False, True, False]
    ids, mask = padded_batch([30, 12])
    assert model(ids, mask).logits.shape == (2, 30, 512)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c.update(layer_types=[SLIDING, FULL, SLIDING, FULL]), "layer_types="),
        (lambda c: c.update(layer_types=[FULL, FULL, SLIDING, FULL]), "layer_types="),
        (lambda c: c["rope_parameters"][FULL].update(rope_type="linear", factor=2.0), "plain RoPE only"),
    ],
    ids=["no global layer 0", "irregular pattern", "scaled rope"],
)
def test_what_modernenc_cannot_represent_is_refused(transformers5_folder, edit, message):
    config_file = transformers5_folder / "config.json"
    config = json.loads(config_file.read_text())
    edit(config)
    config_file.write_text(json.dumps(config))
    with pytest.raises(ValueError, match=message):
        ModernEncoderForMaskedLM.from_pretrained(transformers5_folder)
