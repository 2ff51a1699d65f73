"""Paper fidelity of the shipped ImageNet spaces: Table 1's L and prod |S|, the variant spaces
that keep the tables' other readings, and what benchmarks/paper_models.py reports (the paper's
discovered models are costed there once their per-layer choices are transcribed; a test for
them belongs here then) (docs/spaces-and-cost.md, "Paper fidelity")."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

from layernas.core.cost import cost_of
from layernas.core.space import list_spaces, load_space

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("paper_models", ROOT / "benchmarks" / "paper_models.py")
paper_models = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(paper_models)

# Exact counts (L, prod |S|) of the shipped spaces and their variants.
COUNTS = {
    "mobilenetv3-small-60m": (17, 497_462_147_692_736_937_984),
    "mobilenetv3-small-60m-516": (17, 497_462_147_692_736_937_984),
    "mobilenetv3-large-220m": (21, 479_328_424_782_235_182_691_891_200),
    "mobilenetv3-large-220m-bf1": (22, 2_875_970_548_693_411_096_151_347_200),
    "mobilenetv2-300m": (26, 5_301_998_059_315_039_354_566_475_776_000),
    "mobilenetv2-1.4x-600m": (31, 1_649_044_859_265_205_928_857_157_477_379_096_969_216),
    "mobilenetv2-1.4x-600m-six7x7": (32, 44_524_211_200_160_560_079_143_251_889_235_618_168_832),
}
# How much our MAdds of a discovered model may differ from the paper's figure (see the docs for
# where the differences come from).
MADDS_TOLERANCE = 0.10


def test_variants_ship_beside_the_spaces():
    assert set(COUNTS) <= set(list_spaces())


@pytest.mark.parametrize("name", sorted(paper_models.TABLE1))
def test_shipped_spaces_reproduce_table1(name):
    space = load_space(name)
    paper_l, paper_prod = paper_models.TABLE1[name]
    assert space.num_layers == paper_l
    assert float(f"{math.prod(space.sizes):.1e}") == paper_prod  # Table 1 gives two digits


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_layer_and_architecture_counts(name):
    space = load_space(name)
    assert (space.num_layers, math.prod(space.sizes)) == COUNTS[name]


def test_600m_variant_has_one_more_7x7_layer():
    ship, six = load_space("mobilenetv2-1.4x-600m"), load_space("mobilenetv2-1.4x-600m-six7x7")
    assert math.prod(six.sizes) == math.prod(ship.sizes) * 27
    assert list(six.sizes) == list(ship.sizes[:-2]) + [27] + list(ship.sizes[-2:])
    assert sum(1 for layer in ship.layers if len(layer) == 27 and layer.options[0]["expanded"] == 992) == 5


def test_220m_variant_searches_the_first_block_filter_the_shipped_space_fixes_at_36():
    ship, bf1 = load_space("mobilenetv3-large-220m"), load_space("mobilenetv3-large-220m-bf1")
    assert [o["filters"] for o in bf1.layers[1].options] == [36, 32, 28, 24, 20, 16]
    rng = np.random.default_rng(0)
    archs = np.stack([rng.integers(0, n, 50) for n in ship.sizes], axis=1)
    with_bf1 = np.insert(archs, 1, 0, axis=1)  # bf1 on its first option, 36
    a, b = cost_of(ship, archs), cost_of(bf1, with_bf1)
    assert np.array_equal(a["madds"], b["madds"]) and np.array_equal(a["params"], b["params"])


def test_60m_reads_516_as_512_and_the_variant_keeps_516():
    ship, lit = load_space("mobilenetv3-small-60m"), load_space("mobilenetv3-small-60m-516")
    for space, value, other in ((ship, 512, 516), (lit, 516, 512)):
        for name in ("b10", "b11"):
            layer = space.layers[[x.name for x in space.layers].index(name)]
            expanded = {o["expanded"] for o in layer.options}
            assert value in expanded and other not in expanded
    assert list(ship.sizes) == list(lit.sizes)


def test_head_placement_costs_48_out_hidden_more():
    for row in paper_models.head_rows():
        assert row["delta"] == row["formula_48_out_hidden"] > 0


def test_committed_results_are_current():
    committed = json.loads((ROOT / "benchmarks" / "results" / "paper_models.json").read_text())
    fresh = paper_models.report()
    assert [r["space"] for r in committed["table1"]] == [r["space"] for r in fresh["table1"]]
    for old, new in zip(committed["table1"], fresh["table1"]):
        assert (old["L"], old["prod_S"]) == (new["L"], new["prod_S"])
    for section in ("head", "se"):
        assert len(committed[section]) == len(fresh[section])
        for old, new in zip(committed[section], fresh[section]):
            assert old["madds"] == pytest.approx(new["madds"], rel=1e-3)
    for old, new in zip(committed["discovered"], fresh["discovered"]):
        assert old["arch"] == new["arch"]
        if new["status"] == "ok":
            assert old["madds"] == pytest.approx(new["madds"], rel=1e-3)
