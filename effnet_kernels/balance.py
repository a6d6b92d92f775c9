"""What depth, width and resolution each cost on this device: the measured side of compound scaling.

FLOPs are not latency. Tan & Le chose α = 1.2, β = 1.1, γ = 1.15 so that FLOPs double per unit of φ, but
each device prices a FLOP differently depending on where it sits: more blocks (depth) add sequential steps
on small planes, more channels (width) make the 1x1 GEMMs denser, a larger input (resolution) makes every
plane larger. :func:`scaling_profile` measures it::

    import effnet_kernels as ek
    prof = ek.scaling_profile()              # around B0, on this device: fused and eager
    print(prof.markdown())                   # the points, the fitted exponents, the cost of 2x FLOPs per path

Around a base φ it builds the model scaled along one dimension at a time — depth (block repeats, ceil-rounded
per stage), width (channels, rounded to multiples of 8), resolution (input size, multiples of 8) — and along
the compound path (α^t, β^t, γ^t), each from 1x to about ``flops_max`` x the base's multiply-adds, times every
point's fused and eager model in interleaved rounds (the order shuffled each round) and fits

    latency ∝ d^a · w^b · r^c

by least squares in log space on the *realised* multipliers (:func:`~effnet_kernels.scaling.
realised_multipliers`), beside the same fit of the multiply-adds (not the ideal 1, 2, 2: the stem, head and
classifier do not grow with depth, SE and depthwise layers grow linearly with width). Along each path it also
fits latency ∝ FLOPs^s: doubling the FLOPs along it costs ×2^s latency — s = 1 is FLOPs-proportional.
"""
from __future__ import annotations

import gc
import math
import random
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from .float64 import float64_call
from .scaling import (ArchSpec, Multipliers, _check_phi, coefficients, compound, model_cost, realised_multipliers,
                      scaled_arch)

PATHS = ("depth", "width", "resolution", "compound")
DIMS = ("depth", "width", "resolution")
PROVIDER_NAMES = {"fused": "fused", "eager": "eager_nchw"}  # this module's names -> bench.e2e's providers
RES_STEP = 8  # the resolution path moves in multiples of 8 pixels at 224 (of r0 / 28 at other base sizes)


# ------------------------------------------------------------------------------------------------ the points

@dataclass(frozen=True)
class ScalePoint:
    """One model of the profile: the path it lies on ("base" for the shared base), its architecture, the
    multipliers asked for and those realised over the base, and its cost."""
    path: str
    spec: ArchSpec
    nominal: Tuple[float, float, float]   # (depth, width, resolution) multipliers over the base, as asked
    realised: Multipliers
    macs: int
    params: int
    flops_ratio: float                    # macs / the base's macs

    def as_dict(self) -> dict:
        return {"path": self.path, "name": self.spec.name, "blocks": len(self.spec.blocks),
                "stem": self.spec.stem_channels, "head": self.spec.head_channels, "resolution": self.spec.resolution,
                "nominal": dict(zip(DIMS, self.nominal)), "realised": self.realised._asdict(), "macs": self.macs,
                "params": self.params, "flops_ratio": self.flops_ratio}


