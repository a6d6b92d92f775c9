"""Which φ fits a budget? The largest compound coefficient (to 0.01) whose cost or measured latency fits.

    import effnet_kernels as ek
    ek.fit_phi(macs=1e9)                    # by multiply-adds per image: no measuring
    ek.fit_phi(params=10e6)                 # by parameter count
    ek.fit_phi(latency_ms=20)               # by the fused model's latency measured on this device
    ek.fit_phi(latency_ms=20, macs=1e9, device="cuda", batch=8)   # every budget given must hold
    ek.fit_phi(latency_ms=20, alpha=1.4, beta=1.05, gamma=1.1)    # in your own compound-scaling family

The search runs on the grid φ = k/100: it doubles φ from 1 until a φ does not fit (or ``phi_max`` is
reached), then bisects between the last φ that fits and the first that does not. Parameter and multiply-add
counts grow monotonically with φ (width, depth and resolution each do, and the rounding of each keeps its
order), so for them the answer is exactly the largest φ on the grid that fits. Measured latency is noisy: a
φ is taken to fit when the median of its runs is within the budget, and the answer comes with the spread of
its runs.
"""
from __future__ import annotations

import math
import numbers
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional

import torch

from .scaling import arch_spec, coefficients, model_cost

GRID = 100  # φ steps per unit: answers are multiples of 0.01


