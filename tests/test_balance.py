"""Device-aware compound scaling: custom coefficients, the exponent fit, the scaling profile (a real CPU run at
tiny sizes) and the paper's grid search."""
import json
import math
import random

import pytest
import torch

import effnet_kernels as ek
from effnet_kernels import balance, scaling
from effnet_kernels.bench import cli as bench
from effnet_kernels.bench.e2e import count_macs
from effnet_kernels.scaling import ALPHA, BETA, arch_spec, compound, model_cost, round_filters


# ---- custom coefficients ----------------------------------------------------------------------------------

@pytest.mark.parametrize("phi", [0, 1, 2.5, 3, 7, 9.25])
def test_custom_coefficients_are_pure_powers(phi):
    a, b, g = 1.31, 1.07, 1.18
    s = compound(phi, alpha=a, beta=b, gamma=g)
    assert s.depth == pytest.approx(a ** phi, rel=1e-12) and s.width == pytest.approx(b ** phi, rel=1e-12)
    assert s.resolution == int(round(224 * g ** phi))
    assert s.dropout == compound(phi).dropout  # the official rule's dropout for that φ
    # unset coefficients are the paper's, and base_resolution moves the resolution
    s2 = compound(phi, gamma=g, base_resolution=256)
    assert s2.depth == pytest.approx(ALPHA ** phi) and s2.width == pytest.approx(BETA ** phi)
    assert s2.resolution == int(round(256 * g ** phi))


def test_paper_coefficients_as_powers_are_not_the_table():
    s = compound(3, alpha=1.2, beta=1.1, gamma=1.15)
    assert s.depth == pytest.approx(1.728) and s.width == pytest.approx(1.331) and s.resolution == 341
    assert compound(3) == (1.2, 1.4, 300, 0.3)  # B3: the table, unchanged when nothing is set
    assert compound(0, alpha=1.7) == compound(0) == (1.0, 1.0, 224, 0.2)  # φ = 0 is B0 in every family
    for phi in (0, 0.5, 1, 4, 7, 8.5):
        assert compound(phi, None, None, None, 224) == compound(phi)
        assert arch_spec(phi, None, None, None) == arch_spec(phi)
        assert arch_spec(phi).coefficients is None


def test_custom_arch_spec_uses_the_same_rounding():
    a, b, g, phi = 1.4, 1.12, 1.1, 2
    spec = arch_spec(phi, alpha=a, beta=b, gamma=g)
    repeats = [1, 2, 2, 3, 3, 4, 1]
    assert [len(st) for st in spec.stages] == [math.ceil(r * a ** phi) for r in repeats]
    outs = [16, 24, 40, 80, 112, 192, 320]
    assert [st[-1].out_channels for st in spec.stages] == [round_filters(c, b ** phi) for c in outs]
    assert spec.stem_channels == round_filters(32, b ** phi) and spec.resolution == round(224 * g ** phi)
    assert spec.coefficients == (a, b, g, 224) and "alpha=1.4" in spec.name
    m = ek.efficientnet(phi, alpha=a, beta=b, gamma=g, num_classes=7).eval()
    assert m.spec == spec
    with torch.inference_mode():
        assert m(torch.randn(1, 3, 64, 64)).shape == (1, 7)
    # "b2" with coefficients is φ = 2 of that family
    assert arch_spec("b2", alpha=a, beta=b, gamma=g).layout == spec.layout
    # model_cost counts what efficientnet builds (hooks, independent of model_cost's arithmetic)
    assert model_cost(spec, num_classes=7).macs == count_macs(m, torch.randn(1, 3, spec.resolution, spec.resolution))


def test_too_large_a_family_is_refused_before_building():
    with pytest.raises(ValueError, match="at most 100000 blocks"):
        arch_spec(30, alpha=2.0)


