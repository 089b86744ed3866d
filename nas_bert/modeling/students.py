"""Students from the schema: searched architectures from `search.py`'s files, and hand-designed
uniform BERT baselines of the same recipe (the paper's BERT-5/10/30/60) expressed as `Arch` too."""

from __future__ import annotations

from pathlib import Path

from nas_bert.arch import FFN, MHA, Arch, ArchitectureError, BlockArch
from nas_bert.encoder import encoder_params
from nas_bert.modeling.configuration_nas_bert import NasBertConfig
from nas_bert.modeling.modeling_nas_bert import NasBertForMaskedLM
from nas_bert.space import SearchSpace


def uniform_arch(num_layers: int, hidden: int, num_blocks: int = 1) -> Arch:
    """A BERT of `num_layers` Transformer layers (MHA then FFN) at one width, split into blocks as evenly as
    possible (the first blocks take one layer more when they do not divide: 5 layers in 3 blocks = 2, 2, 1)."""
    if num_layers < 1 or num_blocks < 1 or num_blocks > num_layers:
        raise ArchitectureError(f"{num_layers} layers cannot fill {num_blocks} blocks (at least one layer each)")
    sizes = [num_layers // num_blocks + (n < num_layers % num_blocks) for n in range(num_blocks)]
    return Arch(blocks=tuple(BlockArch(hidden, (MHA, FFN) * size) for size in sizes))


def equal_size_baseline(target_params: int, num_layers: int, vocab_size: int, max_positions: int = 512,
                        head_dim: int = 64, ffn_ratio: int = 4, num_blocks: int = 1) -> Arch:
    """The uniform BERT of `num_layers` layers whose parameter count is closest to `target_params`
    (hidden a multiple of `head_dim`), as the paper's equal-size baselines (e.g. 10M -> L6 H256)."""
    def size(hidden: int) -> int:
        return encoder_params(uniform_arch(num_layers, hidden, num_blocks), vocab_size, max_positions,
                              ffn_ratio=ffn_ratio)

    hidden = head_dim
    while size(hidden + head_dim) <= target_params:
        hidden += head_dim
    best = min((hidden, hidden + head_dim), key=lambda h: abs(size(h) - target_params))
    return uniform_arch(num_layers, best, num_blocks)


def searched_arch_file(run_dir: str | Path, budget: str) -> Path:
    """`<run_dir>/architectures/<budget>.yaml`, or an error naming the budgets that run searched."""
    run_dir = Path(run_dir)
    path = run_dir / "architectures" / f"{budget}.yaml"
    if path.is_file():
        return path
    if not run_dir.is_dir():
        raise FileNotFoundError(
            f"search run {run_dir} does not exist: run `python search.py` first, or set student.search_run to a "
            f"search run folder (or student.baseline.layers/hidden for a hand-designed student)"
        )
    searched = sorted(p.stem for p in (run_dir / "architectures").glob("*.yaml"))
    raise FileNotFoundError(
        f"budget {budget!r} was not searched in {run_dir}; searched budgets: {', '.join(searched) or 'none'}. "
        f"Set student.budget to one of them (or re-run search.py with that budget)"
    )


def load_searched_arch(path: str | Path, space: SearchSpace | None = None) -> Arch:
    """An architecture file written by `search.py`; with `space`, it must come from that space."""
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"architecture file {path} does not exist: run `python search.py` first, or point student.arch_file "
            f"at <search run>/architectures/<budget>.yaml"
        )
    arch = Arch.load(path)
    if space is not None:
        saved = arch.meta.get("space")
        if saved is not None and SearchSpace.from_dict(saved) != space:
            raise ArchitectureError(
                f"{path} was searched in space {saved.get('name')!r}, not in the configured space {space.name!r}; "
                f"set space={saved.get('name')} or use an architecture searched in {space.name!r}"
            )
        space.validate(arch)
    return arch


def build_student(arch: Arch, vocab_size: int, max_positions: int = 512, type_vocab_size: int = 2,
                  head_dim: int = 64, ffn_ratio: int = 4, dropout: float = 0.1) -> NasBertForMaskedLM:
    """A freshly initialised NAS-BERT student with an MLM head (pre-training from scratch, as in the paper)."""
    config = NasBertConfig.from_arch(arch, vocab_size=vocab_size, max_position_embeddings=max_positions,
                                     type_vocab_size=type_vocab_size, head_dim=head_dim, ffn_ratio=ffn_ratio,
                                     hidden_dropout_prob=dropout)
    return NasBertForMaskedLM(config)
