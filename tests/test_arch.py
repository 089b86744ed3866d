"""The architecture schema: round trips and malformed descriptions."""

from __future__ import annotations

import pytest

from nas_bert.arch import Arch, ArchitectureError, BlockArch


def example() -> Arch:
    return Arch(
        blocks=(BlockArch(128, ("mha", "ffn", "sepconv5", "identity")), BlockArch(256, ("ffn", "mha", "ffn", "ffn"))),
        embed=128,
    )


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_save_load_round_trip(tmp_path, suffix):
    arch = example()
    loaded = Arch.load(arch.save(tmp_path / f"arch{suffix}"))
    assert loaded == arch
    assert loaded.layers == ["mha_128", "ffn_128", "sepconv5_128", "identity",
                             "ffn_256", "mha_256", "ffn_256", "ffn_256"]


def test_ops_with_width_suffix_are_accepted():
    block = BlockArch.from_dict({"ops": ["mha_256", "ffn_256", "identity"]})
    assert block == BlockArch(256, ("mha", "ffn", "identity"))
    assert block.depth == 2


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"hidden": 128, "ops": ["mha", "attention"]}, "unknown op 'attention'"),
        ({"hidden": 128, "ops": ["sepconv4"]}, "unknown op 'sepconv4'"),
        ({"hidden": 128, "ops": ["mha", "identity", "ffn"]}, "identity may only fill the end"),
        ({"hidden": 128, "ops": ["identity", "identity"]}, "all identity"),
        ({"hidden": 128, "ops": []}, "at least one slot"),
        ({"ops": ["mha_128", "ffn_256"]}, "mixes hidden sizes [128, 256]"),
        ({"hidden": 128, "ops": ["ffn_256"]}, "mixes hidden sizes"),
        ({"ops": ["mha", "ffn"]}, "no hidden size"),
        ({"hidden": -4, "ops": ["mha"]}, "positive integer"),
    ],
)
def test_malformed_blocks_are_refused_with_the_reason(data, message):
    with pytest.raises(ArchitectureError, match="block 0") as err:
        Arch.from_dict({"blocks": [data]})
    assert message in str(err.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Arch.load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("blocks: [unclosed")
    with pytest.raises(ArchitectureError, match="not valid YAML"):
        Arch.load(bad)
    bad.write_text("just a string")
    with pytest.raises(ArchitectureError, match="'blocks' list"):
        Arch.load(bad)
