"""The search finds what it should: a supernet path that reproduces the teacher exactly survives progressive
shrinking and is selected under a budget that admits it.

The teacher is a small BERT of 2 layers cut into 2 blocks; the space's widths include the teacher's, so the
path (mha, ffn) at that width has identity projections and, given the teacher's layer weights, computes
each teacher block exactly. Those weights are planted into the supernet and frozen (block-wise training has
converged there); every other candidate trains a little alongside. Then the real shrinking rounds, loss table,
multi-budget selection, re-ranking and weight inheritance run on it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from transformers import BertConfig, BertModel

from nas_bert.arch import FFN, MHA, Arch, BlockArch
from nas_bert.encoder import encoder_params
from nas_bert.inherit import inherit_from_supernet
from nas_bert.lit import SupernetDistillation
from nas_bert.modeling import NasBertConfig, NasBertModel
from nas_bert.nas.approximation import (
    block_tables,
    coupling_costs,
    loss_table,
    rerank,
    select_feasible,
)
from nas_bert.nas.latency import LatencyTable, candidate_latency, op_key, projection_key
from nas_bert.nas.selection import Budget, Selection
from nas_bert.nas.shrinking import ProgressiveShrinking
from nas_bert.nas.supernet import Supernet
from nas_bert.space import SearchSpace, op_flops, projection_flops
from nas_bert.stages.search import vocab_of
from nas_bert.teacher import FrozenTeacher
from nas_bert.utils.batch import first_batches

D, LAYERS, HEADS, VOCAB, MAX_POS, SEQ = 32, 2, 4, 100, 32, 16  # teacher width, layers, heads; data sizes
SPACE = SearchSpace(hidden_sizes=(16, D), ops=(MHA, FFN, "sepconv3"), num_blocks=2, slots_per_block=2,
                    head_dim=D // HEADS, ffn_ratio=2, name="finds")  # 24 candidates per block
EXACT = BlockArch(D, (MHA, FFN) * (LAYERS // SPACE.num_blocks))  # one teacher block = one BERT layer
EVAL_BATCH, SCORE_BATCHES = 4, 2  # shrinking scores on val[0:8]; the loss table uses val[8:16]
MIN_PER_BIN = 2
ZERO = 1e-10  # a "~0" block loss (the planted path is exact up to float rounding)


class RandomTokens(L.LightningDataModule):
    """Random token ids with padded tails: `train_dataloader`, and `val_dataset` for the scoring batches."""

    def __init__(self, n_train: int = 8, n_val: int = 16, batch_size: int = 4, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)

        def examples(n: int) -> list[dict[str, torch.Tensor]]:
            ids = torch.randint(1, VOCAB, (n, SEQ), generator=gen)  # (n, T)
            lengths = torch.randint(SEQ // 2, SEQ + 1, (n,), generator=gen)
            mask = (torch.arange(SEQ)[None] < lengths[:, None]).long()  # (n, T)
            return [{"input_ids": i * m, "attention_mask": m} for i, m in zip(ids, mask)]

        self.train_dataset, self.val_dataset = examples(n_train), examples(n_val)
        self.batch_size = self.eval_batch_size = batch_size

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_dataset, batch_size=self.batch_size)


def save_teacher(directory: Path) -> Path:
    """A 2-layer BERT whose layers do real work: large weights, random biases and LayerNorm affines."""
    torch.manual_seed(0)
    config = BertConfig(vocab_size=VOCAB, hidden_size=D, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                        intermediate_size=SPACE.ffn_ratio * D, max_position_embeddings=MAX_POS,
                        initializer_range=0.2)
    bert = BertModel(config)
    with torch.no_grad():
        for p in bert.encoder.parameters():
            if p.ndim == 1:  # biases and LayerNorm weights (the embeddings' LayerNorm stays 1 / 0)
                p.add_(0.1 * torch.randn_like(p))
    bert.save_pretrained(directory)
    return directory


@torch.no_grad()
def plant_teacher(supernet: Supernet, bert: BertModel) -> list[torch.nn.Module]:
    """Copy teacher layer n * L/N + j into block n's slots 2j (mha) and 2j + 1 (ffn) at width D; returns those ops."""
    planted = []
    per_block = LAYERS // SPACE.num_blocks
    for n, block in enumerate(supernet.blocks):
        for j in range(per_block):
            layer = bert.encoder.layer[n * per_block + j]
            attn, mha = layer.attention, block.slots[2 * j][f"{MHA}_{D}"]
            q, k, v = attn.self.query, attn.self.key, attn.self.value
            mha.qkv.weight.copy_(torch.cat([q.weight, k.weight, v.weight]))  # (3D, D): fused as [q; k; v]
            mha.qkv.bias.copy_(torch.cat([q.bias, k.bias, v.bias]))
            mha.out.load_state_dict(attn.output.dense.state_dict())
            mha.norm.load_state_dict(attn.output.LayerNorm.state_dict())
            ffn = block.slots[2 * j + 1][f"{FFN}_{D}"]
            ffn.up.load_state_dict(layer.intermediate.dense.state_dict())
            ffn.down.load_state_dict(layer.output.dense.state_dict())
            ffn.norm.load_state_dict(layer.output.LayerNorm.state_dict())
            planted += [mha, ffn]
    return planted


