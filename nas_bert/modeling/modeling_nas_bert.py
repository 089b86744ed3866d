"""Hugging Face model classes for NAS-BERT students: a base model and MLM / classification / QA heads.

The body is `nas_bert.encoder.StudentEncoder` (reused, not re-implemented), held at `<prefix>.encoder`,
so a distilled student's `state_dict` loads with `model.nas_bert.encoder.load_state_dict(...)` and
`NasBertModel`'s parameter count equals `nas_bert.encoder.encoder_params` exactly.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import (
    BaseModelOutput,
    MaskedLMOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
)

from nas_bert.encoder import StudentEncoder
from nas_bert.modeling.configuration_nas_bert import NasBertConfig
from nas_bert.modeling.lsq import LsqLinear, check_lsq_bits, lsq_quantize


class NasBertPreTrainedModel(PreTrainedModel):
    """Shared config class, weight prefix and BERT initialisation for all NAS-BERT models."""

    config_class = NasBertConfig
    config: NasBertConfig
    base_model_prefix = "nas_bert"
    supports_gradient_checkpointing = False

    def save_pretrained(self, save_directory, *args, is_main_process: bool = True, **kwargs) -> None:
        """`PreTrainedModel.save_pretrained`, plus this code (generated from the package), so that the folder
        loads with `trust_remote_code=True` where nas-bert is not installed (nas_bert.modeling.remote_code)."""
        super().save_pretrained(save_directory, *args, is_main_process=is_main_process, **kwargs)
        try:
            from nas_bert.modeling.remote_code import write_remote_code
        except ImportError:  # loaded from a model folder's own code: transformers copies those files itself
            return
        if is_main_process:
            write_remote_code(save_directory)

    def post_init(self) -> None:
        """A config with `lsq` builds the quantization-aware model its weights were trained as."""
        if self.config.lsq:
            self.quantize_lsq(**self.config.lsq)
        super().post_init()

    def quantize_lsq(self, weight_bits: int, act_bits: int = 8) -> None:
        """Make this model quantization-aware (KDLSQ), in place: every Linear of the encoder and the task head
        becomes an `LsqLinear` (a tied MLM decoder stays full precision), recorded in `config.lsq` so that the
        saved model loads as it was trained. Step sizes start from the first forward pass."""
        bits = check_lsq_bits(weight_bits, act_bits)
        existing = next((m for m in self.modules() if isinstance(m, LsqLinear)), None)
        if existing is not None and existing.weight_quantizer.bits != bits["weight_bits"]:
            raise ValueError(f"this model is already quantization-aware at {existing.weight_quantizer.bits}-bit "
                             f"weights; start from a full-precision model to train it at {weight_bits} bits")
        self.config.lsq = bits
        decoder = self.get_output_embeddings() if hasattr(self, "lm_head") else None
        lsq_quantize(self, **bits, keep=(decoder,) if decoder is not None else ())

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """BERT init: normal(0, initializer_range) weights, zero biases, unit LayerNorm, zero padding row."""
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv1d)):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None and not getattr(module.weight, "_is_hf_initialized", False):
                init.zeros_(module.weight[module.padding_idx])
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)


class NasBertModel(NasBertPreTrainedModel):
    """The bare encoder: embeddings + the searched blocks; `last_hidden_state` is (B, T, hidden_size)."""

    def __init__(self, config: NasBertConfig) -> None:
        super().__init__(config)
        self.encoder = StudentEncoder(
            config.to_arch(),
            vocab_size=config.vocab_size,
            max_positions=config.max_position_embeddings,
            type_vocab_size=config.type_vocab_size,
            head_dim=config.head_dim,
            ffn_ratio=config.ffn_ratio,
            dropout=config.hidden_dropout_prob,
            pad_token_id=config.pad_token_id if config.pad_token_id is not None else 0,
        )
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.encoder.embeddings.word

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.encoder.embeddings.word = value

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> BaseModelOutput | tuple[torch.Tensor, ...]:
        """(B, T) ids -> last_hidden_state (B, T, H_last); hidden_states = (embeddings, block 1 .. block N)."""
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if output_hidden_states:
            last, states = self.encoder(input_ids, attention_mask, token_type_ids, output_hidden_states=True)
            hidden_states = tuple(states)
        else:
            last, hidden_states = self.encoder(input_ids, attention_mask, token_type_ids), None
        if not return_dict:
            return tuple(v for v in (last, hidden_states) if v is not None)
        return BaseModelOutput(last_hidden_state=last, hidden_states=hidden_states)


class NasBertLMHead(nn.Module):
    """dense (H_last -> E) + GELU + LayerNorm + decoder (E -> vocab, weight tied to the word embeddings)."""

    def __init__(self, config: NasBertConfig) -> None:
        super().__init__()
        e = config.embedding_size
        self.dense = nn.Linear(config.hidden_size, e)
        self.act = nn.GELU()
        self.norm = nn.LayerNorm(e, eps=1e-12)
        self.decoder = nn.Linear(e, config.vocab_size, bias=True)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.norm(self.act(self.dense(hidden))))  # (B, T, H) -> (B, T, vocab)


class NasBertForMaskedLM(NasBertPreTrainedModel):
    """Masked-LM model; the decoder weight is the word-embedding matrix (tied)."""

    _tied_weights_keys = {"lm_head.decoder.weight": "nas_bert.encoder.embeddings.word.weight"}

    def __init__(self, config: NasBertConfig) -> None:
        super().__init__(config)
        self.nas_bert = NasBertModel(config)
        self.lm_head = NasBertLMHead(config)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head.decoder

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.lm_head.decoder = new_embeddings

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> MaskedLMOutput | tuple[torch.Tensor, ...]:
        """`labels` (B, T), -100 = ignored -> `loss`; `logits` (B, T, vocab)."""
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        out = self.nas_bert(input_ids, attention_mask, token_type_ids, output_hidden_states, return_dict=True)
        logits = self.lm_head(out.last_hidden_state)  # (B, T, vocab)
        loss = None
        if labels is not None:
            loss = CrossEntropyLoss()(logits.view(-1, self.config.vocab_size), labels.view(-1))
        if not return_dict:
            return tuple(v for v in (loss, logits, out.hidden_states) if v is not None)
        return MaskedLMOutput(loss=loss, logits=logits, hidden_states=out.hidden_states)


def masked_mean(hidden_states: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The mean of (B, T, H) states over the tokens where (B, T) `weights` is 1: (B, H)."""
    w = weights.to(hidden_states.dtype)[..., None]  # (B, T, 1)
    return (hidden_states * w).sum(1) / w.sum(1).clamp_min(1.0)


