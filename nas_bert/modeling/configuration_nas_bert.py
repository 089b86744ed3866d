"""`NasBertConfig`: the Hugging Face configuration of a searched NAS-BERT student.

Owns the serialisable description of a final model (its `Arch` as a plain dict plus the usual
BERT hyper-parameters) and the derived, read-only conveniences Hugging Face utilities expect
(`hidden_size`, `num_hidden_layers`, ...). The architecture is validated by `Arch.from_dict`
whenever a config is built, including when it is read back from `config.json`.
"""

from __future__ import annotations

from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

from nas_bert.arch import MHA, Arch, ArchitectureError, BlockArch
from nas_bert.modeling.lsq import check_lsq_bits

# Read-only values computed from `arch`; written to config.json for people to read, checked when read back.
DERIVED_KEYS = ("layers", "hidden_size", "embedding_size", "num_hidden_layers")


POOLINGS = ("cls", "mean", "pair")


def default_arch() -> Arch:
    """The architecture used when none is given: BERT-base's layout (12 x (mha, ffn) at width 768)."""
    return Arch(blocks=(BlockArch(768, ("mha", "ffn") * 12),))


@strict
class NasBertConfig(PreTrainedConfig):
    """Configuration of a NAS-BERT student: an `Arch` (as `Arch.to_dict()`, no `meta`) and BERT settings.

    `arch=None` gives `default_arch()`. An invalid `arch` raises `ArchitectureError` (a `ValueError`).
    """

    model_type = "nas_bert"

    arch: dict | None = None
    vocab_size: int = 30522
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    head_dim: int = 64
    ffn_ratio: int = 4
    hidden_dropout_prob: float | int = 0.1
    classifier_dropout: float | int | None = None
    classifier_pooling: str = "cls"  # the classifier reads the first token (BERT), the mean of all (SBERT), or for
    # sentence pairs each segment's mean as [u, v, |u - v|, u * v] (`pair`, SBERT's classifier features)
    lsq: dict | None = None  # {"weight_bits": 4 | 8, "act_bits": 8}: a quantization-aware (KDLSQ) student, its
    # Linears computing on learned integer grids (nas_bert.modeling.lsq); None: full precision
    initializer_range: float = 0.02
    pad_token_id: int | None = 0
    tie_word_embeddings: bool = True

    def __post_init__(self, **kwargs: Any) -> None:
        arch = self.arch
        if arch is None:
            arch = default_arch()
        elif not isinstance(arch, Arch):
            try:
                arch = Arch.from_dict(arch)
            except ArchitectureError as err:
                raise ArchitectureError(f"NasBertConfig: invalid `arch`: {err}") from None
        self.arch = {"embed": arch.embed, "blocks": [b.to_dict() for b in arch.blocks]}  # canonical, no meta
        for block in arch.blocks:
            if MHA in block.ops and block.hidden % self.head_dim:
                raise ArchitectureError(
                    f"NasBertConfig: block of width {block.hidden} has an mha op but is not divisible by "
                    f"head_dim={self.head_dim}"
                )
        if self.classifier_pooling not in POOLINGS:
            raise ValueError(f"NasBertConfig: classifier_pooling={self.classifier_pooling!r}; use one of {POOLINGS}")
        if self.lsq is not None:
            self.lsq = check_lsq_bits(**self.lsq)
        derived = {key: kwargs.pop(key) for key in DERIVED_KEYS if key in kwargs}
        super().__post_init__(**kwargs)
        for key, value in derived.items():  # values read back from config.json must agree with `arch`
            setattr(self, key, value)

    @classmethod
    def from_arch(cls, arch: Arch, **kwargs: Any) -> NasBertConfig:
        """A config for `arch` (its `meta` is dropped); other settings as keyword arguments."""
        return cls(arch={"embed": arch.embed, "blocks": [b.to_dict() for b in arch.blocks]}, **kwargs)

    def to_arch(self) -> Arch:
        """The architecture as an `Arch`."""
        return Arch.from_dict(self.arch)

    def _check_derived(self, key: str, value: Any) -> None:
        expected = getattr(self, key)
        if value != expected:
            raise AttributeError(f"NasBertConfig.{key} is derived from `arch` ({expected!r}); change `arch` instead")

    @property
    def layers(self) -> list[str]:
        """Per-slot names with widths, e.g. ['mha_128', 'ffn_128', 'identity', ...]."""
        return self.to_arch().layers

    @layers.setter
    def layers(self, value: list[str]) -> None:
        self._check_derived("layers", list(value))

    @property
    def hidden_size(self) -> int:
        """Width of the last block: the size of the hidden states task heads see."""
        return self.to_arch().blocks[-1].hidden

    @hidden_size.setter
    def hidden_size(self, value: int) -> None:
        self._check_derived("hidden_size", value)

    @property
    def embedding_size(self) -> int:
        """Width of the embeddings (and of the tied MLM decoder)."""
        return self.to_arch().embed_size

    @embedding_size.setter
    def embedding_size(self, value: int) -> None:
        self._check_derived("embedding_size", value)

    @property
    def num_hidden_layers(self) -> int:
        """Number of non-identity layers."""
        return sum(block.depth for block in self.to_arch().blocks)

    @num_hidden_layers.setter
    def num_hidden_layers(self, value: int) -> None:
        self._check_derived("num_hidden_layers", value)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out.update({key: getattr(self, key) for key in DERIVED_KEYS})
        return out



__all__ = ["NasBertConfig", "default_arch"]
