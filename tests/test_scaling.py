import math

import pytest
import torch
import torch.nn as nn

from effnet_kernels import efficientnet

from conftest import TORCHVISION_PARAMS
from effnet_kernels.scaling import (ALPHA, BETA, GAMMA, Scaling, arch_spec, compound, depthwise_shapes, model_cost,
                                    round_filters, round_repeats)

WIDTH = [1.0, 1.0, 1.1, 1.2, 1.4, 1.6, 1.8, 2.0]
DEPTH = [1.0, 1.1, 1.2, 1.4, 1.8, 2.2, 2.6, 3.1]
RES = [224, 240, 260, 300, 380, 456, 528, 600]
DROP = [0.2, 0.2, 0.3, 0.3, 0.4, 0.4, 0.5, 0.5]


@pytest.mark.parametrize("phi", range(8))
def test_official_table_exact(phi):
    s = compound(phi)
    assert isinstance(s, Scaling)
    assert (s.width, s.depth, s.resolution, s.dropout) == (WIDTH[phi], DEPTH[phi], RES[phi], DROP[phi])
    assert compound(float(phi)) == s


def test_monotone_and_continuous_between_and_beyond():
    phis = [i / 100 for i in range(0, 1001)]
    vals = [compound(p) for p in phis]
    for a, b, pa, pb in zip(vals, vals[1:], phis, phis[1:]):
        for field in ("width", "depth", "resolution", "dropout"):
            assert getattr(b, field) >= getattr(a, field), (field, pa, pb)
        # Continuity: a step of 0.01 in phi moves each quantity by a small amount only.
        assert abs(b.width - a.width) < 0.01 * a.width and abs(b.depth - a.depth) < 0.01 * a.depth
        assert abs(b.resolution - a.resolution) <= 0.01 * a.resolution + 1
        assert abs(b.dropout - a.dropout) < 0.01
    # Just around the table entries the interpolation meets the table.
    for i in range(1, 8):
        lo, hi = compound(i - 1e-9), compound(i + 1e-9)
        assert lo.width == pytest.approx(WIDTH[i], rel=1e-7) and hi.depth == pytest.approx(DEPTH[i], rel=1e-7)


def test_geometric_interpolation():
    s = compound(2.5)
    assert s.width == pytest.approx(math.sqrt(1.1 * 1.2))
    assert s.depth == pytest.approx(math.sqrt(1.2 * 1.4))
    assert s.resolution == round(math.sqrt(260 * 300))
    assert s.dropout == pytest.approx(0.3)


def test_beyond_b7_uses_alpha_beta_gamma():
    s8, s9 = compound(8), compound(9)
    assert s8.depth == pytest.approx(3.1 * ALPHA) and s9.depth == pytest.approx(3.1 * ALPHA ** 2)
    assert s8.width == pytest.approx(2.0 * BETA) and s9.width == pytest.approx(2.0 * BETA ** 2)
    assert s8.resolution == round(600 * GAMMA) and s9.resolution == round(600 * GAMMA ** 2)
    assert s8.dropout == s9.dropout == 0.5
    assert ALPHA * BETA ** 2 * GAMMA ** 2 == pytest.approx(2.0, rel=0.1)


@pytest.mark.parametrize("bad, exc", [(-0.1, ValueError), (float("nan"), ValueError), (float("inf"), ValueError),
                                      ("1", TypeError), (None, TypeError), (True, TypeError)])
def test_compound_bad_phi(bad, exc):
    with pytest.raises(exc, match="phi"):
        compound(bad)


def test_round_filters_and_repeats():
    assert round_filters(32, 1.0) == 32 and round_filters(32, 1.1) == 32 and round_filters(16, 1.1) == 16
    assert round_filters(320, 1.1) == 352 and round_filters(1280, 2.0) == 2560
    assert round_filters(40, 1.4) == 56 and round_filters(24, 1.6) == 40
    for c in range(1, 400):
        for w in (0.5, 1.0, 1.1, 1.23, 1.8, 2.0):
            r = round_filters(c, w)
            assert r % 8 == 0 and r >= 0.9 * c * w and r >= 8
    assert [round_repeats(r, 3.1) for r in (1, 2, 3, 4)] == [4, 7, 10, 13]
    assert round_repeats(3, 1.0) == 3 and round_repeats(1, 1.1) == 2
    with pytest.raises(ValueError, match="depth"):
        round_repeats(2, -1.0)
    with pytest.raises(TypeError, match="channels"):
        round_filters(2.5, 1.0)