def test_flops_growth():
    g = scaling.flops_growth(1.2, 1.1, 1.15)
    assert g.ideal == pytest.approx(1.2 * 1.1 ** 2 * 1.15 ** 2)
    assert g.measured == pytest.approx(model_cost(arch_spec(1, alpha=1.2, beta=1.1, gamma=1.15)).macs
                                       / model_cost("b0").macs)
    # at φ = 1 the ceil of every stage's repeats (16 -> 23 blocks) makes the measured growth far above the ideal
    assert g.measured > 2.3 and [p for p, _ in g.per_phi] == [1, 2, 3, 4]
    none = scaling.flops_growth(1.0, 1.0, 1.0)
    assert none.ideal == 1.0 and none.measured == 1.0
    res_only = scaling.flops_growth(1.0, 1.0, math.sqrt(2))  # FLOPs grow with the plane: ≈ 2 per unit
    assert res_only.ideal == pytest.approx(2.0) and res_only.measured == pytest.approx(2.0, rel=0.05)


def test_fit_phi_in_a_custom_family():
    res = ek.fit_phi(macs=2e9, alpha=1.4, beta=1.05, gamma=1.1)
    assert res.coefficients == {"alpha": 1.4, "beta": 1.05, "gamma": 1.1, "base_resolution": 224}
    fam = lambda phi: model_cost(arch_spec(phi, alpha=1.4, beta=1.05, gamma=1.1)).macs  # noqa: E731
    assert fam(res.phi) <= 2e9 < fam(round(res.phi + 0.01, 2))
    assert res.depth == pytest.approx(1.4 ** res.phi) and "alpha=1.4" in res.line()
    assert ek.fit_phi(macs=2e9).phi != res.phi


# ---- the exponent fit ---------------------------------------------------------------------------------------

TRUE = {"depth": 0.73, "width": 1.61, "resolution": 2.27}


def _synthetic(points, noise=0.0, seed=0):
    rng = random.Random(seed)
    return [3.0 * p.realised.depth ** TRUE["depth"] * p.realised.width ** TRUE["width"]
            * p.realised.resolution ** TRUE["resolution"] * math.exp(rng.gauss(0, noise)) for p in points]


def test_fit_recovers_known_exponents_exactly_without_noise():
    pts = balance.scaling_points()
    fit = balance.fit_exponents([tuple(p.realised) for p in pts], _synthetic(pts))
    for d, v in TRUE.items():
        assert getattr(fit, d) == pytest.approx(v, abs=1e-9)
    assert fit.constant == pytest.approx(3.0, rel=1e-9) and fit.rms_log_residual < 1e-9
    assert balance.fit_slope([1.0, 2.0, 4.0], [3.0, 3.0 * 2 ** 0.8, 3.0 * 4 ** 0.8]) == pytest.approx(0.8, abs=1e-12)


def test_fit_recovers_known_exponents_within_tolerance_with_noise():
    pts = balance.scaling_points(points=8)
    for seed in range(3):
        fit = balance.fit_exponents([tuple(p.realised) for p in pts], _synthetic(pts, noise=0.03, seed=seed))
        for d, v in TRUE.items():
            assert abs(getattr(fit, d) - v) < max(4 * fit.se[d], 0.05), (seed, d, getattr(fit, d), fit.se[d])
            assert fit.se[d] < 0.2
    # a wrong exponent is told apart: the fitted depth exponent is not 0.1 off the truth
    fit = balance.fit_exponents([tuple(p.realised) for p in pts], _synthetic(pts, noise=0.03))
    assert abs(fit.depth - (TRUE["depth"] + 0.1)) > 2 * fit.se["depth"]


def _rounds(points, drift, noise, seed=0, per_round=3):
    """Synthetic timed rounds: round r scales every point by drift[r] (the machine slowing down for a
    minute), each sample carries its own log-normal noise."""
    rng = random.Random(seed)
    base = _synthetic(points)
    return [{"fused": {"rounds": [[v * k * math.exp(rng.gauss(0, noise)) for _ in range(per_round)]
                                  for k in drift]}} for v in base]


