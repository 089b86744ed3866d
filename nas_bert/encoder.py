"""The body of a final NAS-BERT model: embeddings, then each block's ops at its own width.

Physically sized: only the chosen ops exist. A width projection (Linear) sits at the start of a
block whose width differs from the previous one (or from the embedding size, for block 0).
`encoder_params` / `encoder_flops` count the same model analytically.
"""

from __future__ import annotations

import torch
from torch import nn

from nas_bert.arch import IDENTITY, MHA, Arch
from nas_bert.ops import build_op, build_projection, init_weights
from nas_bert.space import op_flops, op_params, projection_flops, projection_params


class Embeddings(nn.Module):
    """Word + position + token-type embeddings, LayerNorm and dropout, at width `size`."""

    def __init__(self, vocab_size: int, size: int, max_positions: int, type_vocab_size: int = 2,
                 dropout: float = 0.1, pad_token_id: int = 0, eps: float = 1e-12) -> None:
        super().__init__()
        self.word = nn.Embedding(vocab_size, size, padding_idx=pad_token_id)
        self.position = nn.Embedding(max_positions, size)
        self.token_type = nn.Embedding(type_vocab_size, size)
        self.norm = nn.LayerNorm(size, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        t = input_ids.shape[1]
        positions = torch.arange(t, device=input_ids.device)[None]  # (1, T)
        types = token_type_ids if token_type_ids is not None else torch.zeros_like(input_ids)
        x = self.word(input_ids) + self.position(positions) + self.token_type(types)  # (B, T, E)
        return self.dropout(self.norm(x))


class StudentBlock(nn.Module):
    """An input width projection (or identity) followed by the block's ops."""

    def __init__(self, projection: nn.Module, layers: list[nn.Module]) -> None:
        super().__init__()
        self.projection = projection
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.projection(x)  # (B, T, hidden)
        for layer in self.layers:
            x = layer(x, mask)
        return x


class StudentEncoder(nn.Module):
    """Embeddings + the blocks of `arch`; returns the last block's hidden states (B, T, H_last)."""

    def __init__(self, arch: Arch, vocab_size: int, max_positions: int = 512, type_vocab_size: int = 2,
                 head_dim: int = 64, ffn_ratio: int = 4, dropout: float = 0.1, pad_token_id: int = 0) -> None:
        super().__init__()
        self.arch = arch
        self.embeddings = Embeddings(vocab_size, arch.embed_size, max_positions, type_vocab_size, dropout,
                                     pad_token_id)
        blocks, width = [], arch.embed_size
        for block in arch.blocks:
            layers = [build_op(op, block.hidden, head_dim, ffn_ratio, dropout) for op in block.ops if op != IDENTITY]
            blocks.append(StudentBlock(build_projection(width, block.hidden), layers))
            width = block.hidden
        self.blocks = nn.ModuleList(blocks)
        self.apply(init_weights)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, output_hidden_states: bool = False):
        """(B, T) ids -> (B, T, H_last); with output_hidden_states also [embeddings, block 1 .. block N]."""
        x = self.embeddings(input_ids, token_type_ids)
        states = [x]
        for block in self.blocks:
            x = block(x, attention_mask)
            states.append(x)
        return (x, states) if output_hidden_states else x


def encoder_params(arch: Arch, vocab_size: int, max_positions: int = 512, type_vocab_size: int = 2,
                   ffn_ratio: int = 4) -> int:
    """Parameters of `StudentEncoder(arch, ...)`, counted analytically."""
    e = arch.embed_size
    total = (vocab_size + max_positions + type_vocab_size) * e + 2 * e  # embeddings + LayerNorm
    width = e
    for block in arch.blocks:
        total += projection_params(width, block.hidden)
        total += sum(op_params(op, block.hidden, ffn_ratio) for op in block.ops)
        width = block.hidden
    return total


def encoder_flops(arch: Arch, seq_len: int = 128, ffn_ratio: int = 4) -> int:
    """Matmul/conv FLOPs of one sequence through the encoder (embedding lookups cost none)."""
    total, width = 0, arch.embed_size
    for block in arch.blocks:
        total += projection_flops(width, block.hidden, seq_len)
        total += sum(op_flops(op, block.hidden, seq_len, ffn_ratio) for op in block.ops)
        width = block.hidden
    return total


def bert_flops(hidden: int, layers: int, intermediate: int, seq_len: int = 128) -> int:
    """Matmul FLOPs of one sequence through a BERT encoder (a teacher), counted as `encoder_flops` counts: per layer
    the attention's projections and scores (`op_flops(MHA)`) and the H -> intermediate -> H feed-forward."""
    return layers * (op_flops(MHA, hidden, seq_len) + 4 * seq_len * hidden * intermediate)
