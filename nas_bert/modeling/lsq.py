"""Learned step-size quantization (LSQ, Esser et al. 2020), the fake-quantization of KDLSQ-BERT: quantization-aware
training of a student with task KD. Every Linear of the encoder and head becomes a `LsqLinear`: its weight is
quantized to `weight_bits` (8, or 4 for weights only) and its input to 8 bits, each with a learned step size.

The forward pass computes with the quantized values (fake quantization: still float tensors); rounding passes
gradients straight through, and each step size gets LSQ's gradient scale 1 / sqrt(numel x Qp). Under ONNX export
the same values are written as QuantizeLinear / DequantizeLinear pairs (int8; 4-bit weights are int8 values in
[-8, 7]), which onnxruntime runs as integer matmuls.
"""

from __future__ import annotations

import math

import torch
from torch import nn

BITS = (4, 8)


def _round_pass(x: torch.Tensor) -> torch.Tensor:
    """round(x) forward, identity backward (the straight-through estimator)."""
    return (x.round() - x).detach() + x


def _grad_scale(x: torch.Tensor, scale: float) -> torch.Tensor:
    """x forward, its gradient multiplied by `scale` backward."""
    return (x - x * scale).detach() + x * scale


class LsqQuantizer(nn.Module):
    """Signed symmetric fake quantization to `bits` with a learned step size (initialised from the first input:
    2 mean|x| / sqrt(Qp), as LSQ)."""

    def __init__(self, bits: int) -> None:
        super().__init__()
        if bits not in BITS:
            raise ValueError(f"LSQ bit-width {bits} is not supported: use one of {BITS} (4 for weights only)")
        self.bits, self.qn, self.qp = bits, -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        self.step = nn.Parameter(torch.tensor(1.0))
        self.register_buffer("initialized", torch.tensor(False))  # saved with the step size
        self._ready = False  # `initialized` read once on the host, not at every step

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._ready = False  # a loaded step size may be initialised already

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._ready:
            self._ready = bool(self.initialized)
        if not self._ready:
            with torch.no_grad():
                self.step.copy_((2 * x.detach().abs().mean() / math.sqrt(self.qp)).clamp_min(1e-8))
                self.initialized.fill_(True)
            self._ready = True
        step = _grad_scale(self.step, 1.0 / math.sqrt(x.numel() * self.qp))
        return _round_pass((x / step).clamp(self.qn, self.qp)) * step

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


class LsqLinear(nn.Linear):
    """A Linear computing with its weight quantized to `weight_bits` and its input to `act_bits`."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, weight_bits: int = 8,
                 act_bits: int = 8) -> None:
        super().__init__(in_features, out_features, bias)
        if act_bits != 8:
            raise ValueError(f"activations are quantized to 8 bits, got act_bits={act_bits}")
        self.weight_quantizer, self.input_quantizer = LsqQuantizer(weight_bits), LsqQuantizer(act_bits)

    @classmethod
    def from_linear(cls, linear: nn.Linear, weight_bits: int, act_bits: int = 8) -> LsqLinear:
        quantized = cls(linear.in_features, linear.out_features, linear.bias is not None, weight_bits, act_bits)
        quantized.to(linear.weight.device, linear.weight.dtype)
        quantized.load_state_dict(linear.state_dict(), strict=False)  # weight and bias; the quantizers start fresh
        return quantized

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.onnx.is_in_onnx_export():
            return self._qdq_forward(x)
        return nn.functional.linear(self.input_quantizer(x), self.weight_quantizer(self.weight), self.bias)

    def _qdq_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The same values through torch's int8 fake-quantize op, which the ONNX exporter writes as Q/DQ pairs.
        The weight is first put on its own (4- or 8-bit) grid: its levels lie within int8's, so the int8 pair
        reproduces it exactly."""
        on_grid = self.weight_quantizer(self.weight).detach()
        x = torch.fake_quantize_per_tensor_affine(x, float(self.input_quantizer.step), 0, -128, 127)
        w = torch.fake_quantize_per_tensor_affine(on_grid, float(self.weight_quantizer.step), 0, -128, 127)
        return nn.functional.linear(x, w, self.bias)


def lsq_quantize(model: nn.Module, weight_bits: int = 8, act_bits: int = 8,
                 keep: tuple[nn.Module, ...] = ()) -> nn.Module:
    """Replace every nn.Linear of `model` but those in `keep` (in place) by an `LsqLinear` with the same weights;
    returns the model. Run one forward pass on real data before training: it initialises every step size."""
    for name, child in list(model.named_children()):
        if type(child) is nn.Linear and not any(child is kept for kept in keep):
            setattr(model, name, LsqLinear.from_linear(child, weight_bits, act_bits))
        else:
            lsq_quantize(child, weight_bits, act_bits, keep)
    return model


def check_lsq_bits(weight_bits: int, act_bits: int = 8) -> dict[str, int]:
    """{"weight_bits", "act_bits"} when supported (weights 4 or 8, activations 8), else a ValueError naming them."""
    if weight_bits not in BITS or act_bits != 8:
        raise ValueError(f"quantization-aware training supports weight_bits in {BITS} and act_bits=8; got "
                         f"weight_bits={weight_bits}, act_bits={act_bits}")
    return {"weight_bits": int(weight_bits), "act_bits": int(act_bits)}
