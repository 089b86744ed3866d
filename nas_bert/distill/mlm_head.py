"""The MLM head of the pre-training teacher: the checkpoint's own, or one fitted on its frozen encoder.

Prediction-layer KD needs the teacher's MLM logits. A checkpoint with an MLM head (bert-base-uncased) is
used as it is. A bare encoder (the offline all-MiniLM-L6-v2) gets a `TeacherMLMHead` fitted once by
`fit_mlm_head` (a small Lightning fit on batches masked by `TokenMasker`), saved as a directory and
loaded by `load_masked_lm`, the loader of the pre-training `FrozenTeacher`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from torchmetrics import MeanMetric
from transformers import AutoModelForMaskedLM
from transformers.modeling_outputs import MaskedLMOutput

from nas_bert.distill.masking import TokenMasker
from nas_bert.teacher import FrozenTeacher, TeacherError
from nas_bert.utils.resume import preserved_rng

log = logging.getLogger(__name__)

WEIGHTS, CONFIG = "mlm_head.safetensors", "mlm_head.json"


class TeacherMLMHead(nn.Module):
    """BERT's prediction head, hidden (..., D) -> logits (..., V): dense, GELU, LayerNorm, decoder + bias.

    The decoder is a copy of the encoder's word embeddings, kept frozen (tied, as in BERT); the rest trains.
    """

    def __init__(self, hidden_size: int, vocab_size: int, layer_norm_eps: float = 1e-12) -> None:
        super().__init__()
        self.hidden_size, self.vocab_size, self.layer_norm_eps = int(hidden_size), int(vocab_size), layer_norm_eps
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.act = nn.GELU()
        self.layer_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.decoder = nn.Linear(hidden_size, vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(vocab_size))
        nn.init.normal_(self.dense.weight, std=0.02)
        nn.init.zeros_(self.dense.bias)
        self.decoder.weight.requires_grad_(False)

    @classmethod
    def from_encoder(cls, encoder: nn.Module) -> TeacherMLMHead:
        """A head sized for `encoder`, its decoder copied from the (V, D) word embedding matrix."""
        embeddings = getattr(encoder.get_input_embeddings(), "weight", None) if hasattr(
            encoder, "get_input_embeddings") else None
        if not isinstance(embeddings, torch.Tensor) or embeddings.dim() != 2:
            raise TypeError(f"{type(encoder).__name__} has no get_input_embeddings() matrix to initialise the MLM "
                            f"head's decoder from; use a Hugging Face encoder such as BertModel")
        head = cls(embeddings.shape[1], embeddings.shape[0], float(getattr(encoder.config, "layer_norm_eps", 1e-12)))
        with torch.no_grad():
            head.decoder.weight.copy_(embeddings.float())
        return head.to(embeddings.device)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., D) -> (..., V)."""
        return self.decoder(self.layer_norm(self.act(self.dense(hidden)))) + self.bias

    def save(self, directory: str | Path) -> None:
        """`mlm_head.safetensors` (weights) and `mlm_head.json` (sizes) in `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, directory / WEIGHTS)
        sizes = {"hidden_size": self.hidden_size, "vocab_size": self.vocab_size, "layer_norm_eps": self.layer_norm_eps}
        (directory / CONFIG).write_text(json.dumps(sizes, indent=2))

    @classmethod
    def load(cls, directory: str | Path) -> TeacherMLMHead:
        """A head written by `save` (heads cached by nas-bert 0.1 load too)."""
        directory = Path(directory)
        for name in (WEIGHTS, CONFIG):
            if not (directory / name).is_file():
                raise FileNotFoundError(f"{directory / name} does not exist: the directory must be written by "
                                        f"TeacherMLMHead.save ({WEIGHTS} and {CONFIG})")
        sizes = json.loads((directory / CONFIG).read_text())
        head = cls(sizes["hidden_size"], sizes["vocab_size"], sizes.get("layer_norm_eps", 1e-12))
        head.load_state_dict(load_file(directory / WEIGHTS))
        return head


class EncoderWithMLMHead(nn.Module):
    """A bare encoder plus a fitted head: `logits` (B, T, V) like any `...ForMaskedLM` model."""

    def __init__(self, encoder: nn.Module, head: TeacherMLMHead) -> None:
        super().__init__()
        self.encoder, self.head = encoder, head

    @property
    def base_model(self) -> nn.Module:
        """The encoder (as HF models name theirs), so callers can run the head on chosen positions only."""
        return self.encoder

    @property
    def config(self) -> Any:
        return self.encoder.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, output_hidden_states: bool = False) -> MaskedLMOutput:
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                           output_hidden_states=output_hidden_states)
        return MaskedLMOutput(logits=self.head(out.last_hidden_state), hidden_states=out.hidden_states)


class MissingMLMHead(TeacherError):
    """The teacher ships no MLM head and none has been fitted for it yet."""


def load_masked_lm(name_or_path: str, head_dir: str | None = None) -> nn.Module:
    """The checkpoint as a masked-LM model: with its own MLM head, else with the head fitted in `head_dir`."""
    model, info = AutoModelForMaskedLM.from_pretrained(name_or_path, output_loading_info=True)
    if not info.get("missing_keys"):
        return model
    if head_dir is not None and (Path(head_dir) / WEIGHTS).is_file():
        return EncoderWithMLMHead(model.base_model, TeacherMLMHead.load(head_dir))
    raise MissingMLMHead(f"{name_or_path} ships no MLM head and none is fitted in {head_dir}: fit one first "
                       f"(python train.py does, into mlm_head.dir)")


class MLMHeadFitting(L.LightningModule):
    """Trains `head` on the frozen encoder's last states at masked positions; validates the MLM loss."""

    def __init__(self, encoder: FrozenTeacher, head: TeacherMLMHead, masker: TokenMasker, lr: float) -> None:
        super().__init__()
        self.encoder, self.head, self.masker, self.lr = encoder, head, masker, lr
        self.val_loss = MeanMetric()

    def loss(self, batch: dict[str, torch.Tensor], *keys: int) -> tuple[torch.Tensor, int]:
        """Mean cross-entropy over the masked tokens of `batch` (masks drawn for `keys`) and their count."""
        input_ids, labels = self.masker(batch["input_ids"], keys)  # (B, T) each
        masked = labels != -100
        hidden = self.encoder.hidden_states(input_ids, batch.get("attention_mask"), batch.get("token_type_ids"))[-1]
        return F.cross_entropy(self.head(hidden[masked].float()), labels[masked]), int(masked.sum())

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, _ = self.loss(batch, 2, self.global_step)
        self.log("mlm_head/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        loss, count = self.loss(batch, 3, batch_idx)  # the same masks in every pass
        self.val_loss.update(loss, weight=count)
        self.log("mlm_head/val_loss", self.val_loss)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW([p for p in self.head.parameters() if p.requires_grad], lr=self.lr)


def fit_mlm_head(name_or_path: str, head_dir: str | Path, masker: TokenMasker, train: Dataset, validation: Dataset,
                 steps: int, batch_size: int, fit_batches: int, eval_batches: int, lr: float = 1e-3,
                 accelerator: str = "auto") -> dict[str, Any]:
    """Fit a head on `name_or_path`'s frozen encoder and save it to `head_dir`; returns what was done.

    Trains `steps` AdamW steps, cycling over the first `fit_batches` batches of `train`, and reports the MLM
    loss on the first `eval_batches` batches of `validation` before and after. The run's own random streams
    (its student's initialisation, dropout) are left as they were.
    """
    with preserved_rng():
        encoder = FrozenTeacher(name_or_path)
        rows = encoder.model.get_input_embeddings().weight.shape[0]
        if masker.vocab_size != rows:
            raise ValueError(f"the tokenizer has {masker.vocab_size} tokens but {name_or_path}'s word embeddings have "
                             f"{rows} rows; use the teacher's tokenizer")
        torch.manual_seed(masker.seed)
        head = TeacherMLMHead.from_encoder(encoder.model)
        module = MLMHeadFitting(encoder, head, masker, lr)
        train_loader, val_loader = first(train, fit_batches, batch_size), first(validation, eval_batches, batch_size)
        trainer = L.Trainer(accelerator=accelerator, devices=1, max_steps=steps, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                            num_sanity_val_steps=0)
        before = trainer.validate(module, val_loader, verbose=False)[0]["mlm_head/val_loss"]
        trainer.fit(module, train_loader)
        after = trainer.validate(module, val_loader, verbose=False)[0]["mlm_head/val_loss"]
    head.save(head_dir)
    log.info("fitted an MLM head on %s: held-out MLM loss %.3f -> %.3f (%d steps); saved %s",
             name_or_path, before, after, steps, head_dir)
    return {"mlm_head": "fitted", "path": str(head_dir), "heldout_mlm_before": before, "heldout_mlm_after": after,
            "steps": steps}


def first(data: Dataset, batches: int, batch_size: int) -> DataLoader:
    """A loader over the first `batches` batches of `data`, in order."""
    return DataLoader(Subset(data, range(min(len(data), batches * batch_size))), batch_size=batch_size)
