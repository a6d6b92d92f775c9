"""The depthwise ops: ``dwconv_bias_swish`` (depthwise conv + bias + an activation, SiLU unless ``act`` says
otherwise: ReLU, ReLU6, Hardswish, identity), its pooled sibling ``dwconv_bias_swish_pool`` (each one
``torch.library`` op with a fake for torch.compile / torch.export, CPU and CUDA kernels, a refusing autograd
formula) and the convenience form ``dwconv_bn_swish``; the wrappers dispatch through ``_dispatch.dispatch``."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from .. import cpu as _cpu, reference
from .._ext import has_cpp
from ._dispatch import (OpSpec, check_backend, dispatch, dtypes_for, refuse_autograd_and_trace, refuse_backward,
                        triton_kernels)
from ._validate import check_act, check_dwconv_args, output_memory_format, output_size


# ---- registered ops (CPU kernels; CUDA: the Triton launchers) ----------------------------------------

def _fake_dw_out(x: Tensor, weight: Tensor, stride: int, padding: str, act: str = "silu") -> Tensor:
    k = weight.shape[-1]
    _, _, out_h, out_w = output_size(x.shape[2], x.shape[3], k, stride, padding)
    return torch.empty((x.shape[0], x.shape[1], out_h, out_w), dtype=x.dtype, device=x.device,
                       memory_format=output_memory_format(x))


def _cpu_dw(x, weight, bias, stride, padding, pool, act):
    check_act(act)
    if has_cpp() and x.dtype == torch.float32:
        return _cpu.dwconv_bias_swish(x, weight, bias, stride, padding, pool=pool, act=act)
    # Without the compiled module (warned once at import) or for other dtypes: the reference. The op can be
    # called directly (torch.ops.effnet_kernels.*): validate as the wrappers do.
    _, stride, padding = check_dwconv_args(x, weight, bias, stride, padding, dtypes=dtypes_for(None, "cpu"),
                                                what="the CPU op")
    fn = reference.dwconv_bias_swish_pool if pool else reference.dwconv_bias_swish
    out = fn(x, weight, bias, stride, padding, act)
    fmt = output_memory_format(x)
    if pool:
        return out[0].contiguous(memory_format=fmt), out[1].float()
    return out.contiguous(memory_format=fmt)


@torch.library.custom_op("effnet_kernels::dwconv_bias_swish", mutates_args=(), device_types="cpu")
def _dwconv_bias_swish_op(x: Tensor, weight: Tensor, bias: Tensor, stride: int, padding: str,
                          act: str = "silu") -> Tensor:
    return _cpu_dw(x, weight, bias, stride, padding, pool=False, act=act)


@_dwconv_bias_swish_op.register_fake
def _(x, weight, bias, stride, padding, act="silu"):
    return _fake_dw_out(x, weight, stride, padding)


@torch.library.custom_op("effnet_kernels::dwconv_bias_swish_pool", mutates_args=(), device_types="cpu")
def _dwconv_bias_swish_pool_op(x: Tensor, weight: Tensor, bias: Tensor, stride: int,
                               padding: str, act: str = "silu") -> Tuple[Tensor, Tensor]:
    return _cpu_dw(x, weight, bias, stride, padding, pool=True, act=act)


@_dwconv_bias_swish_pool_op.register_fake
def _(x, weight, bias, stride, padding, act="silu"):
    return _fake_dw_out(x, weight, stride, padding), x.new_empty((x.shape[0], x.shape[1]), dtype=torch.float32)


def _cuda_dw(x, weight, bias, stride, padding, pool, act):
    kernels = triton_kernels(x.device.type)
    if kernels is None:
        raise RuntimeError(f"effnet_kernels: the CUDA kernels of the fused ops need Triton, which is not importable "
                           f"here (x on {x.device})")
    return kernels.dwconv_bias_swish(x, weight, bias, stride, padding, pool=pool, act=act)


# CUDA: the Triton launchers, as the CUDA kernels of the same custom ops (opaque to torch.compile, which
# traces through the fake implementations above; see effnet_kernels.triton).
@_dwconv_bias_swish_op.register_kernel("cuda")
def _(x, weight, bias, stride, padding, act="silu"):
    return _cuda_dw(x, weight, bias, stride, padding, pool=False, act=act)


@_dwconv_bias_swish_pool_op.register_kernel("cuda")
def _(x, weight, bias, stride, padding, act="silu"):
    return _cuda_dw(x, weight, bias, stride, padding, pool=True, act=act)


# ---- public wrappers -----------------------------------------------------------------------------

def _validate(x, weight, bias, stride, padding, backend, act="silu"):
    """Validate for the chosen backend (dtypes by :func:`dtypes_for`); returns (stride, padding, act)."""
    on_cpu = isinstance(x, Tensor) and x.device.type == "cpu"
    device_type = "cpu" if backend == "cpp" or (backend is None and on_cpu) else None
    dtypes = dtypes_for(backend, "cpu" if on_cpu else "other")
    what = f"backend={backend!r}" + (" on CPU" if on_cpu else "")
    _, stride, padding = check_dwconv_args(x, weight, bias, stride, padding, dtypes=dtypes,
                                    device_type=device_type, what=what)
    return stride, padding, check_act(act)


class _DwSpec(OpSpec):
    names = ("x", "weight", "bias")

    def __init__(self, op: str, pool: bool) -> None:
        self.op, self.pool = op, pool

    def fast(self, x, weight, bias, stride, padding, act):
        return _cpu.try_fast(x, weight, bias, stride, padding, self.pool, act)

    def validate(self, backend, x, weight, bias, stride, padding, act):
        return _validate(x, weight, bias, stride, padding, backend, act)  # (stride, padding, act)

    def cpp_runs(self, v, x, *rest):
        return has_cpp() and x.dtype == torch.float32

    def cpp(self, backend, v, x, weight, bias, stride, padding, act):
        s, p, a = v
        return _cpu.dwconv_bias_swish(x, weight, bias, s, p, pool=self.pool, validate=False, act=a)

    def registered(self, v, x, weight, bias, stride, padding, act):
        return (_dwconv_bias_swish_pool_op if self.pool else _dwconv_bias_swish_op)(x, weight, bias, *v)

    def reference(self, v, x, weight, bias, stride, padding, act):
        return (reference.dwconv_bias_swish_pool if self.pool else reference.dwconv_bias_swish)(x, weight, bias, *v)

    def triton(self, kernels, v, x, weight, bias, stride, padding, act):
        s, p, a = v
        return kernels.dwconv_bias_swish(x, weight, bias, s, p, pool=self.pool, act=a)


_DW = _DwSpec("dwconv_bias_swish", pool=False)
_DW_POOL = _DwSpec("dwconv_bias_swish_pool", pool=True)


def dwconv_bias_swish(x: Tensor, weight: Tensor, bias: Tensor, stride: int = 1, padding: str = "symmetric",
                      backend: Optional[str] = None, act: str = "silu") -> Tensor:
    """``act(depthwise_conv2d(x, weight, stride, groups=C) + bias)`` in one pass over x.

    x: (N, C, H, W); weight: (C, 1, k, k), odd k ≤ 7 (3 and 5 are the fast ones); bias: (C,);
    stride 1 or 2; padding ``"symmetric"`` (k//2 each side) or ``"same"`` (TensorFlow SAME); act one of
    ``"silu"`` (EfficientNet's, the default), ``"relu"``, ``"relu6"``, ``"hardswish"``, ``"identity"``, each
    as eager PyTorch computes it (NaN and ±inf included).
    """
    return dispatch(_DW, backend, (x, weight, bias, stride, padding, act))


def dwconv_bias_swish_pool(x: Tensor, weight: Tensor, bias: Tensor, stride: int = 1, padding: str = "symmetric",
                           backend: Optional[str] = None, act: str = "silu") -> Tuple[Tensor, Tensor]:
    """``(y, pooled)``: :func:`dwconv_bias_swish` and the fp32 (N, C) mean of y over H×W, in the same pass."""
    return dispatch(_DW_POOL, backend, (x, weight, bias, stride, padding, act))


def dwconv_bn_swish(x: Tensor, weight: Tensor, bn_weight: Tensor, bn_bias: Tensor, bn_mean: Tensor, bn_var: Tensor,
                    eps: float = 1e-5, stride: int = 1, padding: str = "symmetric",
                    backend: Optional[str] = None) -> Tensor:
    """``silu(batch_norm_eval(depthwise_conv2d(x, weight)))``: folds BN (in float64), then calls
    :func:`dwconv_bias_swish`. Fused models fold once at fuse time and call the primitive directly."""
    if not isinstance(x, Tensor) or not isinstance(weight, Tensor):
        raise TypeError(f"x and weight must be torch.Tensors, got {type(x).__name__} and {type(weight).__name__}")
    c = x.shape[1] if x.dim() == 4 else None
    for name, t in (("bn_weight", bn_weight), ("bn_bias", bn_bias), ("bn_mean", bn_mean), ("bn_var", bn_var)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 1 or (c is not None and t.shape[0] != c):
            raise ValueError(f"{name} must have shape ({c},) to match x's channels, got {tuple(t.shape)}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0:
        raise ValueError(f"eps must be a float >= 0, got {eps!r}")
    refuse_autograd_and_trace("dwconv_bn_swish", check_backend(backend), (
        ("x", x), ("weight", weight), ("bn_weight", bn_weight), ("bn_bias", bn_bias), ("bn_mean", bn_mean),
        ("bn_var", bn_var)))
    w, b = reference.fold_bn(weight.double(), bn_weight.double(), bn_bias.double(), bn_mean.double(),
                             bn_var.double(), float(eps))
    return dwconv_bias_swish(x, w.to(weight.dtype), b.to(weight.dtype), stride, padding, backend)


refuse_backward(_dwconv_bias_swish_op, "dwconv_bias_swish")
refuse_backward(_dwconv_bias_swish_pool_op, "dwconv_bias_swish_pool")
