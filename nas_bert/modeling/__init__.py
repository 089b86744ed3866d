"""Hugging Face integration of NAS-BERT students: config, model classes and Auto-class registration.

Importing this package registers `model_type="nas_bert"` with `AutoConfig`, `AutoModel`,
`AutoModelForMaskedLM`, `AutoModelForSequenceClassification` and `AutoModelForQuestionAnswering`
(idempotent: importing or calling `register_auto_classes()` again is harmless).
"""

from __future__ import annotations

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
)

from nas_bert.modeling.configuration_nas_bert import NasBertConfig, default_arch
from nas_bert.modeling.modeling_nas_bert import (
    NasBertForMaskedLM,
    NasBertForQuestionAnswering,
    NasBertForSequenceClassification,
    NasBertModel,
    NasBertPreTrainedModel,
)


def register_auto_classes() -> None:
    """Register the NAS-BERT config and models with the transformers Auto classes (idempotent)."""
    AutoConfig.register(NasBertConfig.model_type, NasBertConfig, exist_ok=True)
    for auto_cls, model_cls in (
        (AutoModel, NasBertModel),
        (AutoModelForMaskedLM, NasBertForMaskedLM),
        (AutoModelForSequenceClassification, NasBertForSequenceClassification),
        (AutoModelForQuestionAnswering, NasBertForQuestionAnswering),
    ):
        auto_cls.register(NasBertConfig, model_cls, exist_ok=True)


register_auto_classes()

__all__ = [
    "NasBertConfig",
    "NasBertForMaskedLM",
    "NasBertForQuestionAnswering",
    "NasBertForSequenceClassification",
    "NasBertModel",
    "NasBertPreTrainedModel",
    "default_arch",
    "register_auto_classes",
]