def test_arch_spec_names_and_errors():
    assert arch_spec("b3").phi == 3.0 and arch_spec("B3").name == "b3" and arch_spec(3).name == "b3"
    assert arch_spec(2.5).name == "phi=2.5"
    with pytest.raises(ValueError, match="b0, b1, b2, b3, b4, b5, b6, b7"):
        arch_spec("b9")
    with pytest.raises(ValueError, match="arch"):
        arch_spec(float("nan"))
    with pytest.raises(ValueError, match="arch"):
        arch_spec(-1)


@pytest.mark.parametrize("phi", range(8))
def test_model_cost_params_match_torchvision_counts(phi):
    assert model_cost(f"b{phi}").params == TORCHVISION_PARAMS[phi]


def test_model_cost_monotone_in_phi_on_the_grid():
    """README: "MAC and parameter counts grow monotonically with φ (tested on the grid)" — fit_phi's grid,
    φ = 0 … 12 (its default phi_max) in steps of 0.01: neither count ever decreases from one φ to the next
    (fit_phi's bisection on --macs / --params is exact only then). Not strictly: the channel rounding to
    multiples of 8 and the repeat rounding hold the parameter count still over stretches of φ."""
    phis = [k / 100 for k in range(0, 1201)]
    costs = [model_cost(p) for p in phis]
    for pa, pb, a, b in zip(phis, phis[1:], costs, costs[1:]):
        assert b.macs >= a.macs, f"MACs fall from φ={pa:g} ({a.macs}) to φ={pb:g} ({b.macs})"
        assert b.params >= a.params, f"params fall from φ={pa:g} ({a.params}) to φ={pb:g} ({b.params})"
    # … and they do grow over the grid (a count stuck at B0's would pass the steps above).
    assert costs[0] == model_cost("b0") and costs[700] == model_cost("b7") and costs[1200].macs > costs[700].macs
    assert costs[1200].params > costs[700].params > costs[0].params


def hook_count(model: nn.Module, x: torch.Tensor):
    """MACs of every Conv2d and Linear, counted from the real module's output shapes by hooks."""
    macs = [0]

    def conv_hook(m, inp, out):
        macs[0] += out.shape[1] * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1] * \
            out.shape[2] * out.shape[3] * out.shape[0] // x.shape[0]

    def linear_hook(m, inp, out):
        macs[0] += m.in_features * m.out_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    with torch.no_grad():
        model.eval()(x)
    for h in handles:
        h.remove()
    return macs[0], sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("arch, res, padding", [("b0", 224, "symmetric"), ("b0", (227, 233), "same"),
                                                 (1.5, 97, "symmetric"), ("b3", 64, "same"), (8, 33, "symmetric")])
def test_model_cost_matches_hooks(arch, res, padding):
    model = efficientnet(arch, num_classes=10, padding=padding)
    h, w = (res, res) if isinstance(res, int) else res
    macs, params = hook_count(model, torch.randn(1, 3, h, w))
    cost = model_cost(arch, resolution=res, num_classes=10)
    assert (cost.macs, cost.params) == (macs, params)


def test_model_cost_default_resolution_and_errors():
    assert model_cost("b0").macs == model_cost("b0", 224).macs
    assert 0.38e9 < model_cost("b0").macs < 0.40e9  # the paper's 0.39 B FLOPs (multiply-adds)
    assert model_cost("b1").macs > model_cost("b0").macs
    with pytest.raises(ValueError, match="resolution"):
        model_cost("b0", resolution=0)
    with pytest.raises(ValueError, match="resolution"):
        model_cost("b0", resolution=(1, 2, 3))


def test_depthwise_shapes():
    shapes = depthwise_shapes("b0")
    assert len(shapes) == 16
    assert shapes[0] == (32, 112, 112, 3, 1) and shapes[1] == (96, 112, 112, 3, 2)
    assert shapes[-1] == (1152, 7, 7, 3, 1)
    assert len(depthwise_shapes("b0", distinct=True)) < 16
    assert depthwise_shapes("b0", resolution=(227, 233))[0][1:3] == (114, 117)
