"""The depthwise conv + bias + activation (SiLU by default; + pool) through the C++ kernels: plan per geometry, packed weights,
output allocation, the call. Arguments are validated by the caller (``ops``) or here with ``validate=True``."""
from __future__ import annotations

from typing import Optional

import torch

from .._ext import _C, require_cpp
from ..ops._validate import check_act, check_dwconv_args, output_memory_format, output_size
from . import _isa
from ._cache import _MAX_PLANS, _cached_pack, _F32, _plans



def _plan(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, stride: int, padding: str, isa: str,
          act: str = "silu"):
    key = (x.shape, x.stride(), weight.shape, bias.shape, stride, padding, isa, act)
    entry = _plans.get(key)
    if entry is None:
        C = _C if _C is not None else require_cpp("the C++ depthwise kernel")
        n, c, h, w = x.shape
        k = weight.shape[-1]
        top, left, out_h, out_w = output_size(h, w, k, stride, padding)
        fmt = output_memory_format(x)
        shape = (n, c, out_h, out_w)
        y_strides = torch.empty(shape, dtype=torch.float32, memory_format=fmt, device="meta").stride()
        plan = C.DwPlan(x.shape, x.stride(), k, stride, top, left, out_h, out_w, y_strides, isa, act)
        entry = (plan, shape, y_strides, plan.packed_size, isa)
        if len(_plans) >= _MAX_PLANS:
            _plans.clear()
        _plans[key] = entry
    return entry


def _packed_weights(plan, size: int, isa: str, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    def fill(out):
        w, b = weight.contiguous(), bias.contiguous()
        plan.pack(w.data_ptr(), b.data_ptr(), out.data_ptr())
    return _cached_pack("dw", (weight, bias), isa, size, fill)


def _run(x, weight, bias, pool, entry):
    plan, shape, y_strides, pack_size, isa = entry
    y = torch.empty_strided(shape, y_strides)  # (3 µs; torch.empty with a memory format takes 6)
    packed = None  # held until the call returns
    if pack_size:
        packed = _packed_weights(plan, pack_size, isa, weight, bias)
    else:
        if not weight.is_contiguous():
            weight = weight.contiguous()
        if not bias.is_contiguous():
            bias = bias.contiguous()
    pooled = torch.empty_strided((shape[0], shape[1]), (shape[1], 1)) if pool else None
    # With packed weights the kernel reads only those; weight/bias are passed for the other paths.
    plan.run(x.data_ptr(), weight.data_ptr(), bias.data_ptr(), y.data_ptr(), pooled.data_ptr() if pool else 0,
             torch.get_num_threads(), 0 if packed is None else packed.data_ptr())
    return (y, pooled) if pool else y


def try_fast(x, weight, bias, stride, padding, pool: bool, act="silu"):
    """The eager CPU call for arguments already seen valid (same shapes, stride, padding) and fp32 CPU
    tensors; None when anything differs, so the caller validates in full (and its errors) instead."""
    if type(stride) is not int or type(padding) is not str or type(act) is not str or _C is None:
        return None
    if not (isinstance(x, torch.Tensor) and isinstance(weight, torch.Tensor) and isinstance(bias, torch.Tensor)):
        return None
    if not (x.dtype is _F32 and weight.dtype is _F32 and bias.dtype is _F32 and x.is_cpu and weight.is_cpu
            and bias.is_cpu):
        return None
    entry = _plans.get((x.shape, x.stride(), weight.shape, bias.shape, stride, padding, _isa.forced, act))
    if entry is None:
        return None
    return _run(x, weight, bias, pool, entry)


def dwconv_bias_swish(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, stride: int = 1,
                      padding: str = "symmetric", pool: bool = False, isa: Optional[str] = None,
                      validate: bool = True, act: str = "silu"):
    """y = act(depthwise_conv2d(x, weight) + bias) by the C++ kernels; (y, pooled) when ``pool``.

    pooled is the fp32 (N, C) mean of y over H×W, computed in the same pass. ``validate=False`` is for
    callers that ran :func:`check_dwconv_args` themselves.
    """
    if _C is None:
        require_cpp("the C++ depthwise kernel")
    if validate:
        _, stride, padding = check_dwconv_args(x, weight, bias, stride, padding)
        check_act(act)
    entry = _plan(x, weight, bias, stride, padding, isa if isa is not None else _isa.forced, act)
    return _run(x, weight, bias, pool, entry)
