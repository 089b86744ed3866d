"""CUDA math settings a training run chooses once for its device (no-ops elsewhere)."""

from __future__ import annotations

import torch


def use_tensor_cores(device: torch.device | str, float32_matmul_precision: str = "high") -> bool:
    """On CUDA, let fp32 matmuls and convolutions run on TF32 tensor cores ("high"; "highest" keeps plain fp32).
    Returns whether anything was set: on other devices nothing is, so CPU numbers stay the same."""
    if torch.device(device).type != "cuda":
        return False
    torch.set_float32_matmul_precision(float32_matmul_precision)
    torch.backends.cudnn.allow_tf32 = float32_matmul_precision != "highest"
    return True