def test_provider_fit_ignores_drift_shared_by_a_round():
    pts = balance.scaling_points()
    fit = balance._provider_fit(pts, _rounds(pts, drift=[1.0, 1.7, 0.8, 1.3], noise=0.0), "fused")
    for d, v in TRUE.items():  # each round's drift hits every point alike: the exponents are exact
        assert fit[d] == pytest.approx(v, abs=1e-9) and fit["spread"][d] < 1e-6
        assert all(f[d] == pytest.approx(v, abs=1e-9) for f in fit["per_round"])
    true_depth_slope = TRUE["depth"] / balance.fit_exponents(
        [tuple(p.realised) for p in pts], [p.macs for p in pts]).depth
    assert fit["paths"]["depth"]["per_2x_flops"] == pytest.approx(2 ** true_depth_slope, rel=0.05)


def test_provider_fit_spread_covers_the_truth_under_noise():
    pts = balance.scaling_points()
    misses = 0
    for seed in range(6):
        fit = balance._provider_fit(pts, _rounds(pts, drift=[1.0, 1.4, 0.9, 1.2, 1.1], noise=0.08, seed=seed),
                                    "fused")
        for d, v in TRUE.items():
            assert 0 < fit["spread"][d] < 0.5
            misses += abs(fit[d] - v) > 3 * fit["spread"][d]
        lo, hi = fit["paths"]["width"]["per_2x_flops_range"]
        assert lo < fit["paths"]["width"]["per_2x_flops"] < hi
    assert misses <= 1  # 18 estimates, each within 3 spreads of the truth but for at most one


def test_words_name_a_cheapest_dimension_only_when_the_ranges_part():
    flops = {"depth": 1.0, "width": 1.7, "resolution": 2.0}

    def fit(ranges):
        paths = {p: {"per_2x_flops": sum(r) / 2, "per_2x_flops_range": list(r)} for p, r in ranges.items()}
        return {"paths": paths, "spread": dict.fromkeys(flops, 0.1), **flops}
    apart = balance.describe({"fused": fit({"depth": (1.9, 2.0), "width": (1.6, 1.7), "resolution": (1.8, 1.9)})},
                             flops)
    assert any("width is the cheapest" in w and "depth the dearest" in w for w in apart), apart
    close = balance.describe({"fused": fit({"depth": (1.8, 2.0), "width": (1.7, 1.9), "resolution": (1.75, 1.95)})},
                             flops)
    assert any("does not tell depth, width and resolution apart" in w for w in close), close
    assert not any("cheapest" in w for w in close)


def test_fit_needs_every_dimension():
    pts = [p for p in balance.scaling_points() if p.path in ("base", "depth")]
    with pytest.raises(ValueError, match="do not vary every dimension"):
        balance.fit_exponents([tuple(p.realised) for p in pts], _synthetic(pts))


def test_scaling_points_walk_one_dimension_at_a_time():
    pts = balance.scaling_points(points=6, flops_max=2.0)
    assert pts[0].path == "base" and pts[0].spec.layout == arch_spec("b0").layout
    for path in balance.PATHS:
        on = [p for p in pts if p.path == path]
        assert len(on) == 5, path
        ratios = [p.flops_ratio for p in on]
        assert ratios == sorted(ratios) and 1 < ratios[0] and ratios[-1] <= 2.0 * 1.03
        assert ratios[-1] > 1.8, (path, ratios)  # reaches about 2x
        assert len({p.spec.layout for p in on}) == 5
        for p in on:
            others = {"depth": (p.realised.width, p.realised.resolution),
                      "width": (p.realised.depth, p.realised.resolution),
                      "resolution": (p.realised.depth, p.realised.width)}.get(path)
            if others:
                assert others == (1.0, 1.0), (path, p.realised)
    comp = [p for p in pts if p.path == "compound"][-1].realised
    assert comp.depth > 1 and comp.width > 1 and comp.resolution > 1


# ---- the random models the profile times ---------------------------------------------------------------------

