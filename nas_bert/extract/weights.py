"""Copy a teacher's weights into a student or the supernet's ops, following a `Selection`.

Per op, from the teacher layer its slot maps to (`plan.layer_map`), at the op's width h (hidden dims S = the top h):
* MHA: q / k / v rows of the chosen head units, columns S (q scaled by sqrt(unit / teacher head size), so each
  term of an attention logit keeps the teacher's scale); the output projection's rows S and the units' columns;
  the LayerNorm's S.
* FFN: the chosen neurons' rows of the up projection (columns S), their columns of the down one (rows S); the
  LayerNorm's S.
* SepConv: fresh (the teacher has no convolution). Identity: nothing.
* Embeddings: the word / position / token-type columns S_e and the LayerNorm's S_e (rows beyond the teacher's
  tables stay fresh). Projections between widths: the selection matrix mapping one subspace onto the other
  (1 where the two widths keep the same teacher dimension). The MLM head: fresh.
LayerNorms over a subset of the teacher's dimensions normalise over that subset: only the teacher's full width
extracts the teacher exactly.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn

from nas_bert.arch import IDENTITY
from nas_bert.extract.plan import (
    ExtractionError,
    Selection,
    TeacherShape,
    arch_widths,
    check_fits,
    layer_map,
    slot_layers,
    student_layers,
)
from nas_bert.ops import FeedForward, MultiHeadAttention

log = logging.getLogger(__name__)


def bert_of(teacher: nn.Module) -> nn.Module:
    """The BERT encoder inside a teacher (its base model), with `embeddings` and `encoder.layer`."""
    bert = getattr(teacher, "base_model", teacher)
    if not hasattr(getattr(bert, "encoder", None), "layer") or not hasattr(bert, "embeddings"):
        raise ExtractionError(f"{type(teacher).__name__} has no BERT-style embeddings and encoder.layer to extract "
                              f"from; use student.init=teacher_embeddings or scratch")
    return bert


def selection_matrix(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """(len(rows), len(cols)): 1 where both keep the same teacher dimension."""
    return (rows[:, None] == cols[None, :]).float()


def copy_mha(op: MultiHeadAttention, layer: nn.Module, selection: Selection, teacher_layer: int,
             teacher_head_dim: int) -> None:
    """A teacher layer's attention into `op` at its width."""
    width = op.out.out_features
    if width // op.num_heads != selection.unit:
        raise ExtractionError(f"the selection forms heads of {selection.unit} dimensions, the student's MHA has "
                              f"{width // op.num_heads}: make the selection with the student's head size")
    dims, units = selection.hidden_dims(width), selection.unit_dims(teacher_layer, width)  # (h,), (h,)
    attention = layer.attention
    scale = math.sqrt(selection.unit / teacher_head_dim)
    parts = [(attention.self.query, scale), (attention.self.key, 1.0), (attention.self.value, 1.0)]
    op.qkv.weight.copy_(torch.cat([lin.weight[units][:, dims] * s for lin, s in parts]))  # (3h, h)
    op.qkv.bias.copy_(torch.cat([lin.bias[units] * s for lin, s in parts]))
    out = attention.output.dense
    op.out.weight.copy_(out.weight[dims][:, units])
    op.out.bias.copy_(out.bias[dims])
    op.norm.weight.copy_(attention.output.LayerNorm.weight[dims])
    op.norm.bias.copy_(attention.output.LayerNorm.bias[dims])


def copy_ffn(op: FeedForward, layer: nn.Module, selection: Selection, teacher_layer: int) -> None:
    """A teacher layer's feed-forward into `op` at its width and ratio."""
    width = op.down.out_features
    dims, neurons = selection.hidden_dims(width), selection.neuron_ids(teacher_layer, op.up.out_features)
    op.up.weight.copy_(layer.intermediate.dense.weight[neurons][:, dims])
    op.up.bias.copy_(layer.intermediate.dense.bias[neurons])
    op.down.weight.copy_(layer.output.dense.weight[dims][:, neurons])
    op.down.bias.copy_(layer.output.dense.bias[dims])
    op.norm.weight.copy_(layer.output.LayerNorm.weight[dims])
    op.norm.bias.copy_(layer.output.LayerNorm.bias[dims])


def copy_op(op: nn.Module, layer: nn.Module, selection: Selection, teacher_layer: int, teacher_head_dim: int) -> bool:
    """Copies an MHA or FFN op; False for the others (left fresh)."""
    if isinstance(op, MultiHeadAttention):
        copy_mha(op, layer, selection, teacher_layer, teacher_head_dim)
    elif isinstance(op, FeedForward):
        copy_ffn(op, layer, selection, teacher_layer)
    else:
        return False
    return True


