"""Inference precisions: one call turns a loaded model into its fp32, bf16 or int8 variant.

    model = ModernEncoderForSequenceClassification.from_pretrained(folder).for_inference("int8")

The same call serves the three task classes and the bare encoder. What each variant changes:

- ``fp32``: nothing; the checkpoint as it is.
- ``bf16``: every linear layer of the encoder and of the head block (and the MLM decoder) holds a bf16
  copy of its weight and multiplies in bf16 (AVX512-BF16 or AMX on a CPU, tensor cores on a GPU). The
  residual stream, embeddings, norms, attention scores and softmax stay fp32: what
  ``torch.autocast(dtype=torch.bfloat16)`` computes, without re-casting every weight on every call.
- ``int8`` (CPU only): the same linear layers become dynamic int8 layers. Weights are quantized once,
  per output channel and symmetric; each call quantizes its input per tensor from its own min and max
  (uint8), multiplies in int8 with 32-bit sums (VNNI and oneDNN's kernel where the CPU has VNNI, else
  fbgemm's) and returns fp32, so everything between the linear layers (norms, GeGLU, rotary, attention,
  softmax) stays fp32 and there is no dtype round trip. Weights are packed for the kernel once, at
  conversion.

The classifier (the last layer, hidden -> labels) stays fp32 in every variant: it costs nothing, and its
output is the decision. A bf16 or int8 model is for inference only (no gradients), and ``save_pretrained``
refuses it: a folder keeps the fp32 checkpoint, and the variant is chosen when loading.

Probabilities of a bf16 or int8 model are not those of fp32, so decision thresholds chosen on fp32
validation scores do not carry over; ``modernenc calibrate`` chooses them per variant. And int8's depend
a little on the batch: each linear layer quantizes its whole packed input with one scale (as ONNX
Runtime's dynamic int8 does), so a text scored beside others can get a slightly different probability
than alone. fp32 and bf16 differ between batches by float noise only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from modernenc.utils.precision import PRECISIONS, has_vnni, warn_if_bf16_is_slow, warn_if_int8_is_slow

# The one linear layer every variant leaves in fp32: the task layer that produces the logits.
KEPT_FP32 = "classifier"
# The quantized engine whose kernels int8 layers are packed for, by whether the CPU has VNNI. On the
# AVX512-VNNI host of docs/benchmarks.md, oneDNN's dynamic int8 linear ran the base shape's GEMMs at 90%
# of its 2048^2 peak against 82% for torch's default "x86" engine (fbgemm for this op), and the whole
# int8 model 8% faster on length-sorted batches of 64 sentences and on 2,048-token batches; it is slower
# only on batches of a few short texts (a single sentence: 17% slower). Without VNNI it was not measured
# to win, so the default stays. Probabilities differ between the two kernels by up to ~0.006 on a base
# model, so calibration records the kernel (`int8_setup`) and predict warns when it changed.
INT8_ENGINE_BY_VNNI = {True: "onednn", False: "x86"}


def int8_engine() -> str:
    """The quantized engine int8 layers use on this machine (see INT8_ENGINE_BY_VNNI)."""
    engines = torch.backends.quantized.supported_engines
    preferred = INT8_ENGINE_BY_VNNI[has_vnni()]
    if preferred in engines:
        return preferred
    return next(e for e in ("x86", "fbgemm", "onednn", "qnnpack") if e in engines)


class Bf16Linear(nn.Module):
    """A bias-optional linear layer that keeps its weight in bf16 and returns bf16, as under autocast."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = nn.Parameter(linear.weight.detach().to(torch.bfloat16), requires_grad=False)
        bias = None if linear.bias is None else linear.bias.detach().to(torch.bfloat16)
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.to(torch.bfloat16), self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, dtype=bfloat16"


