"""A budget's pick beats the uniform BERTs of the space and every smaller budget's pick by whole-model loss."""

from __future__ import annotations

import numpy as np

from nas_bert.arch import IDENTITY, Arch
from nas_bert.nas.approximation import Ranked, VocabSpec
from nas_bert.nas.contenders import uniform_berts, with_contenders
from nas_bert.nas.latency import LatencyTable
from nas_bert.nas.selection import Budget
from nas_bert.reports.search import BudgetResult, contender_notes
from nas_bert.space import SearchSpace

SPACE = SearchSpace(hidden_sizes=(16, 32), ops=("mha", "ffn", "sepconv3"), num_blocks=2, slots_per_block=4,
                    head_dim=8, name="t")


def test_the_uniform_berts_of_a_space_are_every_depth_at_every_width():
    berts = uniform_berts(SPACE)
    assert sorted(berts) == sorted(f"bert-L{layers}-H{h}" for layers in (2, 3, 4) for h in (16, 32))
    three = berts["bert-L3-H32"]
    assert [[op for op in b.ops if op != IDENTITY] for b in three.blocks] == [["mha", "ffn"] * 2, ["mha", "ffn"]]
    assert all(SPACE.validate(arch) for arch in berts.values())
    assert uniform_berts(SearchSpace(hidden_sizes=(16,), ops=("sepconv3",), num_blocks=2, slots_per_block=2)) == {}


class Scorer:
    """A stand-in supernet: an architecture's loss is falling in its parameters, except uniform ones score `bonus`
    lower (so a uniform BERT can win)."""

    training = False

    def __init__(self, bonus: float) -> None:
        self.bonus = bonus

    def eval(self):
        return self

    def train(self, mode: bool = True):
        return self

    def score_block(self, n, block, states, masks) -> float:
        return 1.0 / SPACE.block_params(block)

    def score_model(self, arch: Arch, states, masks) -> float:
        uniform = all(op in ("mha", "ffn", IDENTITY) for b in arch.blocks for op in b.ops)
        return sum(self.score_block(n, b, states, masks) for n, b in enumerate(arch.blocks)) - self.bonus * uniform


def table() -> LatencyTable:
    ops = {f"{op}_{h}": 1e-4 * h for op in SPACE.ops for h in SPACE.hidden_sizes}
    return LatencyTable(device="cpu", space=SPACE.to_dict(), batch_size=1, seq_len=8, vocab_size=100,
                        max_positions=16, ops=ops, projections={"16->32": 1e-5, "32->16": 1e-5},
                        embeddings={"16": 1e-5, "32": 2e-5})


def searched(arch: Arch, loss: float, params: int) -> Ranked:
    return Ranked(arch=arch, params=params, flops=0, latency=0.0, approx_loss=loss, model_loss=loss, approx_rank=0)


def test_a_uniform_bert_that_scores_better_is_the_pick_and_a_larger_budget_never_picks_worse():
    vocab = VocabSpec(100, 16)
    rng = np.random.default_rng(0)
    small, large = Budget("small", max_params=30_000), Budget("large", max_params=60_000)
    sepconv = Arch.from_dict({"blocks": [{"hidden": 16, "ops": ["sepconv3", IDENTITY, IDENTITY, IDENTITY]}] * 2})
    ranked = {small: [searched(sepconv, 0.5, 3000)], large: [searched(SPACE.sample(rng), 0.9, 50_000)]}
    out = with_contenders(Scorer(bonus=1.0), SPACE, ranked, table(), vocab, 8, None, None)
    for budget in (small, large):
        assert out[budget][0].origin.startswith("bert-") and out[budget][0].params <= budget.max_params
        assert all(m.params <= budget.max_params for m in out[budget])
    assert out[large][0].model_loss <= out[small][0].model_loss
    assert any(m.origin == "pick of small" for m in out[large])  # the smaller budget's pick contends in the larger
    notes = contender_notes([BudgetResult(b, out[b], 1) for b in (small, large)])
    assert len(notes) == 2 and notes[0].startswith("budget small: bert-")
    plain = with_contenders(Scorer(bonus=-10.0), SPACE, ranked, table(), vocab, 8, None, None)
    assert plain[small][0].origin == "search"  # uniform BERTs scoring worse do not displace the search's pick


def test_a_budget_only_a_uniform_bert_meets_selects_it_and_says_so():
    from nas_bert.encoder import encoder_params

    vocab = VocabSpec(100, 16)
    sizes = {name: encoder_params(a, 100, 16, ffn_ratio=SPACE.ffn_ratio) for name, a in uniform_berts(SPACE).items()}
    tight = Budget("tight", max_params=min(sizes.values()))  # the smallest uniform BERT alone fits
    out = with_contenders(Scorer(bonus=0.0), SPACE, {tight: []}, table(), vocab, 8, None, None)
    assert [m.origin for m in out[tight]] == [min(sizes, key=sizes.get)]
    notes = contender_notes([BudgetResult(tight, out[tight], 0)])
    assert notes == [f"budget tight: no searched model meets it, only {min(sizes, key=sizes.get)} among the "
                     f"contenders; it is the pick"]
