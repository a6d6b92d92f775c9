"""The paper's step 1 as an API: a grid search of α, β, γ whose φ = 1 model costs ``target`` x the base.

Tan & Le fix φ = 1, assume twice the resources, and search α, β, γ under α·β²·γ² ≈ 2 for the most accurate
model; EfficientNet-X (Li, Tan et al. 2021) searches under measured latency instead. :func:`grid_search`
does either on this device, with your accuracy::

    import effnet_kernels as ek

    def evaluate(model):                       # yours: train briefly / fine-tune, then score on your data
        return my_validation_accuracy(model)

    res = ek.grid_search(evaluate, cost="latency", target=2.0, step=0.1, tolerance=0.1)
    print(res.table())                         # ranked; res.best["alpha"], res.best["beta"], res.best["gamma"]
    ek.efficientnet(3, alpha=res.best["alpha"], beta=res.best["beta"], gamma=res.best["gamma"])

Every α, β, γ on the grid ``lo, lo + step, …, hi`` (default 1…2 by 0.05) gives the pure-power φ = 1 model
(:func:`~effnet_kernels.scaling.compound`: depth α, width β, resolution round(224·γ)). ``cost="flops"``
keeps those whose multiply-adds (:func:`~effnet_kernels.scaling.model_cost`, after rounding — not the ideal
α·β²·γ², also reported) are within ``tolerance`` of ``target`` x the base's (B0). ``cost="latency"`` first
keeps those whose FLOPs ratio lies in ``flops_window`` (default target^(2/3)…target^1.5: the range a
device's price per FLOP can move a latency ratio of ``target`` to), then times the fused model of every
distinct survivor and the base, interleaved, and keeps those whose median latency ratio is within
``tolerance`` of ``target``. ``evaluate(model) -> float`` is called once per distinct architecture (grid points
that round to the same network share it; pass ``cache={}`` to share across calls), on a freshly built,
randomly initialised ``efficientnet`` in eval mode (``build(spec)`` to build it yourself). The table is ranked
by the score: ``evaluate``'s value, or with ``reward=(T, w)`` the MnasNet / EfficientNet-X reward
``score · (cost / T)^w`` (cost: the latency in ms, or the multiply-adds, per the ``cost`` searched; the paper
uses w = -0.07). Nothing is downloaded: the accuracy is yours.
"""
from __future__ import annotations

import math
import numbers
import statistics
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import torch

from .scaling import ArchSpec, arch_spec, model_cost

COSTS = ("flops", "latency")


def _real(value, name: str, lo: float, hi: float, lo_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number in {'(' if lo_open else '['}{lo:g}, {hi:g}], got "
                        f"{type(value).__name__} {value!r}")
    v = float(value)
    if not (math.isfinite(v) and (v > lo if lo_open else v >= lo) and v <= hi):
        raise ValueError(f"{name} must be a number in {'(' if lo_open else '['}{lo:g}, {hi:g}], got {value!r}")
    return v


def grid_values(lo: float, hi: float, step: float) -> List[float]:
    """``lo, lo + step, …, hi``: ``hi - lo`` must be a whole number of steps."""
    lo, hi = _real(lo, "lo", 1.0, 16.0), _real(hi, "hi", 1.0, 16.0)
    step = _real(step, "step", 0.0, 1.0, lo_open=True)
    if hi < lo:
        raise ValueError(f"hi must be >= lo, got lo={lo:g} hi={hi:g}")
    n = (hi - lo) / step
    if abs(n - round(n)) > 1e-6:
        raise ValueError(f"step must divide hi - lo into whole steps, got lo={lo:g} hi={hi:g} step={step:g}")
    return [round(lo + k * step, 10) for k in range(int(round(n)) + 1)]


@dataclass
class GridSearchResult:
    """The grid points that meet the constraint, ranked by score (best first), and how the search went."""
    rows: List[dict]
    cost: str
    target: float
    tolerance: float
    step: float
    base: dict                      # the base model: name, macs, params (and latency_ms when measured)
    evaluations: int                # calls of evaluate (distinct architectures not in the cache)
    grid_points: int                # α, β, γ combinations looked at
    measured: int = 0               # distinct architectures timed (cost="latency")
    reward: Optional[tuple] = None
    notes: List[str] = field(default_factory=list)

    @property
    def best(self) -> dict:
        return self.rows[0]

    def as_dict(self) -> dict:
        return {"rows": self.rows, "cost": self.cost, "target": self.target, "tolerance": self.tolerance,
                "step": self.step, "base": self.base, "evaluations": self.evaluations,
                "grid_points": self.grid_points, "measured": self.measured, "reward": self.reward,
                "notes": self.notes}

    def table(self, top: int = 20) -> str:
        """The first ``top`` rows as a Markdown table."""
        lat = self.cost == "latency"
        lines = [f"cost {self.cost}, target {self.target:g}× the base within ±{100 * self.tolerance:g} %, step "
                 f"{self.step:g}; {self.grid_points} grid points, {len(self.rows)} meet it, {self.evaluations} "
                 f"evaluated" + (f", {self.measured} timed" if lat else ""), "",
                 "| rank | α | β | γ | α·β²·γ² | FLOPs × | " + ("latency × | latency ms | " if lat else "")
                 + "blocks | res | score |" + (" evaluate |" if self.reward else ""),
                 "|" + "---|" * (9 + 2 * lat + bool(self.reward))]
        for i, r in enumerate(self.rows[:top]):
            cells = [str(i + 1), f"{r['alpha']:g}", f"{r['beta']:g}", f"{r['gamma']:g}", f"{r['ideal_flops']:.3f}",
                     f"{r['flops_ratio']:.3f}"]
            if lat:
                cells += [f"{r['latency_ratio']:.3f}", f"{r['latency_ms']:.2f}"]
            cells += [str(r["blocks"]), str(r["resolution"]), f"{r['score']:.4g}"]
            if self.reward:
                cells.append(f"{r['evaluate']:.4g}")
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)