class NasBertPooler(nn.Module):
    """dense + tanh on a pooled vector: the first token's state (`cls`, BERT), the mean of the real tokens'
    (`mean`, as Sentence-BERT models pool), or for sentence pairs (`pair`) the means u, v of the two segments
    (token types 0 and 1) as [u, v, |u - v|, u * v], Sentence-BERT's classifier features, so a pair task can
    compare the two sentences' embeddings directly (single sentences: v = u)."""

    def __init__(self, hidden: int, pooling: str = "cls") -> None:
        super().__init__()
        self.dense = nn.Linear(4 * hidden if pooling == "pair" else hidden, hidden)
        self.activation = nn.Tanh()
        self.pooling = pooling

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        real = torch.ones(hidden_states.shape[:2], device=hidden_states.device) if attention_mask is None \
            else attention_mask.float()  # (B, T)
        if self.pooling == "cls":
            pooled = hidden_states[:, 0]  # (B, H)
        elif self.pooling == "mean":
            pooled = masked_mean(hidden_states, real)
        else:
            second = real * (token_type_ids.float() if token_type_ids is not None else torch.zeros_like(real))
            single = second.sum(1, keepdim=True) == 0  # (B, 1): no second segment
            u = masked_mean(hidden_states, real - second)
            v = torch.where(single, u, masked_mean(hidden_states, second))
            pooled = torch.cat([u, v, (u - v).abs(), u * v], dim=-1)  # (B, 4H)
        return self.activation(self.dense(pooled))


