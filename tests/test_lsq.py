"""LSQ fake quantization (KDLSQ's quantizer): values on the learned grid, gradients to weights and step sizes,
an int8 student close to fp32, training that lowers the loss, and only 4 or 8 bits."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nas_bert.modeling import NasBertConfig, NasBertForSequenceClassification
from nas_bert.modeling.lsq import LsqLinear, LsqQuantizer, lsq_quantize

ARCH = {"blocks": [{"hidden": 32, "ops": ["mha", "sepconv3"]}, {"hidden": 64, "ops": ["ffn", "mha"]}]}


def test_values_lie_on_the_learned_grid_and_gradients_reach_the_step():
    torch.manual_seed(0)
    quantizer = LsqQuantizer(4)
    x = torch.randn(64, requires_grad=True)
    y = quantizer(x)
    levels = y.detach() / quantizer.step.detach()
    assert torch.allclose(levels, levels.round(), atol=1e-5) and levels.min() >= -8 and levels.max() <= 7
    y.square().sum().backward()
    assert x.grad is not None and quantizer.step.grad is not None and quantizer.step.grad != 0
    step = quantizer.step.item()
    quantizer(torch.randn(64) * 100)  # initialised once: later inputs do not reset the step
    assert quantizer.step.item() == step
    restored = LsqQuantizer(4)
    restored.load_state_dict(quantizer.state_dict())
    restored(torch.randn(64) * 100)
    assert restored.step.item() == step  # a loaded step size is kept


@pytest.mark.parametrize("bits", [2, 16])
def test_only_4_or_8_bits(bits):
    with pytest.raises(ValueError, match=r"bit-width .* \(4, 8\)"):
        LsqQuantizer(bits)


def test_an_lsq_student_stays_close_to_fp32_and_trains():
    torch.manual_seed(0)
    config = NasBertConfig(arch=ARCH, vocab_size=100, max_position_embeddings=32, head_dim=16, num_labels=2,
                           hidden_dropout_prob=0.0)
    fp32 = NasBertForSequenceClassification(config).eval()
    inputs = {"input_ids": torch.randint(1, 100, (8, 12)), "attention_mask": torch.ones(8, 12, dtype=torch.long)}
    with torch.no_grad():
        reference = fp32.nas_bert(**inputs).last_hidden_state
    model = lsq_quantize(NasBertForSequenceClassification(config).eval(), weight_bits=8)
    model.load_state_dict(fp32.state_dict(), strict=False)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert linears and all(isinstance(m, LsqLinear) for m in linears)
    with torch.no_grad():
        got = model.nas_bert(**inputs).last_hidden_state  # also initialises every step size
    assert nn.functional.cosine_similarity(got.flatten(0, 1), reference.flatten(0, 1)).min() > 0.98
    steps = [m.weight_quantizer.step.item() for m in linears]
    labels = torch.randint(0, 2, (8,))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(30):
        loss = model(**inputs, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert sum(m.weight_quantizer.step.item() != s for m, s in zip(linears, steps)) == len(linears)  # learned