class Fp32Linear(nn.Linear):
    """The kept-fp32 classifier of a bf16 model: the same weights, fed its bf16 input as fp32."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
        self.weight, self.bias = linear.weight, linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float())


class Int8Linear(nn.Module):
    """A linear layer with int8 weights, quantized and packed once, and inputs quantized on every call.

    The same arithmetic as torch's dynamic int8 layer (``torch.ao.nn.quantized.dynamic.Linear``, through
    the same ``quantized::linear_dynamic`` kernel), with two differences. Activations use all 8 bits where
    the CPU has VNNI: torch's layer always keeps 7 (``reduce_range=True``), which only CPUs without VNNI
    need, as their 16-bit intermediate sums would otherwise saturate; 8 bits halve the activation rounding
    error at the same speed. And the weights are packed once: torch's layer packs a zero weight twice in
    its constructor before the real one, which at the base shape costs as much as the packing itself.
    Weights are symmetric per output channel (scale ``max|w| / 127``), the bias stays fp32.
    """

    def __init__(self, linear: nn.Linear, reduce_range: bool) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.reduce_range = reduce_range
        weight = linear.weight.detach().float()
        largest = torch.linalg.vector_norm(weight, ord=float("inf"), dim=1)  # max |w| per row, one pass
        scales = (largest / 127).clamp_(min=torch.finfo(torch.float32).tiny).double()
        zero_points = torch.zeros(weight.shape[0], dtype=torch.long)
        qweight = torch.quantize_per_channel(weight, scales, zero_points, axis=0, dtype=torch.qint8)
        bias = None if linear.bias is None else linear.bias.detach().float()
        self._packed = torch.ops.quantized.linear_prepack(qweight, bias)  # for the engine in use

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.linear_dynamic(x, self._packed, reduce_range=self.reduce_range)

    def extra_repr(self) -> str:
        bits = 7 if self.reduce_range else 8
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, weights=int8 per channel, "
            f"activation_bits={bits}"
        )


def int8_activation_bits() -> int:
    """Bits of each int8 activation on this CPU: 8 with VNNI, else 7 (see `Int8Linear`)."""
    return 8 if has_vnni() else 7


def int8_setup() -> dict[str, int | str]:
    """What makes this machine's int8 probabilities what they are, for a calibration to record."""
    return {"int8_activation_bits": int8_activation_bits(), "int8_kernel": int8_engine()}


@contextlib.contextmanager
def _quantized_engine(name: str) -> Iterator[None]:
    """Pack weights for `name`'s kernels; packed layers then use them whatever the global engine is."""
    if name not in torch.backends.quantized.supported_engines:
        raise ValueError(f"this torch has no {name!r} quantized engine")
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = name
    try:
        yield
    finally:
        torch.backends.quantized.engine = previous


def _replace_linears(
    model: nn.Module, convert: Callable[[nn.Linear], nn.Module], classifier: Callable[[nn.Linear], nn.Module]
) -> None:
    """Swap every nn.Linear for `convert(linear)`, and the classifier for `classifier(linear)`."""
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    for name, linear in linears:
        parent_name, _, child = name.rpartition(".")
        swap = classifier if name == KEPT_FP32 else convert
        setattr(model.get_submodule(parent_name), child, swap(linear))


def _to_bf16(model: nn.Module) -> None:
    warn_if_bf16_is_slow(_device_of(model))
    model.requires_grad_(False)
    _replace_linears(model, Bf16Linear, classifier=Fp32Linear)


def _to_int8(model: nn.Module) -> None:
    device = _device_of(model)
    if device.type != "cpu":
        raise ValueError(
            f"int8 runs on the CPU only (torch's dynamic quantization); this model is on {device}. Use bf16 "
            "on a GPU, or move the model to the CPU first"
        )
    warn_if_int8_is_slow()
    model.requires_grad_(False)
    reduce_range = int8_activation_bits() < 8
    with _quantized_engine(int8_engine()):
        _replace_linears(model, lambda linear: Int8Linear(linear, reduce_range), classifier=lambda x: x)


CONVERSIONS: dict[str, Callable[[nn.Module], None]] = {
    "fp32": lambda model: None,
    "bf16": _to_bf16,
    "int8": _to_int8,
}
assert tuple(CONVERSIONS) == PRECISIONS


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def check_precision(precision: str) -> str:
    if precision not in CONVERSIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    return precision


def inference_precision(model: nn.Module) -> str | None:
    """The variant `for_inference` made of `model`, or None if it was not called."""
    return getattr(model, "inference_precision", None)


def for_inference(model: nn.Module, precision: str = "fp32") -> nn.Module:
    """Turn `model` (in place) into its `precision` variant for inference, in eval mode; returns it.

    See the module docstring for what each variant changes. Calling it again with the same precision does
    nothing; another precision is an error, since the fp32 weights are gone: load the folder again.
    """
    check_precision(precision)
    current = inference_precision(model)
    if current == precision:
        return model
    if current is not None:
        raise ValueError(
            f"this model was already prepared for {current} inference; load it again to make a "
            f"{precision} variant"
        )
    model.eval()
    CONVERSIONS[precision](model)
    model.inference_precision = precision
    return model
