"""The teacher of pre-training KD: frozen, returning MLM logits (B, T, V).

A checkpoint with an MLM head (e.g. bert-base-uncased) is used as it is. A bare encoder (e.g. the
offline all-MiniLM-L6-v2) gets a `TeacherMLMHead` fitted on it once (`prepare_mlm_teacher`), saved,
and reused by later runs.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModel, AutoModelForMaskedLM
from transformers.modeling_outputs import MaskedLMOutput

from nas_bert.distill.mlm_head import TeacherMLMHead, fit_mlm_head, mlm_loss
from nas_bert.teacher import resolve_model_path

log = logging.getLogger(__name__)


class EncoderWithMLMHead(nn.Module):
    """A bare encoder plus a fitted prediction head."""

    def __init__(self, encoder: nn.Module, head: TeacherMLMHead) -> None:
        super().__init__()
        self.encoder, self.head = encoder, head

    @property
    def base_model(self) -> nn.Module:
        """The encoder (as HF models name theirs), so callers can run the head on chosen positions only."""
        return self.encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, output_hidden_states: bool = False) -> MaskedLMOutput:
        """`logits` (B, T, V); with output_hidden_states the encoder's L + 1 states (B, T, D)."""
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                           output_hidden_states=output_hidden_states)
        return MaskedLMOutput(logits=self.head(out.last_hidden_state), hidden_states=out.hidden_states)


def load_own_mlm_head(name_or_path: str) -> nn.Module | None:
    """The checkpoint as a masked-LM model if it ships its MLM head, else None."""
    model, info = AutoModelForMaskedLM.from_pretrained(resolve_model_path(name_or_path), output_loading_info=True)
    return None if info.get("missing_keys") else model


def freeze(module: nn.Module) -> nn.Module:
    module.requires_grad_(False)
    return module.eval()


def prepare_mlm_teacher(name_or_path: str, tokenizer, head_path: str | Path, fit_batches, eval_batches,
                        fit_steps: int = 200, lr: float = 1e-3) -> tuple[nn.Module, dict]:
    """A frozen MLM teacher and a report of what was done (own head, cached head, or freshly fitted)."""
    own = load_own_mlm_head(name_or_path)
    if own is not None:
        return freeze(own), {"mlm_head": "own"}
    encoder = freeze(AutoModel.from_pretrained(resolve_model_path(name_or_path)))
    head_path = Path(head_path)  # a directory (TeacherMLMHead.save / load)
    if (head_path / "mlm_head.safetensors").is_file():
        head = TeacherMLMHead.load(head_path)
        return freeze(EncoderWithMLMHead(encoder, head)), {"mlm_head": "cached", "path": str(head_path)}
    untrained = TeacherMLMHead.from_encoder(encoder)
    before = mlm_loss(encoder, untrained, eval_batches, tokenizer=tokenizer)
    head, history = fit_mlm_head(encoder, tokenizer, fit_batches, steps=fit_steps, lr=lr)
    after = mlm_loss(encoder, head, eval_batches, tokenizer=tokenizer)
    head_path.mkdir(parents=True, exist_ok=True)
    head.save(head_path)
    log.info("fitted an MLM head on %s: held-out MLM loss %.3f -> %.3f (%d steps); saved %s",
             name_or_path, before, after, fit_steps, head_path)
    report = {"mlm_head": "fitted", "path": str(head_path), "heldout_mlm_before": before,
              "heldout_mlm_after": after, "steps": fit_steps, "train_loss": history["loss"]}
    return freeze(EncoderWithMLMHead(encoder, head)), report
