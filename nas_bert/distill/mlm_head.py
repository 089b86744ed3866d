"""Teacher MLM head: fit, evaluate, save and load a BERT-style prediction head on a frozen encoder.

Knowledge distillation on MLM logits needs a teacher with an MLM head; a bare encoder (e.g. the
sentence-transformers ``all-MiniLM-L6-v2`` ``BertModel``) has none. This module owns that head:

* :class:`TeacherMLMHead`: dense(D->D) + GELU + LayerNorm + decoder(D->V), the decoder weight copied from
  the encoder's word embeddings (frozen by default, i.e. tied) with a trainable bias; ``save`` / ``load``,
* :func:`fit_mlm_head`: trains only the head with AdamW on MLM-masked batches (encoder frozen, eval, no_grad),
* :func:`mlm_loss`: held-out MLM cross-entropy with fixed seeded masking (deterministic).

Masking uses :class:`transformers.DataCollatorForLanguageModeling` (80% ``[MASK]``, 10% random, 10% kept;
special and padding tokens never masked).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import DataCollatorForLanguageModeling, PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["TeacherMLMHead", "fit_mlm_head", "mlm_loss"]

log = logging.getLogger(__name__)

_WEIGHTS_NAME = "mlm_head.safetensors"
_CONFIG_NAME = "mlm_head.json"
_IGNORE_INDEX = -100


class TeacherMLMHead(nn.Module):
    """BERT-style MLM prediction head: hidden ``(B, T, D)`` -> logits ``(B, T, V)``.

    Args:
        hidden_size: encoder width ``D``.
        vocab_size: vocabulary size ``V``.
        layer_norm_eps: LayerNorm epsilon (use the encoder's ``layer_norm_eps``).
        embedding_weight: ``(V, D)`` word embedding matrix to initialise the decoder from (copied);
            default: random normal(0, 0.02) init.
        freeze_decoder: keep the decoder weight frozen (tied to the embeddings); its bias always trains.
    """

    def __init__(
        self,
        hidden_size: int,
        vocab_size: int,
        layer_norm_eps: float = 1e-12,
        embedding_weight: torch.Tensor | None = None,
        freeze_decoder: bool = True,
    ) -> None:
        super().__init__()
        self.hidden_size, self.vocab_size = int(hidden_size), int(vocab_size)
        self.layer_norm_eps, self.freeze_decoder = float(layer_norm_eps), bool(freeze_decoder)
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.act = nn.GELU()
        self.layer_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.decoder = nn.Linear(hidden_size, vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(vocab_size))
        nn.init.normal_(self.dense.weight, std=0.02)
        nn.init.zeros_(self.dense.bias)
        if embedding_weight is None:
            nn.init.normal_(self.decoder.weight, std=0.02)
        else:
            if tuple(embedding_weight.shape) != (vocab_size, hidden_size):
                raise ValueError(
                    f"embedding_weight has shape {tuple(embedding_weight.shape)}, expected "
                    f"(vocab_size, hidden_size) = ({vocab_size}, {hidden_size})."
                )
            with torch.no_grad():
                self.decoder.weight.copy_(embedding_weight.detach().float())
        self.decoder.weight.requires_grad_(not freeze_decoder)

    @classmethod
    def from_encoder(cls, encoder: PreTrainedModel, freeze_decoder: bool = True) -> TeacherMLMHead:
        """A head sized for ``encoder``, decoder initialised from its word embedding matrix."""
        weight = _word_embeddings(encoder)  # (V, D)
        eps = float(getattr(encoder.config, "layer_norm_eps", 1e-12))
        return cls(
            weight.shape[1], weight.shape[0], eps, embedding_weight=weight, freeze_decoder=freeze_decoder
        )

    def config(self) -> dict[str, Any]:
        """Constructor arguments (without the weights), as saved next to them."""
        return {
            "hidden_size": self.hidden_size,
            "vocab_size": self.vocab_size,
            "layer_norm_eps": self.layer_norm_eps,
            "freeze_decoder": self.freeze_decoder,
        }

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: ``(..., D)`` -> logits ``(..., V)`` (any leading shape, e.g. ``(B, T)`` or ``(N,)``)."""
        x = self.layer_norm(self.act(self.dense(hidden)))  # (..., D)
        return self.decoder(x) + self.bias  # (..., V)

    def save(self, path: str | os.PathLike) -> None:
        """Write ``path/mlm_head.safetensors`` (all weights) and ``path/mlm_head.json`` (config)."""
        os.makedirs(path, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, os.path.join(path, _WEIGHTS_NAME))
        with open(os.path.join(path, _CONFIG_NAME), "w") as f:
            json.dump(self.config(), f, indent=2)

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu") -> TeacherMLMHead:
        """Rebuild a head written by :meth:`save`."""
        weights, config = os.path.join(path, _WEIGHTS_NAME), os.path.join(path, _CONFIG_NAME)
        for f in (weights, config):
            if not os.path.isfile(f):
                raise FileNotFoundError(
                    f"TeacherMLMHead.load: {os.path.abspath(f)!r} does not exist; `path` must be a directory "
                    f"written by TeacherMLMHead.save (containing {_WEIGHTS_NAME} and {_CONFIG_NAME})."
                )
        with open(config) as f:
            head = cls(**json.load(f))
        head.load_state_dict(load_file(weights, device=str(map_location)))
        return head.to(map_location)


def _word_embeddings(encoder: PreTrainedModel) -> torch.Tensor:
    """The encoder's ``(V, D)`` word embedding matrix, with a clear error when there is none."""
    get = getattr(encoder, "get_input_embeddings", None)
    emb = get() if callable(get) else None
    weight = getattr(emb, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        raise TypeError(
            f"{type(encoder).__name__} has no usable get_input_embeddings() (got {type(emb).__name__}); "
            f"the MLM head's decoder is initialised from the word embedding matrix, so pass a Hugging Face "
            f"encoder such as BertModel."
        )
    return weight


def _check_vocab(encoder: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Tokenizer and encoder embeddings must agree on the vocabulary size."""
    vocab = _word_embeddings(encoder).shape[0]
    if len(tokenizer) != vocab:
        raise ValueError(
            f"Vocabulary size mismatch: the tokenizer has {len(tokenizer)} tokens but the encoder's word "
            f"embeddings have {vocab} rows; use the tokenizer that belongs to the encoder checkpoint."
        )
    if tokenizer.mask_token_id is None:
        raise ValueError(f"The tokenizer {type(tokenizer).__name__} has no [MASK] token; MLM needs one.")


def _masker(
    tokenizer: PreTrainedTokenizerBase, mlm_probability: float, seed: int
) -> DataCollatorForLanguageModeling:
    """The library MLM collator with its own seeded generator (no global RNG use)."""
    collator = DataCollatorForLanguageModeling(
        tokenizer, mlm=True, mlm_probability=mlm_probability, seed=seed
    )
    collator.generator = collator.get_generator(seed)
    return collator


def _mask_batch(
    collator: DataCollatorForLanguageModeling, batch: dict[str, torch.Tensor], device: torch.device
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Mask one batch on CPU; returns the encoder inputs on ``device`` and labels ``(B, T)``."""
    input_ids = batch["input_ids"].detach().cpu().long()  # (B, T)
    attention_mask = batch.get("attention_mask")
    attention_mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask.cpu().long()
    special = torch.tensor(collator.tokenizer.all_special_ids, dtype=torch.long)
    no_mask = torch.isin(input_ids, special) | (attention_mask == 0)  # (B, T)
    masked_ids, labels = collator.torch_mask_tokens(input_ids.clone(), special_tokens_mask=no_mask)
    inputs = {"input_ids": masked_ids.to(device), "attention_mask": attention_mask.to(device)}
    if batch.get("token_type_ids") is not None:
        inputs["token_type_ids"] = batch["token_type_ids"].long().to(device)
    return inputs, labels.to(device)


@torch.no_grad()
def _masked_hidden(
    encoder: PreTrainedModel, inputs: dict[str, torch.Tensor], labels: torch.Tensor
) -> torch.Tensor:
    """Frozen encoder's last hidden state at masked positions: ``(N_masked, D)`` fp32."""
    hidden = encoder(**inputs).last_hidden_state  # (B, T, D)
    return hidden[labels != _IGNORE_INDEX].float()  # (N, D)


def _cycle(batches: Iterable[dict]) -> Iterator[dict]:
    """Loop over ``batches`` forever (re-iterating it); errors if a pass yields nothing."""
    while True:
        empty = True
        for batch in batches:
            empty = False
            yield batch
        if empty:
            raise ValueError(
                "`batches` yielded no batch (empty, or an exhausted one-shot iterator); pass a re-iterable "
                "such as a DataLoader."
            )


def fit_mlm_head(
    encoder: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    batches: Iterable[dict],
    steps: int,
    lr: float = 1e-3,
    mlm_probability: float = 0.15,
    seed: int = 0,
    log_every: int = 10,
    logger: Callable[[dict], None] | None = None,
) -> tuple[TeacherMLMHead, dict]:
    """Fit a :class:`TeacherMLMHead` on a frozen ``encoder`` for ``steps`` AdamW steps.

    ``batches`` holds dicts of ``input_ids`` / ``attention_mask`` / ``token_type_ids`` ``(B, T)`` (e.g. a
    ``CorpusDataModule`` dataloader) and is cycled over. Masking is seeded with ``seed`` and so is the
    head's initialisation. ``logger`` gets ``{"step", "mlm_head/loss"}`` (mean over the last ``log_every``
    steps) every ``log_every`` steps and at the end.

    Returns the head (eval mode, on the encoder's device) and ``{"loss": [per-step losses], ...}``.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}.")
    _check_vocab(encoder, tokenizer)
    device = _word_embeddings(encoder).device
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = TeacherMLMHead.from_encoder(encoder).to(device)
    optimizer = torch.optim.AdamW([p for p in head.parameters() if p.requires_grad], lr=lr)
    collator = _masker(tokenizer, mlm_probability, seed)
    was_training = encoder.training
    encoder.eval()
    head.train()
    losses: list[float] = []
    try:
        stream = _cycle(batches)
        for step in range(1, steps + 1):
            inputs, labels = _mask_batch(collator, next(stream), device)
            hidden = _masked_hidden(encoder, inputs, labels)  # (N, D)
            if hidden.shape[0] == 0:
                continue  # nothing masked in this batch (tiny batch / low probability)
            loss = F.cross_entropy(head(hidden), labels[labels != _IGNORE_INDEX])  # logits (N, V)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            if step % log_every == 0 or step == steps:
                window = losses[-log_every:]
                record = {"step": step, "mlm_head/loss": sum(window) / max(len(window), 1)}
                log.info("MLM head step %d/%d: loss %.4f", step, steps, record["mlm_head/loss"])
                if logger is not None:
                    logger(record)
    finally:
        encoder.train(was_training)
    head.eval()
    history = {"loss": losses, "steps": steps, "lr": lr, "mlm_probability": mlm_probability, "seed": seed}
    return head, history


@torch.no_grad()
def mlm_loss(
    encoder: PreTrainedModel,
    head: TeacherMLMHead,
    batches: Iterable[dict],
    mlm_probability: float = 0.15,
    seed: int = 0,
    *,
    tokenizer: PreTrainedTokenizerBase,
) -> float:
    """Held-out MLM cross-entropy (mean over all masked tokens) with fixed masking from ``seed``.

    Deterministic for a fixed ``batches`` order (e.g. a non-shuffled validation dataloader). ``tokenizer``
    supplies the ``[MASK]`` / special token ids for masking.
    """
    _check_vocab(encoder, tokenizer)
    device = _word_embeddings(encoder).device
    collator = _masker(tokenizer, mlm_probability, seed)
    was_training, head_training = encoder.training, head.training
    encoder.eval()
    head.eval()
    total, count = 0.0, 0
    try:
        for batch in batches:
            inputs, labels = _mask_batch(collator, batch, device)
            hidden = _masked_hidden(encoder, inputs, labels)  # (N, D)
            if hidden.shape[0] == 0:
                continue
            targets = labels[labels != _IGNORE_INDEX]  # (N,)
            total += float(F.cross_entropy(head(hidden), targets, reduction="sum"))
            count += int(targets.numel())
    finally:
        encoder.train(was_training)
        head.train(head_training)
    if count == 0:
        raise ValueError("mlm_loss: no token was masked in `batches` (empty iterable?).")
    return total / count if math.isfinite(total) else float("inf")