def flops_table(space: SearchSpace) -> LatencyTable:
    """A latency table that is the FLOPs at SEQ tokens, at 1 TFLOP/s (what a compute-bound device measures)."""
    widths, to_s = space.hidden_sizes, 1e-12
    return LatencyTable(
        device={"type": "cpu", "name": "flops model", "num_threads": 1, "torch": torch.__version__},
        space=space.to_dict(), batch_size=1, seq_len=SEQ, vocab_size=VOCAB, max_positions=MAX_POS,
        ops={op_key(op, h): op_flops(op, h, SEQ, space.ffn_ratio) * to_s for op in space.ops for h in widths},
        projections={projection_key(a, b): projection_flops(a, b, SEQ) * to_s for a in widths for b in widths
                     if a != b},
        embeddings={str(h): 2 * SEQ * h * to_s for h in widths},  # lookups: a made-up small cost
    )


class RecordRounds(L.Callback):
    """Per shrinking round: every candidate score of every block, and the alive sets after it.

    `score` wraps the module's `score_block`; the epoch-end hook runs after the shrinking callback's.
    """

    def __init__(self, shrinking: ProgressiveShrinking, module: SupernetDistillation) -> None:
        self.shrinking, self.score_block = shrinking, module.score_block
        self.pending: list[dict[int, float]] = [{} for _ in range(SPACE.num_blocks)]
        self.scores: list[list[dict[int, float]]] = []  # [round][block] {candidate index: score}
        self.alive: list[list[np.ndarray]] = []  # [round][block] alive candidate indices

    def score(self, n: int, block: BlockArch, *args) -> float:
        value = self.score_block(n, block, *args)
        self.pending[n][SPACE.index_of(block)] = value
        return value

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.shrinking.rounds > len(self.alive):
            self.alive.append([a.copy() for a in self.shrinking.alive])
            self.scores.append(self.pending)
            self.pending = [{} for _ in range(SPACE.num_blocks)]


@dataclass
class SearchRun:
    module: SupernetDistillation
    shrinking: ProgressiveShrinking
    record: RecordRounds
    table: LatencyTable
    data: RandomTokens
    steps: int  # optimizer steps trained


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread: these tensors are tiny, and two threads on a busy 2-core machine are ~10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> SearchRun:
    """Plant the teacher into the supernet, then train with progressive shrinking until it finishes."""
    root = tmp_path_factory.mktemp("search_finds")
    L.seed_everything(0)
    teacher = FrozenTeacher(str(save_teacher(root / "teacher")), num_blocks=SPACE.num_blocks)
    module = SupernetDistillation(SPACE, teacher, optimizer=partial(torch.optim.AdamW, lr=3e-3))
    for op in plant_teacher(module.supernet, teacher.model):
        op.requires_grad_(False)  # converged: only the other candidates' weights still train
    table = flops_table(SPACE)
    shrinking = ProgressiveShrinking(num_bins=2, candidates_per_bin=SPACE.num_candidates,
                                     eval_batches=SCORE_BATCHES, min_per_bin=MIN_PER_BIN, warmup_epochs=1,
                                     candidate_latency=candidate_latency(SPACE, table), eval_batch_size=EVAL_BATCH)
    record = RecordRounds(shrinking, module)
    module.score_block = record.score  # an instance attribute: the class's method is untouched
    data = RandomTokens()
    trainer = L.Trainer(accelerator="cpu", max_epochs=30, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, limit_val_batches=0,
                        default_root_dir=root, callbacks=[shrinking, record])
    trainer.fit(module, datamodule=data)
    del module.score_block
    return SearchRun(module.eval(), shrinking, record, table, data, trainer.global_step)


def held_out_states(run: SearchRun) -> tuple[list[list[torch.Tensor]], list[torch.Tensor]]:
    """Teacher states Y_0..Y_N and masks of the val batches after the scoring ones (as the search stage does)."""
    batches = first_batches(run.data.val_dataset, EVAL_BATCH, SCORE_BATCHES, offset=EVAL_BATCH * SCORE_BATCHES)
    return run.module.reference_states(batches)


def test_the_planted_path_computes_every_teacher_block(run: SearchRun) -> None:
    states, masks = held_out_states(run)
    for ys, mask in zip(states, masks):
        real = mask.bool()  # (B, T)
        for n in range(SPACE.num_blocks):
            pred = run.module.supernet.forward_block(n, ys[n], mask, EXACT)  # (B, T, D)
            torch.testing.assert_close(pred[real], ys[n + 1][real], atol=1e-5, rtol=0)
    for n in range(SPACE.num_blocks):
        assert run.module.score_block(n, EXACT, states, masks) <= ZERO


