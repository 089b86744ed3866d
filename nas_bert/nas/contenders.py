"""Contenders a budget's pick must beat by its own measure (the whole-model loss): the uniform BERTs the space
expresses and the other budgets' picks, wherever they meet the budget.

A searched student that loses to a hand-designed one of the same cost is no result, and a larger budget whose
pick is worse than a smaller budget's pick has not spent its budget. Both are settled by scoring the contenders
beside each budget's re-ranked top-T: the uniform BERT then wins when it is better (and the summary says so), and
the pick of a budget that contains another is never worse than that one's pick.
"""

from __future__ import annotations

from dataclasses import replace

from nas_bert.arch import FFN, IDENTITY, MHA, Arch, BlockArch
from nas_bert.encoder import encoder_flops, encoder_params
from nas_bert.nas.approximation import Ranked, VocabSpec
from nas_bert.nas.latency import LatencyTable, predict_latency
from nas_bert.nas.selection import Budget
from nas_bert.space import SearchSpace
from nas_bert.utils.modes import eval_mode


def uniform_berts(space: SearchSpace) -> dict[str, Arch]:
    """name -> every uniform BERT the space holds: MHA + FFN layers at one width, spread over the blocks as evenly
    as possible (the first blocks take one more), each block within its slots."""
    if MHA not in space.ops or FFN not in space.ops:
        return {}
    found = {}
    for layers in range(space.num_blocks, space.num_blocks * (space.slots_per_block // 2) + 1):
        sizes = [layers // space.num_blocks + (n < layers % space.num_blocks) for n in range(space.num_blocks)]
        for hidden in space.hidden_sizes:
            blocks = tuple(BlockArch(hidden, (MHA, FFN) * size + (IDENTITY,) * (space.slots_per_block - 2 * size))
                           for size in sizes)
            found[f"bert-L{layers}-H{hidden}"] = Arch(blocks=blocks)
    return found


def meets(budget: Budget, params: int, latency: float) -> bool:
    return ((budget.max_params is None or params <= budget.max_params)
            and (budget.max_latency is None or latency <= budget.max_latency))


def scored(module, space: SearchSpace, arch: Arch, origin: str, table: LatencyTable, vocab: VocabSpec,
           seq_len: int, states, masks) -> Ranked:
    """`arch` costed as the selection costs it and scored by the supernet, as a `Ranked` of `origin`."""
    with eval_mode(module):
        approx = sum(module.score_block(n, block, states, masks) for n, block in enumerate(arch.blocks))
        model_loss = module.score_model(arch, states, masks)
    params = encoder_params(arch, vocab.vocab_size, vocab.max_positions, vocab.type_vocab_size, space.ffn_ratio)
    return Ranked(arch=arch, params=params, flops=encoder_flops(arch, seq_len, space.ffn_ratio),
                  latency=predict_latency(arch, table, space), approx_loss=float(approx), model_loss=model_loss,
                  approx_rank=-1, origin=origin)


def with_contenders(module, space: SearchSpace, ranked: dict[Budget, list[Ranked]], table: LatencyTable,
                    vocab: VocabSpec, seq_len: int, states, masks) -> dict[Budget, list[Ranked]]:
    """Each budget's list with the uniform BERTs and the other budgets' picks that meet it added, best first by
    whole-model loss (ties: the search's own models first)."""
    pool = [scored(module, space, arch, name, table, vocab, seq_len, states, masks)
            for name, arch in uniform_berts(space).items()]
    pool += [replace(models[0], origin=f"pick of {budget.name}", approx_rank=-1)
             for budget, models in ranked.items() if models]
    out = {}
    for budget, models in ranked.items():
        seen, extra = {m.arch.blocks for m in models}, []
        for m in pool:
            if meets(budget, m.params, m.latency) and m.arch.blocks not in seen:
                seen.add(m.arch.blocks)
                extra.append(m)
        out[budget] = sorted(models + extra, key=lambda m: (m.model_loss, m.approx_rank < 0, m.approx_rank))
    return out