def test_deep_random_models_are_well_conditioned():
    # Twice and three times B0's blocks: the output moves about as much as the input (a chaotic random model
    # would hide a kernel's error behind fp32 eager's own), and the logits stay of order 1.
    from effnet_kernels.testing import build_model, rel_error
    for depth in (2.0, 3.0):
        spec = scaling.scaled_arch(depth=depth, resolution=64)
        m64 = build_model(spec, dtype=torch.float64)
        x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
        d = torch.randn(x.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
        with torch.inference_mode():
            y = m64(x)
            gain = rel_error(m64(x + d * (1e-7 * x.norm() / d.norm())), y) / 1e-7
            err32 = rel_error(build_model(spec)(x.float()).double(), y)
        assert gain < 20 and 0.05 < y.std().item() < 20 and err32 < 1e-5, (len(spec.blocks), gain, y.std(), err32)


# ---- a real run -----------------------------------------------------------------------------------------------

def test_scaling_quick_real_cpu_run_at_tiny_sizes(tmp_path, capsys, one_thread):
    out = tmp_path / "sc"
    rc = bench.main(["scaling", "--quick", "--resolution", "100", "--points", "4", "--rounds", "2", "--per-round",
                     "1", "--no-progress", "--out", str(out), "--device", "cpu"])
    assert rc == 0
    res = json.loads((out / "scaling.json").read_text())
    assert res["schema"] == "effnet-bench-scaling/1" and res["complete"]
    assert all(sum(p["path"] == path for p in res["points"]) == 3 for path in balance.PATHS)
    for prov in ("fused", "eager"):
        fit = res["fits"][prov]
        for d in ("depth", "width", "resolution"):
            assert math.isfinite(fit[d]) and math.isfinite(fit["spread"][d]) and fit["spread"][d] >= 0
        assert set(fit["paths"]) == set(balance.PATHS)
        assert len(res["points"][0]["providers"][prov]["rounds_ms"]) == 2
    for pt in res["points"]:  # the fused model as accurate as fp32 eager against float64, at every point
        assert pt["fused_err64"] <= 4 * pt["eager_err64"] + 1e-5 and pt["accuracy_ok"], pt["name"]
    md = (out / "scaling.md").read_text()
    assert "doubling FLOPs through resolution" in md and "| FLOPs (model_cost) |" in md
    pytest.importorskip("matplotlib")
    assert (out / "scaling.png").stat().st_size > 10_000
    (out / "scaling.md").unlink()
    assert bench.main(["render", str(out / "scaling.json")]) == 0  # the tables again from the JSON
    assert (out / "scaling.md").read_text() == md


# ---- the grid search ------------------------------------------------------------------------------------------

def _blocks(model):
    return float(len(model.spec.blocks))


def test_grid_search_flops_meets_the_constraint_and_prefers_depth():
    seen = []

    def evaluate(model):
        seen.append(model.spec.layout)
        return _blocks(model)

    res = ek.grid_search(evaluate, cost="flops", target=2.0, step=0.1, tolerance=0.05)
    assert res.rows and res.grid_points == 11 ** 3
    base = model_cost("b0").macs
    for r in res.rows:
        spec = arch_spec(1, alpha=r["alpha"], beta=r["beta"], gamma=r["gamma"])
        assert abs(model_cost(spec).macs / base / 2.0 - 1) <= 0.05, r
    # the constraint holds for what is built, counted by hooks (not by model_cost's arithmetic)
    top = res.best
    m = ek.efficientnet(1, alpha=top["alpha"], beta=top["beta"], gamma=top["gamma"])
    macs = count_macs(m, torch.randn(1, 3, top["resolution"], top["resolution"]))
    assert abs(macs / count_macs(ek.efficientnet("b0"), torch.randn(1, 3, 224, 224)) / 2 - 1) <= 0.05
    # the known optimum: all of the budget into depth
    assert (top["beta"], top["gamma"]) == (1.0, 1.0) and top["blocks"] == max(r["blocks"] for r in res.rows)
    # once per distinct architecture
    assert len(seen) == len(set(seen)) == res.evaluations == len({(r["blocks"], r["resolution"], r["width"])
                                                                  for r in res.rows})
    # cached across calls
    cache = {}
    first = ek.grid_search(evaluate, step=0.1, cache=cache)
    n = len(seen)
    again = ek.grid_search(evaluate, step=0.1, cache=cache)
    assert len(seen) == n and again.evaluations == 0 and again.rows == first.rows


def test_grid_search_prefers_resolution():
    res = ek.grid_search(lambda m: float(m.spec.resolution), step=0.1, tolerance=0.05)
    best = res.best
    assert (best["alpha"], best["beta"]) == (1.0, 1.0)
    # FLOPs ∝ resolution²: 2x FLOPs is 224·√2 ≈ 317 px, within the tolerance
    assert 224 * math.sqrt(1.9) <= best["resolution"] <= 224 * math.sqrt(2.1)


def test_grid_search_latency_with_a_synthetic_device():
    calls = []

    def measure(specs):  # a device where depth is cheap: latency ∝ blocks^0.5 · resolution² · width²
        calls.append(specs)
        return [1.0 * (len(s.blocks) / 16) ** 0.5 * (s.resolution / 224) ** 2 * (s.stem_channels / 32) ** 2
                for s in specs]

    res = ek.grid_search(_blocks, cost="latency", target=2.0, step=0.1, tolerance=0.05, flops_window=(1.0, 4.0),
                         measure=measure, max_measured=1000)
    assert len(calls) == 1 and calls[0][0].layout == arch_spec("b0").layout  # the base first, timed with them
    assert res.measured == len(calls[0]) - 1 == len({s.layout for s in calls[0][1:]})
    for r in res.rows:
        assert abs(r["latency_ratio"] / 2.0 - 1) <= 0.05 and 1.0 <= r["flops_ratio"] <= 4.0
    # the known optimum: depth to the top of the grid (α = 2: 32 blocks, latency ×√2), then resolution
    # (γ = 1.2: 269 px, ×1.44) for the rest
    best = res.best
    assert best["blocks"] == 32 and best["beta"] == 1.0 and best["gamma"] == 1.2, best
    # the reward ranks a constant accuracy by cost: the cheapest first
    rew = ek.grid_search(lambda m: 1.0, cost="latency", target=2.0, step=0.1, tolerance=0.05,
                         flops_window=(1.0, 4.0), measure=measure, reward=(2.0, -0.07), max_measured=1000)
    assert rew.best["latency_ms"] == min(r["latency_ms"] for r in rew.rows)
    assert rew.best["score"] == pytest.approx((rew.best["latency_ms"] / 2.0) ** -0.07)


def test_grid_search_latency_real_cpu_smoke(one_thread):
    res = ek.grid_search(lambda m: 1.0, cost="latency", target=2.0, step=0.5, tolerance=0.45, base_resolution=32,
                         flops_window=(1.5, 2.6), rounds=1, per_round=1, device="cpu")
    assert res.measured >= 1 and res.base["latency_ms"] > 0
    assert all(0.55 * 2 <= r["latency_ratio"] <= 1.45 * 2 for r in res.rows)


def test_grid_search_refusals():
    with pytest.raises(ValueError, match="nearest"):
        ek.grid_search(_blocks, target=2.0, step=0.5, tolerance=0.001)
    with pytest.raises(ValueError, match="max_measured"):
        ek.grid_search(_blocks, cost="latency", step=0.1, max_measured=3, measure=lambda s: [1.0] * len(s))
    with pytest.raises(ValueError, match="evaluate must return a finite number"):
        ek.grid_search(lambda m: float("nan"), step=0.5, tolerance=0.2)
    with pytest.raises(ValueError, match="measure must return"):
        ek.grid_search(_blocks, cost="latency", step=0.5, measure=lambda s: [1.0])
