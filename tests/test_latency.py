"""The latency lookup table: measuring, saving/loading, compatibility checks and predictions."""

from __future__ import annotations

import dataclasses
import itertools
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from nas_bert.arch import IDENTITY, Arch, BlockArch
from nas_bert.nas import latency, timing
from nas_bert.nas.latency import (
    LatencyTable,
    LatencyTableError,
    candidate_latency,
    check_compatible,
    default_table_path,
    embedding_latency,
    load_or_measure,
    measure_latency_table,
    predict_latency,
    projection_latency_matrix,
)
from nas_bert.nas.timing import time_calls
from nas_bert.space import SearchSpace

SHAPE = {"batch_size": 2, "seq_len": 8}
FAST = {**SHAPE, "vocab_size": 100, "max_positions": 16, "min_run_time": 0.01, "rounds": 1, "max_rounds": 1,
        "chain": 2}
# Other processes may share the test machine; the contention warning is tested on its own below.
pytestmark = pytest.mark.filterwarnings("ignore:latency table for space")


@pytest.fixture(scope="module")
def table(tiny_space: SearchSpace) -> LatencyTable:
    return measure_latency_table(tiny_space, "cpu", **FAST)


@pytest.fixture(scope="module")
def wide_space() -> SearchSpace:
    """Three widths and four ops, so projections and candidate codes are less trivial."""
    return SearchSpace(hidden_sizes=(8, 16, 24), ops=("mha", "ffn", "sepconv3", "sepconv5"), num_blocks=3,
                       slots_per_block=3, head_dim=8, name="wide")


@pytest.fixture(scope="module")
def wide_table(wide_space: SearchSpace) -> LatencyTable:
    return measure_latency_table(wide_space, "cpu", **FAST)


def _random_arch(space: SearchSpace, rng: np.random.Generator, embed: int | None = None) -> Arch:
    return Arch(blocks=tuple(space.candidate(space.sample_index(rng)) for _ in range(space.num_blocks)),
                embed=embed)


# -- the table -----------------------------------------------------------------------------------
def test_table_has_every_part_with_positive_times(table: LatencyTable, tiny_space: SearchSpace) -> None:
    assert set(table.ops) == {f"{op}_{h}" for op in tiny_space.ops for h in tiny_space.hidden_sizes}
    assert set(table.projections) == {"16->32", "32->16"}
    assert set(table.embeddings) == {"16", "32"}
    times = [*table.ops.values(), *table.projections.values(), *table.embeddings.values()]
    assert all(0 < t < 1 for t in times)
    assert table.device["type"] == "cpu" and table.device["num_threads"] == torch.get_num_threads()
    assert table.space == tiny_space.to_dict() and (table.batch_size, table.seq_len) == (2, 8)
    assert table.version == 1 and table.measured_at and table.chain == 2


def test_save_load_round_trip(table: LatencyTable, tmp_path: Path) -> None:
    path = table.save(tmp_path / "sub" / "table.json")
    assert LatencyTable.load(path) == table
    assert json.loads(path.read_text())["ops"] == table.ops


def test_default_table_path_is_keyed_by_space_device_and_shape(tiny_space: SearchSpace, tmp_path: Path) -> None:
    path = default_table_path(tmp_path, tiny_space, "cpu", 8, 128)
    assert path.parent == tmp_path
    assert path.name.startswith("latency_tiny_cpu-") and path.name.endswith(f"-{torch.get_num_threads()}t_b8_t128.json")


# -- load errors -----------------------------------------------------------------------------------
def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        LatencyTable.load(tmp_path / "nope.json")


