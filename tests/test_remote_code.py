"""Exported models carry their modeling code: they load with `trust_remote_code=True` where nas-bert cannot be
imported (a process of its own: what that process can import is the point), and compute what they computed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForMaskedLM

from nas_bert.modeling import NasBertConfig, NasBertForMaskedLM, NasBertForSequenceClassification
from nas_bert.modeling.remote_code import AUTO_MAP, CODE_MODULES, flat_source

ARCH = {"blocks": [{"hidden": 32, "ops": ["mha", "ffn", "sepconv3"]}, {"hidden": 48, "ops": ["ffn", "mha"]}]}

LOAD_WITHOUT_NAS_BERT = """
import sys
sys.modules["nas_bert"] = None  # `import nas_bert` fails from here on, whatever is installed
import torch
from transformers import AutoModel, AutoModelForSequenceClassification
model_dir, inputs_file, out_file = sys.argv[1:]
inputs = torch.load(inputs_file)
classifier = AutoModelForSequenceClassification.from_pretrained(model_dir, trust_remote_code=True).eval()
base = AutoModel.from_pretrained(model_dir, trust_remote_code=True).eval()
assert not any(name.startswith("nas_bert") for name in sys.modules if sys.modules[name] is not None)
try:  # a copy of the folder without one of its code files
    AutoModel.from_pretrained(model_dir + "_broken", trust_remote_code=True)
    broken = "loaded"
except Exception as err:
    broken = str(err)
with torch.no_grad():
    torch.save({"logits": classifier(**inputs).logits, "hidden": base(**inputs).last_hidden_state,
                "class": type(classifier).__module__, "broken": broken}, out_file)
"""


def load_elsewhere(model_dir: Path, tmp_path: Path, inputs: dict) -> subprocess.CompletedProcess:
    torch.save(inputs, tmp_path / "inputs.pt")
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-c", LOAD_WITHOUT_NAS_BERT, str(model_dir), str(tmp_path / "inputs.pt"),
                           str(tmp_path / "out.pt")], capture_output=True, text=True, env=env, cwd=tmp_path)


def test_an_exported_model_loads_and_computes_the_same_without_nas_bert(tmp_path):
    torch.manual_seed(0)
    config = NasBertConfig(arch=ARCH, vocab_size=100, max_position_embeddings=32, head_dim=16, num_labels=3,
                           classifier_pooling="pair")
    model = NasBertForSequenceClassification(config).eval()
    model.save_pretrained(tmp_path / "model")
    saved = json.loads((tmp_path / "model" / "config.json").read_text())
    assert saved["auto_map"] == AUTO_MAP and {p.name for p in (tmp_path / "model").glob("*.py")} == set(
        CODE_MODULES.values())
    inputs = {"input_ids": torch.randint(1, 100, (2, 10)), "attention_mask": torch.ones(2, 10, dtype=torch.long),
              "token_type_ids": torch.tensor([[0] * 5 + [1] * 5] * 2)}
    inputs["attention_mask"][1, 8:] = 0

    shutil.copytree(tmp_path / "model", tmp_path / "model_broken")
    (tmp_path / "model_broken" / "encoder.py").unlink()

    result = load_elsewhere(tmp_path / "model", tmp_path, inputs)
    assert result.returncode == 0, result.stderr[-3000:]
    out = torch.load(tmp_path / "out.pt")
    assert out["class"].startswith("transformers_modules")  # the folder's own code ran
    with torch.no_grad():
        torch.testing.assert_close(out["logits"], model(**inputs).logits)
        torch.testing.assert_close(out["hidden"], model.nas_bert(**inputs).last_hidden_state)
    assert "encoder.py" in out["broken"]  # the missing code file is named


def test_with_nas_bert_installed_the_registered_classes_load_it(tmp_path):
    model = NasBertForMaskedLM(NasBertConfig(arch=ARCH, vocab_size=100, max_position_embeddings=32, head_dim=16))
    model.save_pretrained(tmp_path / "mlm")
    loaded = AutoModelForMaskedLM.from_pretrained(tmp_path / "mlm")  # no trust_remote_code
    assert type(loaded) is NasBertForMaskedLM


def test_the_code_files_are_generated_from_the_package():
    source = flat_source("nas_bert.encoder")
    assert "from .arch import" in source and "from .space import" in source and "\nfrom nas_bert" not in source
    modeling = flat_source("nas_bert.modeling.modeling_nas_bert")
    assert "from .configuration_nas_bert import NasBertConfig" in modeling
    with pytest.raises(ValueError, match=r"imports nas_bert\.utils\.resume at top level.*CODE_MODULES"):
        flat_source("nas_bert.teacher")