def _check_real(value, name: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number in [{lo:g}, {hi:g}], got {type(value).__name__} {value!r}")
    v = float(value)
    if not (math.isfinite(v) and lo <= v <= hi):
        raise ValueError(f"{name} must be a number in [{lo:g}, {hi:g}], got {value!r}")
    return v


def _check_count(value, name: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int in [{lo}, {hi}], got {type(value).__name__} {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be an int in [{lo}, {hi}], got {value!r}")
    return value


def scaling_points(base_phi=0, points: int = 6, flops_max: float = 2.0, resolution: Optional[int] = None,
                   alpha=None, beta=None, gamma=None) -> List[ScalePoint]:
    """The base and, per path, ``points - 1`` distinct architectures whose multiply-adds lie between the base's
    and ``flops_max`` x it, as close as the rounding allows to log-even steps (fewer when the rounding leaves
    fewer distinct ones: the depth path's first step is a whole block per stage). ``base_phi``: the base's φ
    (the official table, or the family of ``alpha``/``beta``/``gamma``, which also set the compound path's
    direction: the paper's 1.2, 1.1, 1.15 by default); ``resolution``: the base's input size instead of the
    φ's own (small sizes make a fast smoke run)."""
    phi0 = _check_phi(base_phi, "base_phi")
    points = _check_count(points, "points", 3, 24)
    flops_max = _check_real(flops_max, "flops_max", 1.1, 16.0)
    co = coefficients(alpha, beta, gamma)
    if co is None:
        from .scaling import ALPHA, BETA, GAMMA, Coefficients
        base_sc, direction = compound(phi0), Coefficients(ALPHA, BETA, GAMMA, 224)
    else:
        base_sc, direction = compound(phi0, *co), co
    if resolution is not None:
        from .padding import _check_int
        base_sc = base_sc._replace(resolution=_check_int(resolution, "resolution", 16))
    r0 = base_sc.resolution
    rstep = max(1, round(r0 * RES_STEP / 224))

    def make(path: str, d: float, w: float, res: int) -> ArchSpec:
        return scaled_arch(width=base_sc.width * w, depth=base_sc.depth * d, resolution=res,
                           dropout=base_sc.dropout, phi=phi0,
                           name=f"{path}:depth={base_sc.depth * d:.4g},width={base_sc.width * w:.4g},res={res}")

    base = make("base", 1.0, 1.0, r0)
    base_cost = model_cost(base)

    def point(path, spec, nominal) -> ScalePoint:
        cost = model_cost(spec)
        return ScalePoint(path, spec, nominal, realised_multipliers(spec, base), cost.macs, cost.params,
                          cost.macs / base_cost.macs)

    out = [point("base", base, (1.0, 1.0, 1.0))]
    targets = [flops_max ** (k / (points - 1)) for k in range(1, points)]
    for path in PATHS:
        found: Dict[tuple, ScalePoint] = {base.layout: out[0]}
        k = 0
        while True:  # walk the path in small steps until the FLOPs pass flops_max
            k += 1
            if path == "depth":
                nominal = (1 + 0.01 * k, 1.0, 1.0)
            elif path == "width":
                nominal = (1.0, 1 + 0.01 * k, 1.0)
            elif path == "resolution":
                nominal = (1.0, 1.0, (r0 + rstep * k) / r0)
            else:
                t = 0.01 * k
                nominal = (direction.alpha ** t, direction.beta ** t, direction.gamma ** t)
            res = r0 + rstep * k if path == "resolution" else int(round(r0 * nominal[2]))
            spec = make(path, nominal[0], nominal[1], res)
            if spec.layout in found:
                continue
            p = point(path, spec, (nominal[0], nominal[1], res / r0))
            if p.flops_ratio > flops_max * 1.03:
                break
            found[spec.layout] = p
            if k > 10000:  # cannot happen for flops_max <= 16; a guard, not a limit
                break
        cands = [p for p in found.values() if p.path != "base"]
        chosen: List[ScalePoint] = []
        for t in targets:
            # not within 2 % of a point already chosen when another is left (points that close add noise, not
            # information: the compound path's first steps move the resolution a pixel at a time)
            free = [p for p in cands if p not in chosen]
            apart = [p for p in free if all(abs(math.log(p.flops_ratio / q.flops_ratio)) > 0.02 for q in chosen)]
            if not free:
                break
            chosen.append(min(apart or free, key=lambda p: abs(math.log(p.flops_ratio / t))))
        out += sorted(chosen, key=lambda p: p.flops_ratio)
    return out


# ----------------------------------------------------------------------------------------------- the fits

@dataclass
class ExponentFit:
    """``value ∝ d^depth · w^width · r^resolution`` fitted by least squares in log space: the exponents, their
    standard errors, the constant (the value at d = w = r = 1) and the rms of the log residuals."""
    depth: float
    width: float
    resolution: float
    se: Dict[str, float]
    constant: float
    rms_log_residual: float
    n: int

    def exponents(self) -> Dict[str, float]:
        return {"depth": self.depth, "width": self.width, "resolution": self.resolution}

    def as_dict(self) -> dict:
        return {**self.exponents(), "se": self.se, "constant": self.constant,
                "rms_log_residual": self.rms_log_residual, "n": self.n}


def _lstsq(rows: List[List[float]], y: List[float]) -> Tuple[List[float], List[float], float]:
    """(coefficients, standard errors, rms residual) of least squares ``rows @ c ≈ y`` in float64."""
    X = torch.tensor(rows, dtype=torch.float64)
    Y = torch.tensor(y, dtype=torch.float64)
    n, p = X.shape
    xtx = X.T @ X
    # A design without one of the dimensions (a profile of one path only) cannot separate them
    if torch.linalg.matrix_rank(xtx).item() < p:
        raise ValueError(f"the points do not vary every dimension independently ({n} points, design rank "
                         f"{torch.linalg.matrix_rank(xtx).item()} < {p}): give points on at least three paths")
    c = torch.linalg.solve(xtx, X.T @ Y)
    resid = Y - X @ c
    rss = float(resid @ resid)
    dof = n - p
    if dof > 0:
        se = torch.sqrt(torch.clamp(torch.diagonal(torch.linalg.inv(xtx)) * (rss / dof), min=0.0)).tolist()
    else:
        se = [float("nan")] * p
    return c.tolist(), se, math.sqrt(rss / n)


def fit_exponents(multipliers: Sequence[Sequence[float]], values: Sequence[float]) -> ExponentFit:
    """Fit ``values ∝ d^a · w^b · r^c`` over ``multipliers`` = [(d, w, r), …] (each > 0) by least squares on
    log(values) = log k + a·log d + b·log w + c·log r."""
    if len(multipliers) != len(values):
        raise ValueError(f"multipliers and values must have equal lengths, got {len(multipliers)} and {len(values)}")
    rows, y = [], []
    for m, v in zip(multipliers, values):
        if len(m) != 3 or min(m) <= 0 or not all(math.isfinite(x) for x in m):
            raise ValueError(f"multipliers must be (depth, width, resolution) triples of finite numbers > 0, got {m!r}")
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"values must be finite and > 0, got {v!r}")
        rows.append([1.0] + [math.log(x) for x in m])
        y.append(math.log(v))
    c, se, rms = _lstsq(rows, y)
    return ExponentFit(depth=c[1], width=c[2], resolution=c[3], se=dict(zip(DIMS, se[1:])),
                       constant=math.exp(c[0]), rms_log_residual=rms, n=len(values))


def fit_slope(x: Sequence[float], y: Sequence[float]) -> float:
    """The slope s of ``y ∝ x^s`` by least squares in log space (at least two distinct x)."""
    if len(set(x)) < 2:
        raise ValueError(f"fit_slope needs at least two distinct x, got {list(x)!r}")
    c, _, _ = _lstsq([[1.0, math.log(v)] for v in x], [math.log(v) for v in y])
    return c[1]


# ------------------------------------------------------------------------------------------- the measuring

def time_specs(specs: Sequence[ArchSpec], providers=("fused", "eager"), device="cpu",
               dtype: torch.dtype = torch.float32, batch: int = 1, rounds: int = 5, per_round: int = 3,
               progress: Optional[Callable[[str], None]] = None, seed: int = 0) -> Tuple[List[dict], Dict]:
    """Build every spec's model (random weights, calibrated BatchNorm, at its own resolution) and its fused
    model, then time every (spec, provider) in ``rounds`` rounds, each a shuffled pass over all of them
    (drift on a shared machine hits every point alike). Returns, per spec, ``{provider: {"rounds": [[ms…] per
    round]}, "fused_rel_err": …, "errors": {…}}`` and, on Ctrl-C, what was measured up to it (then
    ``meta["interrupted"]`` is True)."""
    from .bench.e2e import make_providers
    from .testing import build_model
    from .timing import exact_fp32, time_fn

    device = torch.device(device)
    unknown = [p for p in providers if p not in PROVIDER_NAMES]
    if unknown or not providers:
        raise ValueError(f"providers must be some of {tuple(PROVIDER_NAMES)}, got {tuple(providers)!r}")
    cuda = device.type == "cuda"
    graphs = cuda and batch == 1
    results: List[dict] = []
    calls: Dict[Tuple[int, str], Callable] = {}
    meta = {"interrupted": False}
    keep = []
    with exact_fp32(device):
        try:
            for i, spec in enumerate(specs):
                model = build_model(spec, device, dtype)
                x = torch.randn(batch, 3, spec.resolution, spec.resolution,
                                generator=torch.Generator().manual_seed(seed + 1)).to(device, dtype)
                made = make_providers(model, x, [PROVIDER_NAMES[p] for p in providers], graphs)
                res = {"errors": dict(made["errors"]), "fused_rel_err": made.get("fused_rel_err")}
                res.update(_errors_vs_float64(model, x, {p: made["calls"].get(PROVIDER_NAMES[p]) for p in providers}))
                for p in providers:
                    fn = made["calls"].get(PROVIDER_NAMES[p])
                    if fn is None:
                        continue
                    try:
                        with torch.inference_mode():
                            fn()  # first call (plans, caches) outside the timed rounds
                    except Exception as exc:  # noqa: BLE001
                        res["errors"][p] = f"{type(exc).__name__}: {exc}"[:500]
                        continue
                    calls[(i, p)] = fn
                    res[p] = {"rounds": []}
                results.append(res)
                keep.append((model, made))
                if progress:
                    progress(f"built {spec.name}")
            order = list(calls)
            rng = random.Random(seed)
            for r in range(rounds):
                rng.shuffle(order)
                for key in order:
                    if not cuda:
                        time.sleep(0.02)  # let the previous model's worker threads stop spinning
                    with torch.inference_mode():
                        s = time_fn(calls[key], 1, per_round, device=device)
                    results[key[0]][key[1]]["rounds"].append([v * 1e3 for v in s])
                    if progress:
                        progress(f"round {r + 1}/{rounds} {specs[key[0]].name} {key[1]}: "
                                 f"{statistics.median(s) * 1e3:.2f} ms")
        except KeyboardInterrupt:
            meta["interrupted"] = True
        finally:
            del keep, calls
            gc.collect()
    return results, meta


def _errors_vs_float64(model, x, calls: Dict[str, Optional[Callable]]) -> dict:
    """Each provider's relative error against the model in float64 (``"<provider>_err64"``): a random deep
    model can be ill-conditioned enough that fp32 eager itself is 1 % off, so the fused model is held against
    eager's own error, not against eager."""
    from .bench.e2e import _tensors
    from .testing import rel_error

    out = {}
    with torch.inference_mode():
        ref = _tensors(float64_call(model, x.double()))
        for name, fn in calls.items():
            if fn is not None:
                try:
                    out[f"{name}_err64"] = max(rel_error(a.double(), b) for a, b in zip(_tensors(fn()), ref))
                except Exception:  # noqa: BLE001  (the timing loop reports a provider that fails)
                    pass
    return out


def accuracy_ok(m: dict) -> Optional[bool]:
    """Whether a point's fused model is as accurate as fp32 eager against float64 (within 4x its error plus
    1e-5); None when either was not measured."""
    f, e = m.get("fused_err64"), m.get("eager_err64")
    return None if f is None or e is None else f <= 4 * e + 1e-5


def _median(v: Sequence[float]) -> float:
    return statistics.median(v)


BOOTSTRAP = 200  # resamples of the rounds behind each spread


def _provider_fit(points: List[ScalePoint], meas: List[dict], prov: str, seed: int = 0) -> Optional[dict]:
    """The fit of one provider's latencies: exponents over all points (each point's median over all its
    samples), per-round fits, the per-path FLOPs slopes, and their spreads.

    A spread is the larger of the least-squares standard error and the standard deviation of the estimate
    over :data:`BOOTSTRAP` resamples of the rounds (drawn with replacement; a round is the unit of drift on a
    shared machine, so the resampling keeps each round's samples together)."""
    idx = [i for i, m in enumerate(meas) if m.get(prov, {}).get("rounds")]
    if len(idx) < 4:
        return None
    n_rounds = min(len(meas[i][prov]["rounds"]) for i in idx)
    rounds = [meas[i][prov]["rounds"][:n_rounds] for i in idx]
    mults = [tuple(points[i].realised) for i in idx]

    def medians(chosen: Sequence[int]) -> List[float]:
        return [_median([v for r in chosen for v in rd[r]]) for rd in rounds]

    on_path = {}
    for path in PATHS:
        on = [j for j, i in enumerate(idx) if points[i].path in ("base", path)]
        if len(on) >= 2 and any(points[idx[j]].path == path for j in on):
            on_path[path] = on

    def estimate(med: List[float]) -> Tuple[ExponentFit, Dict[str, float]]:
        slopes = {path: fit_slope([points[idx[j]].flops_ratio for j in on], [med[j] for j in on])
                  for path, on in on_path.items()}
        return fit_exponents(mults, med), slopes

    try:
        fit, slopes = estimate(medians(range(n_rounds)))
    except ValueError:
        return None
    per_round = [fit_exponents(mults, medians([r])).exponents() for r in range(n_rounds)]
    rng = random.Random(seed)
    boot_exp = {d: [] for d in DIMS}
    boot_slope = {path: [] for path in on_path}
    if n_rounds > 1:
        for _ in range(BOOTSTRAP):
            f, sl = estimate(medians([rng.randrange(n_rounds) for _ in range(n_rounds)]))
            for d in DIMS:
                boot_exp[d].append(getattr(f, d))
            for path, v in sl.items():
                boot_slope[path].append(v)

    def sd(v: List[float]) -> float:
        return statistics.pstdev(v) if len(v) > 1 else 0.0

    spread = {d: max(fit.se[d], sd(boot_exp[d])) if math.isfinite(fit.se[d]) else sd(boot_exp[d]) for d in DIMS}
    paths = {}
    for path, s in slopes.items():
        e = sd(boot_slope[path])
        paths[path] = {"flops_slope": s, "flops_slope_spread": e, "per_2x_flops": 2 ** s,
                       "per_2x_flops_range": [2 ** (s - e), 2 ** (s + e)]}
    return {**fit.as_dict(), "spread": spread, "spread_method": f"max(least-squares se, sd over {BOOTSTRAP} "
            f"bootstrap resamples of the {n_rounds} rounds)", "per_round": per_round, "paths": paths,
            "vs_flops": None}


@dataclass
class ScalingProfile:
    """The result of :func:`scaling_profile`: the points with their samples, the fits per provider and of
    the multiply-adds, and what they mean here in words. ``as_dict()`` is what ``effnet-bench scaling``
    writes as JSON."""
    settings: dict
    points: List[ScalePoint]
    measurements: List[dict]
    fits: Dict[str, Optional[dict]]
    flops_fit: dict
    words: List[str]
    interrupted: bool = False
    machine: dict = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict:
        pts = []
        for p, m in zip(self.points, self.measurements):
            d = p.as_dict()
            d["fused_rel_err"] = m.get("fused_rel_err")
            for prov in self.settings["providers"]:
                d[f"{prov}_err64"] = m.get(f"{prov}_err64")
            d["accuracy_ok"] = accuracy_ok(m)
            d["errors"] = m.get("errors", {})
            d["providers"] = {}
            for prov in self.settings["providers"]:
                if m.get(prov, {}).get("rounds"):
                    samples = [v for rd in m[prov]["rounds"] for v in rd]
                    d["providers"][prov] = {"median_ms": _median(samples),
                                            "q1_ms": _quartiles(samples)[0], "q3_ms": _quartiles(samples)[1],
                                            "round_medians_ms": [_median(rd) for rd in m[prov]["rounds"]],
                                            "rounds_ms": m[prov]["rounds"]}
            pts.append(d)
        return {"schema": SCHEMA_ID, "machine": self.machine, "settings": self.settings, "points": pts,
                "fits": {"flops": self.flops_fit, **self.fits}, "words": self.words,
                "complete": not self.interrupted, "interrupted": self.interrupted, "seconds": self.seconds}

    def markdown(self) -> str:
        from .bench.scaling import markdown
        return markdown(self.as_dict())


SCHEMA_ID = "effnet-bench-scaling/1"


def _quartiles(v: Sequence[float]) -> Tuple[float, float]:
    if len(v) < 2:
        return v[0], v[0]
    q = statistics.quantiles(sorted(v), n=4, method="inclusive")
    return q[0], q[2]


def describe(fits: Dict[str, Optional[dict]], flops_fit: dict) -> List[str]:
    """What the fits say, in words: the latency cost of doubling FLOPs through each dimension, the fitted
    exponents against the FLOPs exponents, and the cheapest dimension per FLOP here."""
    lines = []
    f = flops_fit
    lines.append(f"FLOPs (multiply-adds) here grow as d^{f['depth']:.2f} · w^{f['width']:.2f} · "
                 f"r^{f['resolution']:.2f} (the ideal 1, 2, 2 less what the stem, head and the linear-in-width "
                 f"layers do not scale).")
    for prov, fit in fits.items():
        if not fit:
            continue
        paths = fit["paths"]
        parts = [f"through {p} ×{paths[p]['per_2x_flops']:.2f}" for p in ("resolution", "width", "depth", "compound")
                 if p in paths]
        if parts:
            lines.append(f"{prov}: doubling FLOPs " + ", ".join(parts) + " latency "
                         "(×2.00 would be FLOPs-proportional).")
        lines.append(f"{prov}: latency ∝ d^{fit['depth']:.2f}±{fit['spread']['depth']:.2f} · "
                     f"w^{fit['width']:.2f}±{fit['spread']['width']:.2f} · "
                     f"r^{fit['resolution']:.2f}±{fit['spread']['resolution']:.2f} — "
                     + ", ".join(f"{d} {fit[d] / f[d]:.2f}× its FLOPs exponent" for d in DIMS) + ".")
        one_d = {p: paths[p]["per_2x_flops"] for p in DIMS if p in paths}
        if len(one_d) == 3:
            cheap, dear = min(one_d, key=one_d.get), max(one_d, key=one_d.get)
            ranges = {p: paths[p]["per_2x_flops_range"] for p in DIMS}
            if ranges[cheap][1] < ranges[dear][0]:
                lines.append(f"{prov}: per FLOP, {cheap} is the cheapest dimension to grow here and {dear} the "
                             f"dearest (×{one_d[cheap]:.2f} against ×{one_d[dear]:.2f} per doubling; their ±1 sd "
                             f"ranges within this run do not overlap).")
            else:
                lines.append(f"{prov}: per FLOP, this run does not tell depth, width and resolution apart "
                             f"(×{one_d[cheap]:.2f} through {cheap} to ×{one_d[dear]:.2f} through {dear}, "
                             f"their ±1 sd ranges overlapping).")
    return lines


def scaling_profile(base_phi=0, *, device=None, dtype: Optional[torch.dtype] = None, batch: int = 1,
                    points: int = 6, flops_max: float = 2.0, rounds: int = 11, per_round: int = 5,
                    providers=("fused", "eager"), resolution: Optional[int] = None, alpha=None, beta=None,
                    gamma=None, progress: Optional[Callable[[str], None]] = None) -> ScalingProfile:
    """Measure what depth, width and resolution cost on ``device`` around ``base_phi`` (see the module
    docstring): the points of :func:`scaling_points` timed with :func:`time_specs` (``providers``: "fused",
    "eager" — eager PyTorch NCHW), the fits per provider and of the multiply-adds, and the words.
    ``device`` defaults to CUDA when present, else the CPU; ``dtype`` to fp16 on a GPU, fp32 on the CPU."""
    from .timing import resolve_device_dtype

    t0 = time.perf_counter()
    dev, dtype = resolve_device_dtype(device, dtype)
    batch = _check_count(batch, "batch", 1, 4096)
    rounds = _check_count(rounds, "rounds", 1, 1000)
    per_round = _check_count(per_round, "per_round", 1, 1000)
    providers = tuple(providers)
    pts = scaling_points(base_phi, points, flops_max, resolution, alpha, beta, gamma)
    meas, meta = time_specs([p.spec for p in pts], providers, dev, dtype, batch, rounds, per_round, progress)
    while len(meas) < len(pts):  # interrupted while building
        meas.append({"errors": {"all": "not built (interrupted)"}})
    flops = fit_exponents([tuple(p.realised) for p in pts], [p.macs for p in pts])
    flops_fit = flops.as_dict()
    flops_fit["paths"] = {path: {"flops_slope": 1.0} for path in PATHS}
    fits = {prov: _provider_fit(pts, meas, prov) for prov in providers}
    for fit in fits.values():
        if fit:
            fit["vs_flops"] = {d: fit[d] / flops_fit[d] for d in DIMS}
    co = coefficients(alpha, beta, gamma)
    settings = {"base_phi": float(base_phi), "resolution": pts[0].spec.resolution, "points": points,
                "flops_max": flops_max, "rounds": rounds, "per_round": per_round, "batch": batch,
                "device": str(dev), "dtype": str(dtype).replace("torch.", ""), "providers": list(providers),
                "coefficients": None if co is None else co._asdict(), "threads": torch.get_num_threads()}
    return ScalingProfile(settings=settings, points=pts, measurements=meas, fits=fits, flops_fit=flops_fit,
                          words=describe(fits, flops_fit), interrupted=meta["interrupted"],
                          seconds=round(time.perf_counter() - t0, 1))