class NasBertForSequenceClassification(NasBertPreTrainedModel):
    """Pooler (dense + tanh on the first token) + dropout + classifier; BERT's `problem_type` losses."""

    def __init__(self, config: NasBertConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.nas_bert = NasBertModel(config)
        h = config.hidden_size
        self.pooler = NasBertPooler(h, config.classifier_pooling)
        drop = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(drop)
        self.classifier = nn.Linear(h, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> SequenceClassifierOutput | tuple[torch.Tensor, ...]:
        """`logits` (B, num_labels); `labels` (B,) ints, (B,) floats for regression or (B, L) multi-label."""
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        out = self.nas_bert(input_ids, attention_mask, token_type_ids, output_hidden_states, return_dict=True)
        pooled = self.pooler(out.last_hidden_state, attention_mask, token_type_ids)  # (B, H)
        logits = self.classifier(self.dropout(pooled))  # (B, num_labels)
        loss = None
        if labels is not None:
            if self.config.problem_type is None:
                if self.num_labels == 1:
                    self.config.problem_type = "regression"
                elif labels.dtype in (torch.long, torch.int):
                    self.config.problem_type = "single_label_classification"
                else:
                    self.config.problem_type = "multi_label_classification"
            if self.config.problem_type == "regression":
                if self.num_labels == 1:
                    loss = MSELoss()(logits.squeeze(-1), labels.squeeze(-1).to(logits.dtype))
                else:
                    loss = MSELoss()(logits, labels.to(logits.dtype))
            elif self.config.problem_type == "single_label_classification":
                loss = CrossEntropyLoss()(logits.view(-1, self.num_labels), labels.view(-1))
            else:
                loss = BCEWithLogitsLoss()(logits, labels.to(logits.dtype))
        if not return_dict:
            return tuple(v for v in (loss, logits, out.hidden_states) if v is not None)
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=out.hidden_states)


class NasBertForQuestionAnswering(NasBertPreTrainedModel):
    """Extractive QA: a Linear(hidden_size, 2) gives per-token start and end logits."""

    def __init__(self, config: NasBertConfig) -> None:
        super().__init__(config)
        self.nas_bert = NasBertModel(config)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        start_positions: torch.Tensor | None = None,
        end_positions: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> QuestionAnsweringModelOutput | tuple[torch.Tensor, ...]:
        """`start_logits`, `end_logits` (B, T); with both positions (B,), `loss` = mean of the two CEs."""
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        out = self.nas_bert(input_ids, attention_mask, token_type_ids, output_hidden_states, return_dict=True)
        logits = self.qa_outputs(out.last_hidden_state)  # (B, T, 2)
        start_logits, end_logits = (z.squeeze(-1).contiguous() for z in logits.split(1, dim=-1))  # (B, T) each
        loss = None
        if start_positions is not None and end_positions is not None:
            ignored_index = start_logits.size(1)  # positions outside the sequence are ignored
            start_positions = start_positions.view(-1).clamp(0, ignored_index)
            end_positions = end_positions.view(-1).clamp(0, ignored_index)
            loss_fct = CrossEntropyLoss(ignore_index=ignored_index)
            loss = (loss_fct(start_logits, start_positions) + loss_fct(end_logits, end_positions)) / 2
        if not return_dict:
            return tuple(v for v in (loss, start_logits, end_logits, out.hidden_states) if v is not None)
        return QuestionAnsweringModelOutput(
            loss=loss, start_logits=start_logits, end_logits=end_logits, hidden_states=out.hidden_states
        )


__all__ = [
    "NasBertForMaskedLM",
    "NasBertForQuestionAnswering",
    "NasBertForSequenceClassification",
    "NasBertModel",
    "NasBertPreTrainedModel",
]
