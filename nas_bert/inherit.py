"""Initialise a student from the trained supernet's weights for its path (an option; the paper trains
from scratch).

What is inherited, and how:
* every op (MHA / FFN / SepConv) of the path: copied as it is (the supernet and the students share
  `nas_bert.ops`);
* the projection between blocks n-1 and n of different widths: the supernet's out-projection of
  block n-1 (h_{n-1} -> D) fused with the in-projection of block n (D -> h_n) into one Linear, exact;
* between blocks of equal width the student has no projection (none is counted in its size), so the
  fused map is dropped: the student starts from the supernet's ops with an identity there;
* the embeddings (width h_0): the teacher's word / position / token-type tables mapped through block 0's
  in-projection, when a teacher is given (approximate: the teacher's embedding LayerNorm is not folded);
* the MLM head: fresh.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from nas_bert.arch import ArchitectureError
from nas_bert.lit.blockwise_distillation import (
    CHECKPOINT_KEY,  # the entry SupernetDistillation writes into its checkpoints
)
from nas_bert.nas.supernet import BlockStack, Supernet
from nas_bert.space import SearchSpace

log = logging.getLogger(__name__)


def load_supernet_checkpoint(path: str | Path) -> Supernet:
    """The supernet of a `SupernetDistillation` checkpoint (e.g. `<search run>/checkpoints/last.ckpt`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no supernet checkpoint at {path}; set student.supernet_checkpoint to a search run's "
            f"checkpoints/last.ckpt, or student.init=scratch"
        )
    ckpt = torch.load(path, map_location="cpu", weights_only=True)  # tensors and plain Python values only
    saved = ckpt.get(CHECKPOINT_KEY)
    if saved is None:
        raise ArchitectureError(f"{path} was not written by the supernet stage (no {CHECKPOINT_KEY!r} entry)")
    supernet = Supernet(SearchSpace.from_dict(saved["space"]), saved["teacher_hidden"])
    weights = {k.removeprefix("supernet."): v for k, v in ckpt["state_dict"].items() if k.startswith("supernet.")}
    supernet.load_state_dict(weights)
    return supernet


def affine(module: nn.Module, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(W, b) of a Linear, or of an identity of `width`: y = x @ W.T + b."""
    if isinstance(module, nn.Linear):
        bias = module.bias if module.bias is not None else torch.zeros(module.out_features)
        return module.weight.detach(), bias.detach()
    return torch.eye(width), torch.zeros(width)


@torch.no_grad()
def inherit_from_supernet(student: nn.Module, supernet: Supernet, teacher: nn.Module | None = None) -> dict:
    """Copy the supernet's weights for `student`'s architecture into it (in place); returns a report.

    `student`: a `NasBertModel` or any `NasBert*` model (with `.nas_bert`); `teacher`: its HF encoder
    (or a masked-LM model), for the embeddings.
    """
    encoder = (student.nas_bert if hasattr(student, "nas_bert") else student).encoder
    arch = encoder.arch
    try:
        supernet.space.validate(arch)
    except ArchitectureError as err:
        raise ArchitectureError(
            f"cannot inherit supernet weights: the student's architecture is not in the supernet's space "
            f"{supernet.space.name!r} ({err}); use student.init=scratch"
        ) from None
    path: BlockStack = supernet.extract(arch)
    d = supernet.teacher_hidden
    report = {"ops": 0, "fused_projections": 0, "dropped_equal_width_projections": 0}
    for n, (block, source) in enumerate(zip(encoder.blocks, path.blocks)):
        for layer, weights in zip(block.layers, source.layers):
            layer.load_state_dict(weights.state_dict())
            report["ops"] += 1
        if n == 0:
            continue
        w_out, b_out = affine(path.blocks[n - 1].out_proj, d)  # h_{n-1} -> D
        w_in, b_in = affine(source.in_proj, d)  # D -> h_n
        if isinstance(block.projection, nn.Linear):
            block.projection.weight.copy_(w_in @ w_out)  # (h_n, h_{n-1})
            block.projection.bias.copy_(w_in @ b_out + b_in)
            report["fused_projections"] += 1
        else:
            report["dropped_equal_width_projections"] += 1
    report["embeddings"] = inherit_embeddings(encoder.embeddings, path.blocks[0].in_proj, d, teacher)
    report["lm_head"] = "fresh"
    log.info("inherited supernet weights: %s", report)
    return report


def teacher_embedding_module(teacher: nn.Module) -> nn.Module | None:
    """The BERT-style embeddings (word / position / token-type tables) of a teacher, its encoder or base model."""
    candidates = (teacher, getattr(teacher, "encoder", None), getattr(teacher, "base_model", None))
    return next((m.embeddings for m in candidates if hasattr(getattr(m, "embeddings", None), "word_embeddings")),
                None)


def inherit_embeddings(embeddings: nn.Module, in_proj: nn.Module, width: int, teacher: nn.Module | None) -> str:
    """Teacher tables (rows x D) mapped through block 0's in-projection into the student's (rows x h_0)."""
    if teacher is None:
        return "fresh (no teacher given)"
    source = teacher_embedding_module(teacher)
    tables = {"word": "word_embeddings", "position": "position_embeddings", "token_type": "token_type_embeddings"}
    w, b = affine(in_proj, width)  # (h_0, D), (h_0,)
    copied = []
    for ours, theirs in tables.items():
        target, table = getattr(embeddings, ours), getattr(source, theirs, None)
        if table is None or table.weight.shape[1] != width or table.weight.shape[0] < target.weight.shape[0]:
            continue
        target.weight.copy_(table.weight[: target.weight.shape[0]] @ w.T)
        copied.append(ours)
    if "token_type" in copied:  # every token gets exactly one token-type row: the bias goes there
        embeddings.token_type.weight.add_(b)
    return f"projected from the teacher: {', '.join(copied)}" if copied else "fresh (teacher tables do not match)"


@torch.no_grad()
def inherit_teacher_embeddings(student: nn.Module, teacher: nn.Module) -> str:
    """The teacher's embedding tables projected onto their top principal directions (PCA of the word
    embeddings, width D -> the student's h_0): any student starts from what the teacher's tokens mean, without
    a supernet (the `student.init` of uniform baselines). The student's embedding LayerNorm rescales them."""
    embeddings = (student.nas_bert if hasattr(student, "nas_bert") else student).encoder.embeddings
    width = embeddings.word.weight.shape[1]
    source = teacher_embedding_module(teacher)
    if source is None or source.word_embeddings.weight.shape[1] < width:
        return "fresh (the teacher has no embedding tables of at least the student's width)"
    words = source.word_embeddings.weight.float()  # (V, D)
    mean = words.mean(dim=0)
    _, _, v = torch.linalg.svd(words - mean, full_matrices=False)
    basis = v[:width].T  # (D, h_0): the top principal directions
    tables = {"word": "word_embeddings", "position": "position_embeddings", "token_type": "token_type_embeddings"}
    copied = []
    for ours, theirs in tables.items():
        target, table = getattr(embeddings, ours), getattr(source, theirs, None)
        if table is None or table.weight.shape[0] < target.weight.shape[0]:
            continue
        centred = table.weight[: target.weight.shape[0]].float() - (mean if ours == "word" else 0.0)
        target.weight.copy_(centred @ basis)
        copied.append(ours)
    return f"teacher PCA ({width} of {words.shape[1]} dims): {', '.join(copied)}"

