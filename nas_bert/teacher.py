"""The frozen teacher of every stage: any Hugging Face model, kept outside the LightningModule's module tree.

`FrozenTeacher` is not an `nn.Module`, so a LightningModule attribute holding it registers nothing: it is
neither DDP-wrapped, nor checkpointed, nor switched to train mode. It moves itself to the device of the
inputs it is called with, and pickles as its recipe (path, loader, block count), so spawned DDP workers
reload it from disk. Block-boundary states come from `output_hidden_states` alone.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoModel

from nas_bert.utils.resume import preserved_rng

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
    """The bare encoder (`AutoModel`): the supernet's teacher."""
    return AutoModel.from_pretrained(name_or_path)


def freeze(model: nn.Module) -> nn.Module:
    """No gradients, eval mode (dropout off)."""
    model.requires_grad_(False)
    return model.eval()


def encoder_config(model: nn.Module) -> Any:
    """The HF config of a model, or of the encoder inside a wrapper without one (an encoder with a fitted head)."""
    config = getattr(model, "config", None)
    return config if config is not None else model.encoder.config


class FrozenTeacher:
    """A frozen model returning its outputs, all hidden states, or the states at N block boundaries.

    Args:
        name_or_path: local `save_pretrained` directory or hub id.
        num_blocks: the teacher's layers are cut evenly into this many blocks (`block_states`).
        tokenizer: the tokenizer directory / hub id that belongs to it (default: `name_or_path`).
        loader: builds the model from the resolved path (default `AutoModel`; a task model or a masked-LM
            model for the other stages). It must pickle (a function or a `functools.partial` of one).
        setting: the config key that names it, for error messages.
        hub_id: its Hub id when `name_or_path` is a local copy (the `base_model` its students' model cards name).
    """

    def __init__(self, name_or_path: str, num_blocks: int = 1, tokenizer: str | None = None,
                 loader: Callable[[str], nn.Module] = load_encoder, setting: str = "teacher.name_or_path",
                 hub_id: str | None = None) -> None:
        self.name_or_path, self.num_blocks, self.loader, self.setting = str(name_or_path), num_blocks, loader, setting
        self.hub_id = hub_id
        self.tokenizer = str(tokenizer or name_or_path)
        resolved = resolve_model_path(self.name_or_path, "teacher", setting)
        try:
            with preserved_rng():  # loading draws nothing from the run's random streams (e.g. for missing heads)
                self.model = freeze(loader(resolved))
        except OSError as err:
            offline = os.environ.get("HF_HUB_OFFLINE") == "1"
            hint = ("HF_HUB_OFFLINE=1 is set: use a local directory (e.g. teacher=minilm_l6) or unset it"
                    if offline else "check the hub id and your network, or use a local directory")
            raise TeacherError(f"could not load teacher {name_or_path!r}: {err}\nFix: {hint} ({setting})") from None
        self.config = encoder_config(self.model)
        layers = getattr(self.config, "num_hidden_layers", None)
        if not isinstance(layers, int) or layers < 1 or not hasattr(self.config, "hidden_size"):
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
        self.num_layers, self.hidden_size = layers, int(self.config.hidden_size)
        self.layers_per_block = layers // num_blocks

    # -- the recipe travels, not the weights -----------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        return {"name_or_path": self.name_or_path, "num_blocks": self.num_blocks, "tokenizer": self.tokenizer,
                "loader": self.loader, "setting": self.setting}

    def __setstate__(self, recipe: dict[str, Any]) -> None:
        self.__init__(**recipe)

    def __repr__(self) -> str:
        return f"FrozenTeacher({self.name_or_path!r}, num_blocks={self.num_blocks}, {type(self.model).__name__})"

    # -- device and size ------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: torch.device | str) -> FrozenTeacher:
        """Move the weights to `device` (a no-op when they are there); returns self."""
        if self.device != torch.device(device):
            self.model.to(device)
        return self

    def parameters(self) -> Iterator[nn.Parameter]:
        return self.model.parameters()

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    # -- forward passes (no gradients, on the inputs' device) -----------------------------------------
    @torch.no_grad()
    def __call__(self, input_ids: torch.Tensor, **inputs: Any) -> Any:
        """The model's output on (B, T) `input_ids` and further model inputs."""
        self.to(input_ids.device)
        return self.model(input_ids=input_ids, **inputs)

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                      token_type_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """L + 1 states (B, T, D): the embedding output, then every layer's output."""
        inputs = {"attention_mask": attention_mask, "output_hidden_states": True, "return_dict": True}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        encoder = getattr(self.model, "base_model", self.model)  # no head: the states are what is needed
        self.to(input_ids.device)
        with torch.no_grad():
            states = encoder(input_ids=input_ids, **inputs).hidden_states
        if states is None or len(states) != self.num_layers + 1:
            raise TeacherError(
                f"teacher {self.name_or_path!r} returned {0 if states is None else len(states)} hidden states, "
                f"expected {self.num_layers + 1} (embeddings + every layer); it lacks the layers NAS-BERT needs"
            )
        return states

    def block_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                     token_type_ids: torch.Tensor | None = None) -> list[torch.Tensor]:
        """N + 1 states (B, T, D) at the block boundaries: Y_0 (embeddings), Y_1 .. Y_N."""
        states = self.hidden_states(input_ids, attention_mask, token_type_ids)
        return [states[n * self.layers_per_block] for n in range(self.num_blocks + 1)]