@dataclass
class FitResult:
    """The largest φ that fits, what it is and what it costs (``latency_ms``/``spread_ms`` when a latency
    budget was given). ``at_phi_max``: ``phi_max`` itself fits, so the budget would allow more."""
    phi: float
    width: float
    depth: float
    resolution: int
    params: int
    macs: int
    latency_ms: Optional[float]
    spread_ms: Optional[float]
    budgets: Dict[str, float]
    at_phi_max: bool
    device: str
    batch: int
    dtype: str
    evaluated: List[dict] = field(default_factory=list)  # every φ looked at, in order, with its numbers
    # the custom α, β, γ and base resolution of the family searched; None: the official table's rule
    coefficients: Optional[Dict[str, float]] = None

    def as_dict(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        """One line: ``phi=…`` then what the model at that φ is and costs."""
        s = (f"phi={self.phi:.2f} width={self.width:.3f} depth={self.depth:.3f} resolution={self.resolution} "
             f"params={self.params / 1e6:.2f}M macs={self.macs / 1e9:.3f}G")
        if self.latency_ms is not None:
            s += (f" latency={self.latency_ms:.2f}ms±{self.spread_ms:.2f} (fused, {self.device}, batch {self.batch}, "
                  f"{self.dtype})")
        if self.coefficients:
            s += " ({})".format(", ".join(f"{k}={v:g}" for k, v in self.coefficients.items()))
        if self.at_phi_max:
            s += " (phi_max reached: the budget allows more)"
        return s


def check_budget(value, name: str) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a positive number, got {type(value).__name__} {value!r}")
    v = float(value)
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return v


def measure_fused_latency(phi, device="cpu", batch: int = 1, dtype: torch.dtype = torch.float32,
                          rounds: int = 3, per_round: int = 5) -> dict:
    """The latency of ``fuse(efficientnet(phi))`` (``phi``: a φ or an ArchSpec) on ``device`` at ``batch`` (its own resolution, random
    weights, calibrated BN statistics): median and quartiles of ``rounds × per_round`` runs after warm-up,
    and ``spread_ms`` — the larger of the interquartile range and the range of the per-round medians. CUDA
    batch-1 runs replay a CUDA graph."""
    from .testing import build_model
    from .timing import cuda_graphed, exact_fp32, summarize, time_fn
    from .fuse import fuse

    device = torch.device(device)
    res = arch_spec(phi).resolution
    x = torch.randn(batch, 3, res, res, generator=torch.Generator().manual_seed(1)).to(device, dtype)
    model = fuse(build_model(phi, device, dtype), example_inputs=x[:1])
    with torch.inference_mode(), exact_fp32(device):
        fn = cuda_graphed(model, x) if device.type == "cuda" and batch == 1 else (lambda: model(x))
        samples, medians = [], []
        for r in range(rounds):
            s = time_fn(fn, warmup=2 if r == 0 else 0, repeats=per_round, device=device)
            samples += s
            medians.append(statistics.median(s) * 1e3)
    out = summarize(samples)
    out["spread_ms"] = max(out["q3_ms"] - out["q1_ms"], max(medians) - min(medians))
    return out


def fit_phi(latency_ms=None, macs=None, params=None, *, device=None, batch: int = 1, dtype=None,
            phi_max: float = 12.0, measure: Optional[Callable[[float], dict]] = None,
            progress: Optional[Callable[[str], None]] = None, alpha=None, beta=None, gamma=None,
            base_resolution: int = 224) -> FitResult:
    """The largest φ (a multiple of 0.01, at most ``phi_max``) whose model fits every budget given:
    ``latency_ms`` — the fused model's median latency on ``device`` (default: CUDA when present, else the CPU;
    fp16 on a GPU, fp32 on the CPU unless ``dtype``) at ``batch`` (measured; ``measure(phi)``
    replaces the measurement, returning at least ``median_ms`` and ``spread_ms``); ``macs`` — multiply-adds
    per image at the φ's resolution; ``params`` — parameters. Raises ValueError when not even φ = 0 fits.
    ``alpha``, ``beta``, ``gamma``, ``base_resolution``: search the pure-power family of those coefficients
    (:func:`~effnet_kernels.scaling.compound`) instead of the official table."""
    co = coefficients(alpha, beta, gamma, base_resolution)

    def spec(phi):
        return arch_spec(phi) if co is None else arch_spec(phi, *co)

    budgets = {"latency_ms": check_budget(latency_ms, "latency_ms"), "macs": check_budget(macs, "macs"),
               "params": check_budget(params, "params")}
    budgets = {k: v for k, v in budgets.items() if v is not None}
    if not budgets:
        raise ValueError("fit_phi needs a budget: latency_ms, macs or params (got none)")
    if isinstance(phi_max, bool) or not isinstance(phi_max, numbers.Real) or not (0 <= float(phi_max) <= 40):
        raise ValueError(f"phi_max must be a number in [0, 40], got {phi_max!r}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be an int >= 1, got {batch!r}")
    from .timing import resolve_device_dtype

    dev, dtype = resolve_device_dtype(device, dtype)
    if measure is None and "latency_ms" in budgets:
        def measure(phi):
            return measure_fused_latency(phi if co is None else spec(phi), dev, batch, dtype)

    k_max = int(math.floor(float(phi_max) * GRID + 1e-9))
    evaluated: List[dict] = []
    seen: Dict[int, dict] = {}

    def fits(k: int) -> bool:
        if k in seen:
            return seen[k]["fits"]
        phi = k / GRID
        cost = model_cost(spec(phi))
        ev = {"phi": phi, "params": cost.params, "macs": cost.macs, "fits": True}
        if "params" in budgets and cost.params > budgets["params"]:
            ev["fits"] = False
        if "macs" in budgets and cost.macs > budgets["macs"]:
            ev["fits"] = False
        if ev["fits"] and "latency_ms" in budgets:  # measure only what the cheap budgets allow
            t0 = time.perf_counter()
            m = measure(phi)
            ev.update(latency_ms=m["median_ms"], spread_ms=m["spread_ms"], seconds=time.perf_counter() - t0)
            ev["fits"] = m["median_ms"] <= budgets["latency_ms"]
        seen[k] = ev
        evaluated.append(ev)
        if progress:
            extra = f" latency {ev['latency_ms']:.2f} ms" if "latency_ms" in ev else ""
            progress(f"phi={phi:.2f}: params {cost.params / 1e6:.2f}M macs {cost.macs / 1e9:.3f}G{extra} -> "
                     f"{'fits' if ev['fits'] else 'does not fit'}")
        return ev["fits"]

    if not fits(0):
        ev = seen[0]
        over = [f"{k}={ev[k] if k != 'latency_ms' else round(ev[k], 3)} > {v:g}" for k, v in budgets.items()
                if k in ev and ev[k] > v]
        raise ValueError(f"no phi >= 0 fits the budget: at phi=0 {', '.join(over)}")
    lo, hi = 0, None
    step = GRID
    while hi is None:
        k = min(lo + step, k_max) if lo < k_max else k_max
        if k == lo:  # phi_max itself fits
            break
        if fits(k):
            lo = k
            step *= 2
        else:
            hi = k
    if hi is not None:
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if fits(mid):
                lo = mid
            else:
                hi = mid
    phi = lo / GRID
    sc = spec(phi).scaling
    ev = seen[lo]
    return FitResult(phi=phi, width=sc.width, depth=sc.depth, resolution=sc.resolution, params=ev["params"],
                     macs=ev["macs"], latency_ms=ev.get("latency_ms"), spread_ms=ev.get("spread_ms"),
                     budgets=budgets, at_phi_max=hi is None, device=str(dev), batch=batch,
                     dtype=str(dtype).replace("torch.", ""), evaluated=evaluated,
                     coefficients=None if co is None else co._asdict())