def _measure_fused(specs: Sequence[ArchSpec], device, dtype, batch, rounds, per_round, progress) -> List[float]:
    from .balance import time_specs
    res, meta = time_specs(specs, ("fused",), device, dtype, batch, rounds, per_round, progress)
    if meta["interrupted"]:
        raise KeyboardInterrupt
    out = []
    for spec, r in zip(specs, res):
        if not r.get("fused", {}).get("rounds"):
            raise RuntimeError(f"grid_search: the fused model of {spec.name} could not be timed: {r.get('errors')}")
        out.append(statistics.median(v for rd in r["fused"]["rounds"] for v in rd))
    return out


def grid_search(evaluate: Callable[[torch.nn.Module], float], cost: str = "flops", target: float = 2.0,
                step: float = 0.05, tolerance: float = 0.05, *, lo: float = 1.0, hi: float = 2.0,
                base_resolution: int = 224, reward=None, flops_window=None, max_measured: int = 64,
                num_classes: int = 1000, build: Optional[Callable[[ArchSpec], torch.nn.Module]] = None,
                cache: Optional[dict] = None, device=None, dtype=None, batch: int = 1, rounds: int = 3,
                per_round: int = 3, measure: Optional[Callable[[List[ArchSpec]], List[float]]] = None,
                progress: Optional[Callable[[str], None]] = None) -> GridSearchResult:
    """Grid-search α, β, γ (see the module docstring). ``measure(specs) -> [median ms]`` replaces the timing
    for ``cost="latency"`` (``specs[0]`` is the base); ``device``/``dtype``/``batch``/``rounds``/``per_round``
    set the default timing (as :func:`~effnet_kernels.scaling_profile`). Raises ValueError when no grid point
    meets the constraint (naming the nearest) or when more than ``max_measured`` architectures would have to
    be timed."""
    if not callable(evaluate):
        raise TypeError(f"evaluate must be a callable evaluate(model) -> float, got {type(evaluate).__name__}")
    if cost not in COSTS:
        raise ValueError(f"cost must be one of {COSTS}, got {cost!r}")
    target = _real(target, "target", 1.0, 64.0, lo_open=True)
    tolerance = _real(tolerance, "tolerance", 0.0, 0.5, lo_open=True)
    values = grid_values(lo, hi, step)
    if reward is not None:
        if not isinstance(reward, (tuple, list)) or len(reward) != 2:
            raise TypeError(f"reward must be a (T, w) pair, got {reward!r}")
        reward = (_real(reward[0], "reward T", 0.0, float("inf"), lo_open=True),
                  _real(reward[1], "reward w", -10.0, 10.0))
    if cost == "latency":
        if flops_window is None:
            flops_window = (target ** (2 / 3), target ** 1.5)
        if not isinstance(flops_window, (tuple, list)) or len(flops_window) != 2:
            raise TypeError(f"flops_window must be a (low, high) pair of FLOPs ratios, got {flops_window!r}")
        fw = (_real(flops_window[0], "flops_window low", 0.0, 1e3, lo_open=True),
              _real(flops_window[1], "flops_window high", 0.0, 1e3, lo_open=True))
        if fw[1] < fw[0]:
            raise ValueError(f"flops_window must be (low, high) with low <= high, got {flops_window!r}")
        if isinstance(max_measured, bool) or not isinstance(max_measured, int) or max_measured < 1:
            raise ValueError(f"max_measured must be an int >= 1, got {max_measured!r}")
        if measure is None:  # refused now, not after the filtering
            from .balance import _check_count
            from .timing import resolve_device_dtype
            timing_device = resolve_device_dtype(device, dtype)
            batch = _check_count(batch, "batch", 1, 4096)
            rounds = _check_count(rounds, "rounds", 1, 1000)
            per_round = _check_count(per_round, "per_round", 1, 1000)
    if build is not None and not callable(build):
        raise TypeError(f"build must be a callable build(spec) -> model or None, got {type(build).__name__}")
    if cache is not None and not isinstance(cache, dict):
        raise TypeError(f"cache must be a dict or None, got {type(cache).__name__}")
    cache = {} if cache is None else cache

    base = arch_spec(0, alpha=1.0, base_resolution=base_resolution)  # φ = 0 of any family: B0 at that size
    base_cost = model_cost(base)
    costs: Dict[tuple, tuple] = {}
    rows: List[dict] = []
    nearest = None
    for a in values:
        for b in values:
            for g in values:
                spec = arch_spec(1, alpha=a, beta=b, gamma=g, base_resolution=base_resolution)
                if spec.layout not in costs:
                    c = model_cost(spec)
                    costs[spec.layout] = (c.macs, c.params)
                macs, params = costs[spec.layout]
                ratio = macs / base_cost.macs
                if cost == "flops":
                    off = abs(ratio / target - 1)
                    keep = off <= tolerance
                    if nearest is None or off < nearest[0]:
                        nearest = (off, a, b, g, ratio)
                else:
                    keep = fw[0] <= ratio <= fw[1]
                if keep:
                    rows.append({"alpha": a, "beta": b, "gamma": g, "ideal_flops": a * b * b * g * g,
                                 "flops_ratio": ratio, "macs": macs, "params": params,
                                 "blocks": len(spec.blocks), "width": spec.scaling.width,
                                 "resolution": spec.resolution, "spec": spec})
    n_grid = len(values) ** 3
    base_info = {"name": base.name, "macs": base_cost.macs, "params": base_cost.params,
                 "resolution": base.resolution}
    notes: List[str] = []
    measured = 0
    if cost == "latency":
        distinct: Dict[tuple, ArchSpec] = {}
        for r in rows:
            distinct.setdefault(r["spec"].layout, r["spec"])
        if len(distinct) > max_measured:
            raise ValueError(f"{len(distinct)} distinct architectures have a FLOPs ratio in {fw[0]:.3g}…{fw[1]:.3g} "
                             f"(of {n_grid} grid points); timing more than max_measured={max_measured} takes too "
                             f"long: use a coarser step, a narrower flops_window or raise max_measured")
        specs = [base] + list(distinct.values())
        if measure is None:
            dev, dt = timing_device
            lat = _measure_fused(specs, dev, dt, batch, rounds, per_round, progress)
            notes.append(f"latency: the fused model on {dev}, {str(dt).replace('torch.', '')}, batch {batch}, median of "
                         f"{rounds} interleaved rounds of {per_round} runs")
        else:
            lat = list(measure(specs))
            if len(lat) != len(specs) or not all(isinstance(v, numbers.Real) and math.isfinite(v) and v > 0
                                                 for v in lat):
                raise ValueError(f"measure must return one finite latency > 0 per spec ({len(specs)}), got {lat!r}")
        measured = len(specs) - 1
        base_info["latency_ms"] = float(lat[0])
        by_layout = {s.layout: float(v) for s, v in zip(specs[1:], lat[1:])}
        kept = []
        for r in rows:
            r["latency_ms"] = by_layout[r["spec"].layout]
            r["latency_ratio"] = r["latency_ms"] / base_info["latency_ms"]
            off = abs(r["latency_ratio"] / target - 1)
            if nearest is None or off < nearest[0]:
                nearest = (off, r["alpha"], r["beta"], r["gamma"], r["latency_ratio"])
            if off <= tolerance:
                kept.append(r)
        rows = kept
    if not rows:
        what = "FLOPs" if cost == "flops" else "latency"
        detail = (f"; nearest: alpha={nearest[1]:g} beta={nearest[2]:g} gamma={nearest[3]:g} at {nearest[4]:.3f}x"
                  if nearest else "; none in the flops_window")
        raise ValueError(f"no grid point's {what} ratio is within {100 * tolerance:g} % of target={target:g}{detail}: "
                         f"raise tolerance or use a finer step")
    evaluations = 0
    for r in rows:
        key = r["spec"].layout
        if key not in cache:
            model = build(r["spec"]) if build is not None else _default_build(r["spec"], num_classes)
            v = evaluate(model)
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
                raise ValueError(f"evaluate must return a finite number, got {v!r} for {r['spec'].name}")
            cache[key] = float(v)
            evaluations += 1
            del model
            if progress:
                progress(f"evaluated {r['spec'].name}: {float(v):.4g}")
        r["evaluate"] = cache[key]
        c = r["latency_ms"] if cost == "latency" else r["macs"]
        r["score"] = r["evaluate"] * (c / reward[0]) ** reward[1] if reward else r["evaluate"]
    cost_key = "latency_ratio" if cost == "latency" else "flops_ratio"
    rows.sort(key=lambda r: (-r["score"], r[cost_key], r["alpha"], r["beta"], r["gamma"]))
    for r in rows:
        r["name"] = r.pop("spec").name
    return GridSearchResult(rows=rows, cost=cost, target=target, tolerance=tolerance, step=float(step),
                            base=base_info, evaluations=evaluations, grid_points=n_grid, measured=measured,
                            reward=reward, notes=notes)


def _default_build(spec: ArchSpec, num_classes: int) -> torch.nn.Module:
    from .models import efficientnet
    return efficientnet(spec, num_classes=num_classes).eval()
