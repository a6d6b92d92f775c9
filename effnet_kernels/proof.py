"""Prove a swap: a fused module against the source module it replaces, on the source's real input.

``prove(fused, source, args, kwargs)`` runs both on the input the source saw in the model's sample forward
pass, and on a second input of another parity and batch (:func:`effnet_kernels.graph.probe_input`), with a
float64 run of the source as the reference (:func:`effnet_kernels.float64.float64_call`). The fused output
may be at most :data:`FACTOR` times further from float64 than the source's own output is, in the L2 norm and
in the largest element, the source's error the larger of two runs (NCHW and channels_last inputs: eager sums
in other orders) and no smaller than :data:`FLOOR` per layer relative (it can be ~0: short sums, a 1x1
image). A depthwise bias off by 0.01 in one channel, a wrong stride, padding or activation exceed this by
orders of magnitude.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn

from .float64 import float64_call
from .graph import probe_input

__all__ = ["prove", "errors", "FACTOR", "FLOOR"]

# the fused module may be this many times further from float64 than the source's own fp32 pass (the tests'
# bound for whole models, measured up to 1.8x on B0-B5 from several libraries)
FACTOR = 4.0
# the least relative error taken for the source's, per layer of the fused module: the fused kernels round where
# the source does not (BN folded into the weights, SiLU and sigmoid through a polynomial exp), a few units of
# fp32 roundoff per layer
FLOOR = 16 * 2.0 ** -24


def errors(y: torch.Tensor, ref: torch.Tensor) -> Tuple[float, float]:
    """(‖y − ref‖₂ / ‖ref‖₂, max |y − ref|) against a float64 ref."""
    d = (y.double() - ref).flatten()
    return d.norm().item() / max(ref.norm().item(), 1e-300), (d.abs().max().item() if d.numel() else 0.0)


def _first_tensor(out):
    if isinstance(out, torch.Tensor):
        return out
    raise TypeError(f"the source returned {type(out).__name__}, not a tensor")


def prove(fused: nn.Module, source: nn.Module, args: Sequence, kwargs: Optional[dict] = None,
          layers: int = 1) -> Optional[str]:
    """None when ``fused`` computes what ``source`` does on ``args`` (the first a tensor, the image) and on a
    second shape; else the reason ("computes something else (rel err ...)")."""
    kwargs = dict(kwargs or {})
    x = args[0]
    rest = tuple(args[1:])
    floor = FLOOR * max(1, layers)
    shapes = [x]
    if x.dim() == 4 and x.shape[-1] > 0:
        shapes.append(probe_input(x))
    for i, xi in enumerate(shapes):
        with torch.no_grad():
            try:
                y32 = _first_tensor(source(xi, *rest, **kwargs))
                # the source's rounding noise from two runs that sum in other orders (NCHW and channels_last
                # inputs): one run's error alone can be small by luck
                other = xi.contiguous(memory_format=torch.channels_last) if xi.is_contiguous() else xi.contiguous()
                y32b = _first_tensor(source(other, *rest, **kwargs))
                ref = _first_tensor(float64_call(source, xi.double(), *rest, **kwargs))
            except Exception:
                if i == 0:
                    raise
                break  # the source does not run at the second shape (a fixed-size model): the first proves it
            try:
                got = fused(xi)
            except Exception as e:  # noqa: BLE001  (what the fused module cannot run, it does not replace)
                return f"its fused form fails on the input the source takes ({type(e).__name__}: {e})"
        if got.shape != ref.shape:
            return f"computes another shape ({tuple(got.shape)}, the source {tuple(ref.shape)})"
        if not torch.isfinite(ref).all():
            same = torch.equal(torch.isfinite(got), torch.isfinite(ref))
            if not same:
                return "computes something else (non-finite values elsewhere than the source's)"
            mask = torch.isfinite(ref)
            got, y32, y32b, ref = got[mask], y32[mask], y32b[mask], ref[mask]
        (er, em), (er2, em2) = errors(y32, ref), errors(y32b, ref)
        er, em = max(er, er2), max(em, em2)
        fr, fm = errors(got, ref)
        scale = ref.abs().max().item() if ref.numel() else 0.0
        if fr > FACTOR * max(er, floor) or fm > FACTOR * max(em, floor * scale, 1e-30):
            where = "" if i == 0 else f" at input {tuple(xi.shape)}"
            return (f"computes something else{where} (rel err {fr:.3g} against float64, the source's own "
                    f"{er:.3g}; max err {fm:.3g}, the source's {em:.3g})")
    return None