def test_the_exact_path_survives_every_shrinking_round(run: SearchRun) -> None:
    exact, shrinking, record = SPACE.index_of(EXACT), run.shrinking, run.record
    b = int(shrinking.bins[exact])
    assert b >= 0, "the bin-disagreement rule dropped the exact path before any scoring"
    initial = np.bincount(shrinking.bins[shrinking.bins >= 0], minlength=shrinking.num_bins)[b]
    assert initial > MIN_PER_BIN  # its bin was shrunk: it had to win its place
    assert shrinking.done and shrinking.rounds == len(record.alive) >= 2 and run.steps > 0
    for alive, scores in zip(record.alive, record.scores):
        for n in range(SPACE.num_blocks):
            assert exact in alive[n]
            in_bin = {i: s for i, s in scores[n].items() if shrinking.bins[i] == b}
            if not in_bin:  # the bin already held <= m candidates: not scored this round
                continue
            others = [s for i, s in in_bin.items() if i != exact]
            assert in_bin[exact] <= ZERO and min(others) > 1e3 * ZERO  # scored ~0, strictly the best
    assert all(exact in record.scores[0][n] for n in range(SPACE.num_blocks))  # it did compete
    assert (shrinking.alive_per_bin()[:, b] <= MIN_PER_BIN).all()
    assert all(exact in a for a in shrinking.alive) and run.module.alive is shrinking.alive


@dataclass
class Selected:
    selections: dict[str, Selection]  # by budget name: "admits", "excludes"
    exact_loss: float  # the exact model's summed block loss, by the scorer of the loss table
    exact_params: int  # the exact model's parameters, as the selection prices it
    states: list[list[torch.Tensor]]  # the held-out batches' Y_0..Y_N, each (B, T, D)
    masks: list[torch.Tensor]  # (B, T)


@pytest.fixture(scope="module")
def selected(run: SearchRun) -> Selected:
    """The selection stage on the shrunk space: loss table, two budgets around the exact model's size, top 5."""
    states, masks = held_out_states(run)
    alive = run.shrinking.alive
    losses = loss_table(run.module, alive, states, masks)
    blocks = block_tables(SPACE, alive, losses, run.table, SEQ)
    coupling = coupling_costs(SPACE, run.table, vocab_of(run.module), SEQ)
    exact_loss = sum(run.module.score_block(n, EXACT, states, masks) for n in range(SPACE.num_blocks))  # same scorer
    exact_params = encoder_params(Arch((EXACT,) * SPACE.num_blocks), VOCAB, MAX_POS, ffn_ratio=SPACE.ffn_ratio)
    budgets = [Budget("admits", max_params=exact_params), Budget("excludes", max_params=exact_params - 1)]
    selections, errors = select_feasible(blocks, coupling, budgets, k=5)
    assert not errors
    return Selected(selections, exact_loss, exact_params, states, masks)


def test_selection_returns_the_exact_path_when_the_budget_admits_it(run: SearchRun, selected: Selected) -> None:
    sel, exact = selected.selections["admits"], SPACE.index_of(EXACT)
    assert all(exact in a for a in run.shrinking.alive), "the exact path did not survive shrinking"
    assert selected.exact_loss <= SPACE.num_blocks * ZERO
    assert sel.loss[0] <= selected.exact_loss
    assert sel.index[0].tolist() == [exact] * SPACE.num_blocks and sel.params[0] == selected.exact_params
    assert len(sel) > 1 and sel.loss[1] > 1e3 * ZERO  # the runner-up is clearly worse: the choice is not a tie
    ranked = rerank(run.module, SPACE, sel, selected.states, selected.masks)
    assert ranked[0].arch == Arch((EXACT,) * SPACE.num_blocks) and ranked[0].model_loss <= ZERO  # chained too


def test_selection_does_not_return_it_when_the_budget_excludes_it(selected: Selected) -> None:
    sel, exact = selected.selections["excludes"], SPACE.index_of(EXACT)
    assert (sel.params < selected.exact_params).all()
    assert not (sel.index == exact).all(axis=1).any()
    assert sel.loss[0] > selected.exact_loss + 1e3 * ZERO  # the budget costs loss: it did matter


def test_the_selected_student_inherits_the_teacher(run: SearchRun, selected: Selected) -> None:
    """The selected model, initialised from the supernet (embeddings from the teacher), is the teacher."""
    index = selected.selections["admits"].index[0]
    arch = Arch(tuple(SPACE.candidate(int(i)) for i in index))
    student = NasBertModel(NasBertConfig.from_arch(arch, vocab_size=VOCAB, max_position_embeddings=MAX_POS,
                                                   head_dim=SPACE.head_dim, ffn_ratio=SPACE.ffn_ratio,
                                                   hidden_dropout_prob=0.0)).eval()
    inherit_from_supernet(student, run.module.supernet, run.module.teacher.model)
    batch = first_batches(run.data.val_dataset, EVAL_BATCH, 1)[0]
    real = batch["attention_mask"].bool()  # (B, T)
    with torch.no_grad():
        got = student(**batch).last_hidden_state  # (B, T, D)
    want = run.module.teacher(**batch).last_hidden_state
    torch.testing.assert_close(got[real], want[real], atol=1e-5, rtol=0)
