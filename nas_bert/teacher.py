"""The frozen teacher: any Hugging Face BERT-family encoder, cut evenly into N blocks.

`Teacher(batch)` returns the hidden states at block boundaries, Y_0 (embedding output) ..
Y_N (last layer). It never trains: parameters are frozen and `train()` keeps it in eval mode.
Owners keep it outside their module tree, so it is neither DDP-wrapped nor checkpointed.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModel

log = logging.getLogger(__name__)


class TeacherError(ValueError):
    """A teacher that cannot be loaded or cannot be cut into the requested blocks."""


def resolve_model_path(name_or_path: str, what: str = "teacher", setting: str = "teacher.name_or_path") -> str:
    """A local directory (must exist) or a hub id, returned as a string for `from_pretrained`.

    `what` / `setting` name the model and the config key in error messages.
    """
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise TeacherError(
                f"{what} directory {path} has no config.json; point {setting} at a directory "
                f"written by save_pretrained (or at a hub id such as bert-base-uncased)"
            )
        return str(path)
    if name_or_path.startswith((".", "/", "~")) or path.is_absolute():
        raise FileNotFoundError(
            f"{what} path {name_or_path} does not exist; set {setting} to an existing "
            f"save_pretrained directory or to a hub id such as bert-base-uncased"
        )
    return name_or_path


def load_encoder(name_or_path: str) -> nn.Module:
    """`AutoModel.from_pretrained` with errors that say what to do."""
    resolved = resolve_model_path(name_or_path)
    try:
        return AutoModel.from_pretrained(resolved)
    except OSError as err:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        hint = (
            "HF_HUB_OFFLINE=1 is set: use a local directory (e.g. teacher=minilm_l6) or unset it"
            if offline
            else "check the hub id and your network, or use a local directory"
        )
        raise TeacherError(f"could not load teacher {name_or_path!r}: {err}\nFix: {hint}") from None


class Teacher(nn.Module):
    """A frozen encoder returning Y_0..Y_N at its N block boundaries."""

    def __init__(self, name_or_path: str, num_blocks: int, tokenizer: str | None = None) -> None:
        super().__init__()
        self.name_or_path = name_or_path
        self.tokenizer = tokenizer or name_or_path
        self.model = load_encoder(name_or_path)
        config = self.model.config
        layers = getattr(config, "num_hidden_layers", None)
        if not isinstance(layers, int) or layers < 1 or not hasattr(config, "hidden_size"):
            raise TeacherError(
                f"teacher {name_or_path!r} ({type(self.model).__name__}) exposes no num_hidden_layers/hidden_size; "
                f"use a BERT-family encoder (BERT, RoBERTa, MiniLM, ...)"
            )
        if num_blocks < 1 or layers % num_blocks:
            divisors = [d for d in range(1, layers + 1) if layers % d == 0]
            raise TeacherError(
                f"teacher {name_or_path!r} has {layers} layers, which do not split evenly into {num_blocks} blocks; "
                f"set space.num_blocks to one of {divisors}"
            )
        self.num_layers = layers
        self.num_blocks = num_blocks
        self.layers_per_block = layers // num_blocks
        self.hidden_size: int = config.hidden_size
        self.requires_grad_(False)
        self.eval()

    def __reduce__(self):
        """Pickle as the recipe, not the weights: spawned DDP workers reload the teacher from disk.

        (Unpickled transformers models can lose the hooks that collect hidden states.)
        """
        return (type(self), (self.name_or_path, self.num_blocks, self.tokenizer))

    def train(self, mode: bool = True) -> Teacher:
        """Always eval: dropout off, whatever the owner asks."""
        return super().train(False)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @torch.no_grad()
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        """(B, T) token ids -> N + 1 tensors (B, T, D): Y_0 (embeddings), Y_1 .. Y_N."""
        kwargs = {"attention_mask": attention_mask, "output_hidden_states": True, "return_dict": True}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        states = self.model(input_ids=input_ids, **kwargs).hidden_states  # L + 1 tensors
        if states is None or len(states) != self.num_layers + 1:
            raise TeacherError(
                f"teacher {self.name_or_path!r} returned {0 if states is None else len(states)} hidden states, "
                f"expected {self.num_layers + 1} (embeddings + every layer); it lacks the layers NAS-BERT needs"
            )
        return [states[n * self.layers_per_block] for n in range(self.num_blocks + 1)]

