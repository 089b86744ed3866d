"""Representation and intermediate-layer KD terms for pre-training, beside NAS-BERT's prediction-layer KD.

* TinyBERT hidden states: each student block boundary (embeddings, block 1 .. N) is projected by a
  learned Linear to the teacher's width and matched with the teacher's state at the same boundary
  (MSE or cosine); the last boundary can weigh more than the others.
* Sentence embedding: the mean-pooled last states, the student's through the last boundary's
  projection, matched by cosine or MSE: the pooling a Sentence-BERT teacher (all-MiniLM-L6-v2) was
  trained with, so the student learns the embedding the teacher is good at.
* `relation` instead of mse / cosine compares similarity structure, with no projection: the cosine
  similarities between the tokens of each sequence (hidden states) or between the sequences of the batch
  (sentence embeddings), student against teacher. A projection can absorb a badly conditioned student space
  (e.g. one large direction shared by every token), which then fine-tunes poorly; relations shape the
  student's own space, the one its task head reads.
* TinyBERT attention-score MSE: every student MHA layer is matched with a teacher layer of its
  block (spread evenly over the block's teacher layers) on the scaled scores q k^T / sqrt(d).
* MiniLM: the last student MHA layer's attention distribution and value relation
  softmax(v v^T / sqrt(d)) against the teacher's last layer, by KL(teacher || student).

Student and teacher rarely have the same number of heads, so attention is compared on "relation
heads" (as in MiniLMv2): the concatenated q / k / v of a layer are re-split into R heads of equal
count on both sides. Padding keys are excluded from every term, padding queries from the averages.
The teacher's side comes from its hidden states alone (its q / k / v are its projections of them); the
student's q / k / v are recorded by forward hooks that exist only during its forward pass.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import lru_cache

import torch
from torch import nn

from nas_bert.arch import MHA, Arch, ArchitectureError
from nas_bert.distill.losses import masked_cosine, masked_mse, mean_pool
from nas_bert.ops import MultiHeadAttention

TEACHER_QKV = re.compile(r"layers?\.(\d+)\.attention\.self\.(query|key|value)$")


@lru_cache(maxsize=4)  # looked up once per teacher model, not at every training step
def teacher_qkv_modules(teacher: nn.Module) -> dict[int, dict[str, nn.Module]]:
    """{layer: {"query": Linear, "key": Linear, "value": Linear}} of a BERT-family teacher."""
    found: dict[int, dict[str, nn.Module]] = {}
    for name, module in teacher.named_modules():
        match = TEACHER_QKV.search(name)
        if match:
            found.setdefault(int(match.group(1)), {})[match.group(2)] = module
    if not found:
        raise ArchitectureError(
            f"found no `layer.<i>.attention.self.query/key/value` modules in the teacher ({type(teacher).__name__}); "
            f"attention and MiniLM terms need a BERT-family teacher: set attention_weight=0 and minilm_weight=0"
        )
    return found


@torch.no_grad()
def teacher_qkv(teacher: nn.Module, states: tuple[torch.Tensor, ...], layers: set[int]) -> dict[str, torch.Tensor]:
    """The teacher's q, k, v (B, T, D) of `layers` ("t<layer>.<part>"), from the layers' input states.

    Layer i reads hidden state i (the embeddings for layer 0), so its projections need no hook.
    """
    modules = teacher_qkv_modules(teacher)
    return {f"t{i}.{part}": modules[i][part](states[i]) for i in sorted(layers) for part in ("query", "key", "value")}


def student_mha_layers(student: nn.Module) -> list[tuple[int, MultiHeadAttention]]:
    """(block index, MHA module) for every attention layer of a NAS-BERT student, in order."""
    encoder = student.nas_bert.encoder if hasattr(student, "nas_bert") else student
    return [(n, layer) for n, block in enumerate(encoder.blocks) for layer in block.layers
            if isinstance(layer, MultiHeadAttention)]


class Recorder:
    """Keeps the outputs of chosen modules during forward passes (forward hooks, removed on exit)."""

    def __init__(self, modules: dict[str, nn.Module]) -> None:
        self.modules = modules
        self.outputs: dict[str, torch.Tensor] = {}

    @contextmanager
    def recording(self) -> Iterator[dict[str, torch.Tensor]]:
        self.outputs = {}
        handles = [module.register_forward_hook(self._keep(name)) for name, module in self.modules.items()]
        try:
            yield self.outputs
        finally:
            for handle in handles:
                handle.remove()

    def _keep(self, name: str):
        def hook(module: nn.Module, args: tuple, output: torch.Tensor | tuple) -> None:
            self.outputs[name] = output[0] if isinstance(output, tuple) else output  # layers may return tuples

        return hook


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, T, H) -> (B, heads, T, H / heads)."""
    b, t, h = x.shape
    return x.view(b, t, heads, h // heads).transpose(1, 2)


def relation_scores(a: torch.Tensor, b: torch.Tensor, heads: int) -> torch.Tensor:
    """Scaled dot products of two (B, T, H) tensors on `heads` relation heads: (B, heads, T, T), fp32."""
    a, b = split_heads(a.float(), heads), split_heads(b.float(), heads)
    return a @ b.transpose(-1, -2) / math.sqrt(a.shape[-1])


def masked_relation_kl(teacher_scores: torch.Tensor, student_scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) of the row softmaxes over real keys, averaged over heads and real queries.

    scores: (B, R, T, T); mask: (B, T) with 1 for real tokens.
    """
    keys = mask.bool()[:, None, None, :]  # (B, 1, 1, T)
    log_t = torch.log_softmax(teacher_scores.masked_fill(~keys, -1e4), dim=-1)
    log_s = torch.log_softmax(student_scores.masked_fill(~keys, -1e4), dim=-1)
    kl = (log_t.exp() * (log_t - log_s)).masked_fill(~keys, 0.0).sum(-1)  # (B, R, T)
    queries = mask.to(kl.dtype)[:, None, :]  # (B, 1, T)
    return (kl * queries).sum() / (queries.sum() * kl.shape[1]).clamp_min(1.0)


def masked_score_mse(teacher_scores: torch.Tensor, student_scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MSE of (B, R, T, T) attention scores over pairs of real query and key tokens."""
    pairs = (mask[:, :, None] * mask[:, None, :]).to(teacher_scores.dtype)[:, None]  # (B, 1, T, T)
    sq = (student_scores - teacher_scores).pow(2) * pairs
    return sq.sum() / (pairs.sum() * teacher_scores.shape[1]).clamp_min(1.0)


def default_relation_heads(widths: list[int], teacher_hidden: int, teacher_heads: int) -> int:
    """The most relation heads (at most the teacher's head count) that divide every width."""
    common = math.gcd(teacher_hidden, *widths)
    return max(r for r in range(1, teacher_heads + 1) if common % r == 0)


def cosine_relations(x: torch.Tensor) -> torch.Tensor:
    """Cosine similarities between the rows of x: (B, T, H) -> (B, T, T), or (B, H) -> (B, B); fp32."""
    x = torch.nn.functional.normalize(x.float(), dim=-1)
    return x @ x.transpose(-1, -2)


def token_relation_mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MSE of the token-token cosine similarities of (B, T, H) and (B, T, D) states, over real token pairs."""
    return masked_score_mse(cosine_relations(teacher)[:, None], cosine_relations(student)[:, None], mask)


def sequence_relation_mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None = None
                          ) -> torch.Tensor:
    """MSE of the sequence-sequence cosine similarities of (B, H) and (B, D) embeddings (the batch's pairs)."""
    return (cosine_relations(student) - cosine_relations(teacher)).pow(2).mean()


PAIRED_LOSSES = {"mse": masked_mse, "cosine": masked_cosine}  # through a projection to the teacher's width
RELATION = "relation"


def loss_function(name: str, setting: str, relation):
    if name == RELATION:
        return relation
    if name not in PAIRED_LOSSES:
        raise ValueError(f"{setting}={name!r} is not a loss here; use one of {sorted(PAIRED_LOSSES)} or relation")
    return PAIRED_LOSSES[name]


class IntermediateDistillation(nn.Module):
    """The switchable representation and intermediate KD terms; holds the trainable projections.

    Weights of 0 switch a term off (and skip its recording). `forward` returns the weighted sum and
    each active term, from the recorded student/teacher q, k, v and the block-boundary states.
    `last_boundary_weight` weighs the last boundary against each other boundary (1 = all equal).
    The defaults are the recipe's (`model.intermediate` of conf/model/pretrain.yaml, kept equal by
    tests/test_defaults.py): hidden states and sentence embedding by relations, no attention terms.
    """

    def __init__(self, arch: Arch, teacher_hidden: int, teacher_layers: int, teacher_heads: int,
                 hidden_weight: float = 1.0, attention_weight: float = 0.0, minilm_weight: float = 0.0,
                 relation_heads: int | None = None, last_boundary_weight: float = 1.0, hidden_loss: str = RELATION,
                 embedding_weight: float = 1.0, embedding_loss: str = RELATION,
                 minilm_layer: int | None = None) -> None:
        super().__init__()
        if min(hidden_weight, attention_weight, minilm_weight, embedding_weight, last_boundary_weight) < 0:
            raise ValueError("representation / intermediate KD weights must be >= 0")
        self.hidden_weight, self.attention_weight, self.minilm_weight = hidden_weight, attention_weight, minilm_weight
        self.minilm_layer = teacher_layers - 1 if minilm_layer is None else int(minilm_layer)
        if not 0 <= self.minilm_layer < teacher_layers:
            raise ValueError(f"minilm_layer={minilm_layer} is not a layer of the {teacher_layers}-layer teacher")
        self.embedding_weight, self.last_boundary_weight = embedding_weight, last_boundary_weight
        self.hidden_loss = loss_function(hidden_loss, "hidden_loss", token_relation_mse)
        self.embedding_loss = loss_function(embedding_loss, "embedding_loss", sequence_relation_mse)
        self.hidden_projected, self.embedding_projected = hidden_loss != RELATION, embedding_loss != RELATION
        num_blocks = len(arch.blocks)
        if teacher_layers % num_blocks:
            raise ArchitectureError(
                f"the teacher's {teacher_layers} layers do not split into the student's {num_blocks} blocks, which "
                f"the hidden-state and attention terms need; use a student with a divisor of {teacher_layers} blocks"
            )
        self.teacher_layers, self.layers_per_block = teacher_layers, teacher_layers // num_blocks
        widths = [arch.embed_size] + [block.hidden for block in arch.blocks]
        projected = (widths if hidden_weight and self.hidden_projected else
                     widths[-1:] if embedding_weight and self.embedding_projected else [])
        # the last projection is the last boundary's
        self.projections = nn.ModuleList(nn.Linear(w, teacher_hidden) for w in projected)
        mha_blocks = [n for n, block in enumerate(arch.blocks) for op in block.ops if op == MHA]
        if (attention_weight or minilm_weight) and not mha_blocks:
            raise ArchitectureError(
                "the student has no mha layer, so attention-score and MiniLM terms have nothing to match; "
                "set attention_weight=0 and minilm_weight=0 for this architecture"
            )
        self.mha_blocks = mha_blocks
        self.relation_heads = relation_heads or default_relation_heads(
            [arch.blocks[n].hidden for n in mha_blocks] or [teacher_hidden], teacher_hidden, teacher_heads)
        for w in {arch.blocks[n].hidden for n in mha_blocks} | {teacher_hidden}:
            if (attention_weight or minilm_weight) and w % self.relation_heads:
                raise ArchitectureError(f"relation_heads={self.relation_heads} does not divide width {w}")

    @property
    def active(self) -> bool:
        return bool(self.hidden_weight or self.attention_weight or self.minilm_weight or self.embedding_weight)

    def teacher_layer_for(self) -> list[int]:
        """The teacher layer matched with each student MHA layer (evenly spread within its block)."""
        layers = []
        for n in sorted(set(self.mha_blocks)):
            count = self.mha_blocks.count(n)
            first = n * self.layers_per_block
            layers += [first + (j + 1) * self.layers_per_block // count - 1 for j in range(count)]
        return layers

    def student_modules(self, student: nn.Module) -> dict[str, nn.Module]:
        """The student's MHA q/k/v Linears to record ("s<i>"); none unless an attention term is on."""
        if not (self.attention_weight or self.minilm_weight):
            return {}
        return {f"s{i}": mha.qkv for i, (_, mha) in enumerate(student_mha_layers(student))}

    def teacher_layers_used(self) -> set[int]:
        """The teacher layers whose q/k/v the attention terms compare with."""
        layers = set(self.teacher_layer_for()) if self.attention_weight else set()
        return layers | ({self.minilm_layer} if self.minilm_weight else set())

    def forward(self, student_states: list[torch.Tensor], student_qkv: dict[str, torch.Tensor],
                teacher_states: Mapping[int, torch.Tensor] | Sequence[torch.Tensor], teacher: nn.Module | None,
                mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """student_states: N + 1 tensors (B, T, H_n); student_qkv: the outputs recorded from `student_modules`;
        teacher_states: its hidden states (B, T, D) by layer index: all L + 1, or only the block boundaries
        when no attention term is on; teacher: its model (for q/k/v; unused then); mask (B, T)."""
        parts: dict[str, torch.Tensor] = {}
        last = self.teacher_layers
        if self.hidden_weight:
            projections = self.projections if self.hidden_projected else [nn.Identity()] * len(student_states)
            terms = torch.stack([self.hidden_loss(proj(s), teacher_states[n * self.layers_per_block], mask)
                                 for n, (proj, s) in enumerate(zip(projections, student_states))])
            weights = torch.ones_like(terms)
            weights[-1] = self.last_boundary_weight
            parts["hidden"] = (terms * weights).sum() / weights.sum()
            parts["hidden_last"] = terms[-1].detach()
        if self.embedding_weight:
            last_state = self.projections[-1](student_states[-1]) if self.embedding_projected else student_states[-1]
            student = mean_pool(last_state, mask)  # (B, D), or (B, H_N) for relations
            parts["embedding"] = self.embedding_loss(student, mean_pool(teacher_states[last], mask))
        r = self.relation_heads
        layers = self.teacher_layers_used()
        teacher = teacher_qkv(teacher, teacher_states, layers) if layers else {}
        if self.attention_weight:
            terms = []
            for i, layer in enumerate(self.teacher_layer_for()):
                q, k, _ = student_qkv[f"s{i}"].chunk(3, dim=-1)  # (B, T, H) each
                terms.append(masked_score_mse(relation_scores(teacher[f"t{layer}.query"], teacher[f"t{layer}.key"], r),
                                              relation_scores(q, k, r), mask))
            parts["attention_mse"] = torch.stack(terms).mean()
        if self.minilm_weight:
            q, k, v = student_qkv[f"s{len(self.mha_blocks) - 1}"].chunk(3, dim=-1)
            tq, tk, tv = (teacher[f"t{self.minilm_layer}.{part}"] for part in ("query", "key", "value"))
            parts["minilm_attention"] = masked_relation_kl(relation_scores(tq, tk, r), relation_scores(q, k, r), mask)
            parts["minilm_value"] = masked_relation_kl(relation_scores(tv, tv, r), relation_scores(v, v, r), mask)
        weighted = ((self.hidden_weight, "hidden"), (self.attention_weight, "attention_mse"),
                    (self.embedding_weight, "embedding"))
        total = sum(
            (w * parts[key] for w, key in weighted if key in parts),
            start=torch.zeros((), device=mask.device),
        )
        if self.minilm_weight:
            total = total + self.minilm_weight * (parts["minilm_attention"] + parts["minilm_value"])
        parts["intermediate"] = total
        return parts
