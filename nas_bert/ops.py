"""The candidate ops (MHA, FFN, SepConv, Identity), each a post-LN residual layer.

Shared by the supernet and the final students, so the weights a supernet path holds are
exactly the weights a student of the same architecture has. Every op maps
(B, T, H) -> (B, T, H) and takes a (B, T) mask of real (non-padding) tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nas_bert.arch import FFN, IDENTITY, MHA, ArchitectureError, is_known_op, sepconv_kernel


class MultiHeadAttention(nn.Module):
    """Self-attention with fused q/k/v, residual and LayerNorm (post-LN, as in BERT)."""

    def __init__(self, hidden: int, num_heads: int, dropout: float = 0.0, eps: float = 1e-12) -> None:
        super().__init__()
        if hidden % num_heads:
            raise ArchitectureError(f"hidden {hidden} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.norm = nn.LayerNorm(hidden, eps=eps)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, t, h = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.num_heads, h // self.num_heads).unbind(dim=2)
        q, k, v = (z.transpose(1, 2) for z in (q, k, v))  # (B, heads, T, head_dim)
        attn_mask = None if mask is None else mask.bool()[:, None, None, :]  # (B, 1, 1, T): keys to attend
        ctx = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )
        ctx = ctx.transpose(1, 2).reshape(b, t, h)
        return self.norm(x + F.dropout(self.out(ctx), self.dropout, self.training))


class FeedForward(nn.Module):
    """h -> ratio*h -> h with GELU, residual and LayerNorm."""

    def __init__(self, hidden: int, ratio: int = 4, dropout: float = 0.0, eps: float = 1e-12) -> None:
        super().__init__()
        self.up = nn.Linear(hidden, ratio * hidden)
        self.down = nn.Linear(ratio * hidden, hidden)
        self.norm = nn.LayerNorm(hidden, eps=eps)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        y = self.down(F.gelu(self.up(x)))
        return self.norm(x + F.dropout(y, self.dropout, self.training))


class SepConv(nn.Module):
    """Depthwise Conv1d (kernel k, same padding) -> pointwise linear -> GELU, residual and LayerNorm.

    Padding positions are zeroed before the convolution so they never leak into real tokens.
    """

    def __init__(self, hidden: int, kernel_size: int, dropout: float = 0.0, eps: float = 1e-12) -> None:
        super().__init__()
        self.depthwise = nn.Conv1d(hidden, hidden, kernel_size, padding=kernel_size // 2, groups=hidden)
        self.pointwise = nn.Linear(hidden, hidden)
        self.norm = nn.LayerNorm(hidden, eps=eps)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        z = x if mask is None else x * mask[..., None].to(x.dtype)
        z = self.depthwise(z.transpose(1, 2)).transpose(1, 2)  # (B, T, H)
        y = F.gelu(self.pointwise(z))
        return self.norm(x + F.dropout(y, self.dropout, self.training))


class Identity(nn.Module):
    """Skips the slot (only at a block's end)."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return x


def build_op(op: str, hidden: int, head_dim: int = 64, ffn_ratio: int = 4, dropout: float = 0.0) -> nn.Module:
    """The module for an op name at a width."""
    if not is_known_op(op):
        raise ArchitectureError(f"unknown op {op!r}; known: mha, ffn, sepconv<odd k>, identity")
    if op == MHA:
        return MultiHeadAttention(hidden, hidden // head_dim, dropout)
    if op == FFN:
        return FeedForward(hidden, ffn_ratio, dropout)
    if op == IDENTITY:
        return Identity()
    return SepConv(hidden, sepconv_kernel(op), dropout)


def build_projection(width_in: int, width_out: int) -> nn.Module:
    """Linear width projection, or identity when the widths match (no parameters)."""
    return nn.Identity() if width_in == width_out else nn.Linear(width_in, width_out)


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """BERT initialisation: normal(0, std) weights, zero biases, unit LayerNorm."""
    if isinstance(module, (nn.Linear, nn.Conv1d)):
        nn.init.normal_(module.weight, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
