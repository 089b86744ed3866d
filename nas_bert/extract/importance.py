"""ETD-Impt: rankings of the teacher's head units and FFN neurons by importance, and of its hidden dimensions by
variance, on a few batches of the pre-training corpus.

* **Objective.** The teacher's own representation objective, as a denoising task: the teacher on masked inputs
  (`TokenMasker`) against its own last states and mean-pooled sentence embedding on the clean inputs (masked
  MSE + cosine). It needs no MLM head, so every teacher has it.
* **Heads and neurons** (DynaBERT; Michel et al. 2019): the gradient of the loss with respect to a mask on a unit's
  output is the sum of weight x gradient over the unit's columns of the output projection (attention output
  for head units, FFN down projection for neurons). Its absolute value is summed over the batches.
* **Hidden dimensions:** the variance of the teacher's states over real tokens, averaged over every layer's
  output (embeddings included): the residual stream's dimensions that carry the most signal. (A gradient score
  has no single mask to differentiate: every layer reads and writes these dimensions.)
"""

from __future__ import annotations

import torch

from nas_bert.distill.losses import masked_cosine, masked_mse, mean_pool
from nas_bert.distill.masking import TokenMasker
from nas_bert.extract.plan import ExtractionError, Selection, TeacherShape, check_unit_size
from nas_bert.extract.weights import bert_of


def importance_selection(teacher: torch.nn.Module, batches: list[dict[str, torch.Tensor]], masker: TokenMasker,
                         unit: int) -> Selection:
    """Rankings from `batches` (dicts of input_ids, attention_mask (B, T)); the teacher's weights are unchanged."""
    if not batches:
        raise ExtractionError("importance scoring needs at least one batch (student.extract.batches)")
    bert = bert_of(teacher)
    shape = TeacherShape.of(bert.config)
    check_unit_size(shape, unit)
    layers = list(bert.encoder.layer)
    outputs = [w for layer in layers for w in (layer.attention.output.dense.weight, layer.output.dense.weight)]
    units = torch.zeros(shape.layers, shape.hidden // unit)
    neurons = torch.zeros(shape.layers, shape.intermediate)
    sums, squares, count = torch.zeros(shape.hidden), torch.zeros(shape.hidden), 0
    was_training, needed = bert.training, [w.requires_grad for w in outputs]
    bert.eval()
    try:
        for w in outputs:
            w.requires_grad_(True)
        for i, batch in enumerate(batches):
            ids, mask = batch["input_ids"], batch["attention_mask"]
            with torch.no_grad():
                clean = bert(input_ids=ids, attention_mask=mask, output_hidden_states=True)
            real = mask.bool()  # (B, T)
            states = torch.stack(clean.hidden_states)[:, real].float()  # (L + 1, N, D)
            sums += states.sum(dim=(0, 1))
            squares += states.pow(2).sum(dim=(0, 1))
            count += states.shape[0] * states.shape[1]
            masked, _ = masker(ids, keys=(i,))
            out = bert(input_ids=masked, attention_mask=mask).last_hidden_state  # (B, T, D)
            target = clean.last_hidden_state
            loss = masked_mse(out, target, mask) + masked_cosine(mean_pool(out, mask), mean_pool(target, mask))
            grads = torch.autograd.grad(loss, outputs)
            for n in range(shape.layers):
                attention, down = outputs[2 * n] * grads[2 * n], outputs[2 * n + 1] * grads[2 * n + 1]  # (D, D), (D, I)
                units[n] += attention.sum(0).view(-1, unit).sum(-1).abs()
                neurons[n] += down.sum(0).abs()
    finally:
        for w, flag in zip(outputs, needed):
            w.requires_grad_(flag)
        bert.train(was_training)
    variance = squares / count - (sums / count).pow(2)
    return Selection("importance", unit, variance.argsort(descending=True), units.argsort(dim=1, descending=True),
                     neurons.argsort(dim=1, descending=True))


def teacher_selection(teacher: torch.nn.Module, dataset, masker: TokenMasker, unit: int, how: str, batches: int,
                      batch_size: int, seed: int, setting: str = "student.extract") -> Selection:
    """What a student or supernet takes of the teacher: `how` = `random` (seeded) or `importance` on the first
    `batches` x `batch_size` sequences of `dataset`, which must hold them (it never falls back to random);
    errors name the config node `setting`."""
    from nas_bert.extract.plan import random_selection
    from nas_bert.utils.batch import first_batches

    if how == "random":
        return random_selection(TeacherShape.of(bert_of(teacher).config), unit, seed)
    if how != "importance":
        raise ExtractionError(f"{setting}.selection must be importance or random, got {how!r}")
    needed = batches * batch_size
    if len(dataset) < needed:
        raise ExtractionError(f"{setting}.selection=importance scores {batches} batches of {batch_size} sequences "
                              f"({needed}), the training corpus has {len(dataset)}: lower {setting}.batches or "
                              f"batch_size")
    return importance_selection(teacher, first_batches(dataset, batch_size, batches), masker, unit)
