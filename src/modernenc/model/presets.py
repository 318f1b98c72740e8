"""Named model sizes, kept free of torch so the command line can list them instantly."""

from __future__ import annotations

from typing import Any

# Presets. `base` and `large` are exactly ModernBERT-base / -large (paper Table 4). The small ones keep
# the shape rules (head dim 64, GLU, local/global pattern) at sizes that train on two CPU cores.
PRESETS: dict[str, dict[str, Any]] = {
    "base": dict(hidden_size=768, intermediate_size=1152, num_hidden_layers=22, num_attention_heads=12),
    "large": dict(hidden_size=1024, intermediate_size=2624, num_hidden_layers=28, num_attention_heads=16),
    "small": dict(hidden_size=384, intermediate_size=576, num_hidden_layers=12, num_attention_heads=6),
    "mini": dict(hidden_size=256, intermediate_size=384, num_hidden_layers=6, num_attention_heads=4),
    "tiny": dict(hidden_size=128, intermediate_size=192, num_hidden_layers=3, num_attention_heads=2),
}