def copy_embeddings(embeddings: nn.Module, source: nn.Module, dims: torch.Tensor) -> str:
    """The teacher's tables' columns `dims` (as many rows as both have) and its embedding LayerNorm."""
    tables = {"word": "word_embeddings", "position": "position_embeddings", "token_type": "token_type_embeddings"}
    copied = []
    for ours, theirs in tables.items():
        target, table = getattr(embeddings, ours).weight, getattr(source, theirs).weight
        rows = min(len(target), len(table))
        target[:rows].copy_(table[:rows][:, dims])
        copied.append(ours if rows == len(target) else f"{ours} (rows 0..{rows - 1}; the rest fresh)")
    embeddings.norm.weight.copy_(source.LayerNorm.weight[dims])
    embeddings.norm.bias.copy_(source.LayerNorm.bias[dims])
    return "extracted: " + ", ".join(copied) + ", LayerNorm"


@torch.no_grad()
def extract_student(student: nn.Module, teacher: nn.Module, selection: Selection,
                    layers: list[int] | None = None) -> dict:
    """Copies the teacher's weights into `student` (a `NasBert*` model or its encoder) in place; returns what was
    extracted and what was left fresh."""
    encoder = (student.nas_bert if hasattr(student, "nas_bert") else student).encoder
    arch, bert = encoder.arch, bert_of(teacher)
    shape = TeacherShape.of(bert.config)
    ratio = max((op.up.out_features // op.down.out_features for block in encoder.blocks for op in block.layers
                 if isinstance(op, FeedForward)), default=1)
    check_fits(arch_widths(arch), shape, selection.unit, ratio)
    mapping = layer_map(student_layers(arch), shape.layers, layers)
    report: dict = {"selection": selection.how, "teacher_layers": mapping, "ops": []}
    slot = 0
    for n, (block, spec) in enumerate(zip(encoder.blocks, arch.blocks)):
        ops = iter(block.layers)
        for name in spec.ops:
            source = mapping[slot // 2]
            slot += 1
            if name == IDENTITY:
                continue
            copied = copy_op(next(ops), bert.encoder.layer[source], selection, source, shape.head_dim)
            report["ops"].append({"block": n, "op": name, "from": f"teacher layer {source}" if copied else "fresh"})
    width = arch.embed_size
    report["embeddings"] = copy_embeddings(encoder.embeddings, bert.embeddings, selection.hidden_dims(width))
    projections = 0
    for block, spec in zip(encoder.blocks, arch.blocks):
        if isinstance(block.projection, nn.Linear):
            block.projection.weight.copy_(selection_matrix(selection.hidden_dims(spec.hidden),
                                                           selection.hidden_dims(width)))
            block.projection.bias.zero_()
            projections += 1
        width = spec.hidden
    report["projections"] = f"{projections} selection matrices between widths"
    report["fresh"] = sorted({op["op"] for op in report["ops"] if op["from"] == "fresh"} | {"mlm_head"})
    log.info("extracted the student from the teacher (%s selection, teacher layers %s); fresh: %s",
             selection.how, mapping, ", ".join(report["fresh"]))
    return report


@torch.no_grad()
def extract_supernet(supernet: nn.Module, teacher: nn.Module, selection: Selection) -> dict:
    """Every MHA / FFN op of every (slot, width) of `supernet` from the teacher layer its slot maps to, and each
    width's in / out projections as the selection matrices between the teacher's width and the width's subspace
    (the supernet's blocks read and predict teacher states). SepConv ops stay as they are."""
    space, bert = supernet.space, bert_of(teacher)
    shape = TeacherShape.of(bert.config)
    if shape.hidden != supernet.teacher_hidden:
        raise ExtractionError(f"the supernet was built for a teacher of width {supernet.teacher_hidden}, this "
                              f"teacher has {shape.hidden}")
    check_fits(list(space.hidden_sizes), shape, space.head_dim, space.ffn_ratio)
    mapping = layer_map(slot_layers(space.num_blocks * space.slots_per_block), shape.layers)
    teacher_dims = torch.arange(shape.hidden)
    copied = 0
    for n, block in enumerate(supernet.blocks):
        for h in space.hidden_sizes:
            select = selection_matrix(selection.hidden_dims(h), teacher_dims)  # (h, D)
            for proj, weight in ((block.in_proj[str(h)], select), (block.out_proj[str(h)], select.T)):
                if isinstance(proj, nn.Linear):
                    proj.weight.copy_(weight)
                    proj.bias.zero_()
        for j, ops in enumerate(block.slots):
            source = mapping[(n * space.slots_per_block + j) // 2]
            for op in ops.values():
                copied += copy_op(op, bert.encoder.layer[source], selection, source, shape.head_dim)
    return {"selection": selection.how, "teacher_layers": mapping, "ops_extracted": copied}