def test_load_malformed_json(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(LatencyTableError, match="not valid JSON"):
        LatencyTable.load(path)


def test_load_wrong_version_and_missing_fields(table: LatencyTable, tmp_path: Path) -> None:
    path = tmp_path / "old.json"
    path.write_text(json.dumps({**table.to_dict(), "version": 0}))
    with pytest.raises(LatencyTableError, match="version 0"):
        LatencyTable.load(path)
    data = table.to_dict()
    del data["projections"]
    path.write_text(json.dumps(data))
    with pytest.raises(LatencyTableError, match="projections"):
        LatencyTable.load(path)


# -- compatibility ---------------------------------------------------------------------------------
def test_compatible_table_passes_and_name_is_only_a_label(table: LatencyTable, tiny_space: SearchSpace) -> None:
    check_compatible(table, tiny_space, "cpu", **SHAPE)
    check_compatible(table, replace(tiny_space, name="renamed"), torch.device("cpu"))


def test_other_space_is_refused_naming_the_field(table: LatencyTable, tiny_space: SearchSpace) -> None:
    with pytest.raises(LatencyTableError, match=r"hidden_sizes.*Measure a new table.*remeasure"):
        check_compatible(table, replace(tiny_space, hidden_sizes=(16, 32, 48)), "cpu")
    with pytest.raises(LatencyTableError, match="ffn_ratio"):
        check_compatible(table, replace(tiny_space, ffn_ratio=2), "cpu")


@pytest.mark.parametrize("field,value", [("name", "Some Other CPU"), ("num_threads", 97), ("torch", "1.0.0"),
                                         ("type", "cuda")])
def test_other_device_is_refused_naming_the_field(table: LatencyTable, tiny_space: SearchSpace,
                                                  field: str, value: object) -> None:
    other = replace(table, device={**table.device, field: value})
    with pytest.raises(LatencyTableError, match=f"device {field}"):
        check_compatible(other, tiny_space, "cpu")


def test_torch_patch_version_is_compatible(table: LatencyTable, tiny_space: SearchSpace) -> None:
    major, minor = torch.__version__.split(".")[:2]
    check_compatible(replace(table, device={**table.device, "torch": f"{major}.{minor}.99"}), tiny_space, "cpu")


def test_other_input_shape_is_refused(table: LatencyTable, tiny_space: SearchSpace) -> None:
    with pytest.raises(LatencyTableError, match="seq_len: table 8 vs 16"):
        check_compatible(table, tiny_space, "cpu", batch_size=2, seq_len=16)
    with pytest.raises(LatencyTableError, match="batch_size"):
        check_compatible(table, tiny_space, "cpu", batch_size=4)


# -- load_or_measure -------------------------------------------------------------------------------
def test_load_or_measure_measures_once_then_reuses(tiny_space: SearchSpace, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "t.json"
    first = load_or_measure(path, tiny_space, "cpu", **FAST)
    assert path.is_file() and LatencyTable.load(path) == first
    # whatever else loads this machine now, pin the table as quietly measured (remeasure would replace it)
    first = dataclasses.replace(first, contention=0.0)
    first.save(path)

    def no_measuring(*args, **kwargs):
        raise AssertionError("a compatible table must be reused")

    monkeypatch.setattr(latency, "measure_latency_table", no_measuring)
    assert load_or_measure(path, tiny_space, "cpu", **FAST) == first
    assert load_or_measure(path, tiny_space, "cpu", **FAST, remeasure=True) == first


def test_load_or_measure_refuses_incompatible_unless_remeasure(table: LatencyTable, tiny_space: SearchSpace,
                                                               tmp_path: Path) -> None:
    path = table.save(tmp_path / "t.json")
    other = {**FAST, "seq_len": 4}
    with pytest.raises(LatencyTableError, match=r"t\.json.*seq_len: table 8 vs 4.*remeasure"):
        load_or_measure(path, tiny_space, "cpu", **other)
    assert LatencyTable.load(path) == table  # untouched
    fresh = load_or_measure(path, tiny_space, "cpu", **other, remeasure=True)
    assert fresh.seq_len == 4 and LatencyTable.load(path) == fresh


def test_load_or_measure_malformed_file(tiny_space: SearchSpace, tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text("[1, 2")
    with pytest.raises(LatencyTableError, match="not valid JSON"):
        load_or_measure(path, tiny_space, "cpu", **FAST)
    assert load_or_measure(path, tiny_space, "cpu", **FAST, remeasure=True).seq_len == FAST["seq_len"]


# -- predictions -----------------------------------------------------------------------------------
def test_candidate_latency_equals_per_candidate_sums(wide_table: LatencyTable, wide_space: SearchSpace) -> None:
    vectorised = candidate_latency(wide_space, wide_table)
    assert vectorised.shape == (wide_space.num_candidates,)
    loop = [sum(wide_table.ops[layer] for layer in wide_space.candidate(i).layers if layer != IDENTITY)
            for i in range(wide_space.num_candidates)]
    np.testing.assert_allclose(vectorised, loop, rtol=1e-12)


def test_projection_and_embedding_arrays(wide_table: LatencyTable, wide_space: SearchSpace) -> None:
    proj = projection_latency_matrix(wide_space, wide_table)
    assert proj.shape == (3, 3) and np.all(np.diag(proj) == 0)
    assert proj[0, 2] == wide_table.projections["8->24"] and proj[2, 1] == wide_table.projections["24->16"]
    np.testing.assert_array_equal(embedding_latency(wide_space, wide_table),
                                  [wide_table.embeddings[k] for k in ("8", "16", "24")])


@pytest.mark.parametrize("seed", range(5))
def test_predict_latency_equals_vectorised_composition(wide_table: LatencyTable, wide_space: SearchSpace,
                                                       seed: int) -> None:
    rng = np.random.default_rng(seed)
    embed = None if seed % 2 else int(rng.choice(wide_space.hidden_sizes))
    arch = _random_arch(wide_space, rng, embed)
    cand, proj = candidate_latency(wide_space, wide_table), projection_latency_matrix(wide_space, wide_table)
    widths = [wide_space.hidden_sizes.index(h) for h in (arch.embed_size, *(b.hidden for b in arch.blocks))]
    expected = embedding_latency(wide_space, wide_table)[widths[0]]
    expected += sum(proj[a, b] for a, b in itertools.pairwise(widths))
    expected += sum(cand[wide_space.index_of(b)] for b in arch.blocks)
    assert predict_latency(arch, wide_table, wide_space) == pytest.approx(expected, rel=1e-12)


def test_identity_slots_cost_nothing_and_projections_count(table: LatencyTable, tiny_space: SearchSpace) -> None:
    same = Arch(blocks=(BlockArch(16, ("ffn", IDENTITY)),) * 3)
    assert predict_latency(same, table, tiny_space) == pytest.approx(table.embeddings["16"] + 3 * table.ops["ffn_16"])
    switch = Arch(blocks=(BlockArch(16, ("ffn", IDENTITY)), BlockArch(32, ("mha", "ffn")),
                          BlockArch(32, ("mha", IDENTITY))), embed=32)
    expected = (table.embeddings["32"] + table.projections["32->16"] + table.ops["ffn_16"]
                + table.projections["16->32"] + 2 * table.ops["mha_32"] + table.ops["ffn_32"])
    assert predict_latency(switch, table, tiny_space) == pytest.approx(expected)


def test_prediction_with_a_table_lacking_an_entry(table: LatencyTable, tiny_space: SearchSpace) -> None:
    broken = replace(table, ops={k: v for k, v in table.ops.items() if k != "mha_32"})
    with pytest.raises(LatencyTableError, match="mha_32"):
        candidate_latency(tiny_space, broken)


# -- contention ------------------------------------------------------------------------------------
def test_time_calls_retries_timings_taken_under_contention(monkeypatch: pytest.MonkeyPatch) -> None:
    tries: dict[int, int] = {}

    def fake(fn, min_run_time):  # fn 0: loud on its first two tries; fn 1: always loud
        n = tries[fn()] = tries.get(fn(), 0) + 1
        if fn() == 0:
            return (1.0, 0.5) if n <= 2 else (0.25 + n, 0.0)
        return 2.0 + n, 0.4 + 0.1 * (n % 2)

    monkeypatch.setattr(timing, "timed_with_contention", fake)
    seconds, contention = time_calls([lambda: 0, lambda: 1], rounds=2, max_rounds=4)
    assert tries == {0: 4, 1: 4}
    assert seconds == [3.25, 3.0] and contention == [0.0, 0.5]  # least quiet median; else least median


def test_measure_warns_when_never_quiet(tiny_space: SearchSpace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(timing, "timed_with_contention", lambda fn, t: (1e-3, 0.5))
    with pytest.warns(UserWarning, match=r"10 of 10 entries.*mha_16 \(50%\).*idle machine"):
        table = measure_latency_table(tiny_space, "cpu", **FAST)
    assert table.contention == 0.5 and set(table.ops.values()) == {1e-3 / FAST["chain"]}  # per copy


@pytest.mark.parametrize("contention,message", [(0.5, "50% of the CPUs"), (None, "without a record")])
def test_load_or_measure_replaces_a_contended_table_only_on_remeasure(table: LatencyTable, tiny_space: SearchSpace,
                                                                       tmp_path: Path, contention: float | None,
                                                                       message: str) -> None:
    data = replace(table, contention=contention).to_dict()
    if contention is None:  # tables written before contention was recorded lack the field
        del data["contention"]
    path = tmp_path / "t.json"
    path.write_text(json.dumps(data))
    with pytest.warns(UserWarning, match=message):
        assert load_or_measure(path, tiny_space, "cpu", **FAST).contention == contention
    fresh = load_or_measure(path, tiny_space, "cpu", **FAST, remeasure=True)
    assert fresh.measured_at != table.measured_at and LatencyTable.load(path) == fresh
