"""Public fused ops. Each is one ``torch.library`` op (``effnet_kernels::<name>``) with a fixed schema and
a fake implementation, so ``torch.compile(fullgraph=True)`` and ``torch.export`` can trace models that
use them; ``backend=`` lives only in these Python wrappers.

* :func:`dwconv_bias_swish` — ``silu(depthwise_conv2d(x, weight) + bias)``: the primitive fused blocks
  call with BatchNorm folded into ``weight``/``bias`` once (see :func:`effnet_kernels.reference.fold_bn`);
* :func:`dwconv_bias_swish_pool` — the same plus ``pooled``, the fp32 (N, C) mean of y over H×W computed in
  the same pass (the squeeze-excitation input);
* :func:`dwconv_bn_swish` — the convenience form with an unfolded eval-mode BatchNorm.

Backends: ``None`` (the registered op, which picks the kernel by device — in eager mode on CPU the C++
kernel is called directly, skipping ~8 µs of dispatcher overhead; under ``torch.compile`` the op is
called), ``"cpp"`` (C++ SIMD kernels, fp32 CPU), ``"triton"`` (GPU kernels; on CPU tensors only under
``TRITON_INTERPRET=1``), ``"torch"`` (the eager reference). Output memory format: channels_last when x
is channels_last (and not also NCHW-contiguous), NCHW otherwise.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from . import _cpu, reference
from ._ext import has_cpp

__all__ = ["BACKENDS", "available_backends", "dwconv_bias_swish", "dwconv_bias_swish_pool", "dwconv_bn_swish"]

BACKENDS = ("cpp", "triton", "torch")
_FLOATS = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def available_backends(device_type: str = "cpu") -> Tuple[str, ...]:
    """The backends that can run on ``device_type`` in this install."""
    out = []
    if device_type == "cpu" and has_cpp():
        out.append("cpp")
    if _triton_kernels(device_type) is not None:
        out.append("triton")
    out.append("torch")
    return tuple(out)


def _triton_kernels(device_type: str):
    """The Triton launchers when they can run on ``device_type``, else None."""
    try:
        from . import triton as triton_kernels  # noqa: F401  (added with the GPU kernels)
    except ImportError:
        return None
    return triton_kernels if triton_kernels.available(device_type) else None


def _check_backend(backend) -> Optional[str]:
    if backend is None:
        return None
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend must be None or one of {BACKENDS}, got {backend!r}")
    return backend


# ------------------------------------------------------------------------------------------------
# Registered ops (CPU kernels here; the CUDA kernels are registered by effnet_kernels.triton).

def _fake_dw_out(x: Tensor, weight: Tensor, stride: int, padding: str) -> Tensor:
    k = weight.shape[-1]
    _, _, out_h, out_w = _cpu.output_size(x.shape[2], x.shape[3], k, stride, padding)
    return torch.empty((x.shape[0], x.shape[1], out_h, out_w), dtype=x.dtype, device=x.device,
                       memory_format=_cpu.output_memory_format(x))


def _cpu_dw(x, weight, bias, stride, padding, pool):
    if has_cpp() and x.dtype == torch.float32:
        return _cpu.dwconv_bias_swish(x, weight, bias, stride, padding, pool=pool)
    # Without the compiled module (warned once at import) or for other dtypes: the reference.
    fn = reference.dwconv_bias_swish_pool if pool else reference.dwconv_bias_swish
    out = fn(x, weight, bias, stride, padding)
    fmt = _cpu.output_memory_format(x)
    if pool:
        return out[0].contiguous(memory_format=fmt), out[1].float()
    return out.contiguous(memory_format=fmt)


@torch.library.custom_op("effnet_kernels::dwconv_bias_swish", mutates_args=(), device_types="cpu")
def _dwconv_bias_swish_op(x: Tensor, weight: Tensor, bias: Tensor, stride: int, padding: str) -> Tensor:
    return _cpu_dw(x, weight, bias, stride, padding, pool=False)


@_dwconv_bias_swish_op.register_fake
def _(x, weight, bias, stride, padding):
    return _fake_dw_out(x, weight, stride, padding)


@torch.library.custom_op("effnet_kernels::dwconv_bias_swish_pool", mutates_args=(), device_types="cpu")
def _dwconv_bias_swish_pool_op(x: Tensor, weight: Tensor, bias: Tensor, stride: int,
                               padding: str) -> Tuple[Tensor, Tensor]:
    return _cpu_dw(x, weight, bias, stride, padding, pool=True)


@_dwconv_bias_swish_pool_op.register_fake
def _(x, weight, bias, stride, padding):
    return _fake_dw_out(x, weight, stride, padding), x.new_empty((x.shape[0], x.shape[1]), dtype=torch.float32)


def _cuda_dw(x, weight, bias, stride, padding, pool):
    kernels = _triton_kernels(x.device.type)
    if kernels is None:
        raise RuntimeError(f"effnet_kernels: the CUDA kernels of the fused ops need Triton, which is not importable "
                           f"here (x on {x.device})")
    return kernels.dwconv_bias_swish(x, weight, bias, stride, padding, pool=pool)


# CUDA: the Triton launchers, as the CUDA kernels of the same custom ops (opaque to torch.compile, which
# traces through the fake implementations above; see effnet_kernels.triton).
@_dwconv_bias_swish_op.register_kernel("cuda")
def _(x, weight, bias, stride, padding):
    return _cuda_dw(x, weight, bias, stride, padding, pool=False)


@_dwconv_bias_swish_pool_op.register_kernel("cuda")
def _(x, weight, bias, stride, padding):
    return _cuda_dw(x, weight, bias, stride, padding, pool=True)


# ------------------------------------------------------------------------------------------------
# Public wrappers

def _validate(x, weight, bias, stride, padding, backend):
    """Validate for the chosen backend; returns (stride, padding)."""
    if backend == "cpp" or (backend is None and isinstance(x, Tensor) and x.device.type == "cpu"):
        _, stride, padding = _cpu.check_dwconv_args(x, weight, bias, stride, padding,
                                                    what=f"backend={backend!r} on CPU")
    else:
        _, stride, padding = _cpu.check_dwconv_args(x, weight, bias, stride, padding, dtypes=_FLOATS,
                                                    device_type=None, what=f"backend={backend!r}")
    return stride, padding


def _dispatch(x, weight, bias, stride, padding, backend, pool: bool):
    if backend is None and not torch.compiler.is_compiling():
        # Eager fast path: arguments of a shape already validated, fp32 on CPU -> the C++ call, without
        # the dispatcher (~8 us) or a second validation.
        out = _cpu.try_fast(x, weight, bias, stride, padding, pool)
        if out is not None:
            return out
    backend = _check_backend(backend)
    stride, padding = _validate(x, weight, bias, stride, padding, backend)
    if backend is None:
        if x.device.type == "cpu" and has_cpp() and not torch.compiler.is_compiling():
            # Eager fast path: the same C++ call the registered op makes, without the dispatcher.
            return _cpu.dwconv_bias_swish(x, weight, bias, stride, padding, pool=pool, validate=False)
        if x.device.type != "cpu" and _triton_kernels(x.device.type) is None:
            raise ValueError(f"x is on {x.device}, where no kernel is registered for the fused ops in this install "
                             f"(backends here: {available_backends(x.device.type)}); pass backend='torch'")
        op = _dwconv_bias_swish_pool_op if pool else _dwconv_bias_swish_op
        return op(x, weight, bias, stride, padding)
    if backend == "cpp":
        if not has_cpp():
            raise ValueError("backend='cpp' needs the compiled module effnet_kernels._C, which is not built "
                             "(pip install . from the source tree)")
        return _cpu.dwconv_bias_swish(x, weight, bias, stride, padding, pool=pool, validate=False)
    if backend == "torch":
        return (reference.dwconv_bias_swish_pool if pool else reference.dwconv_bias_swish)(
            x, weight, bias, stride, padding)
    kernels = _triton_kernels(x.device.type)
    if kernels is None:
        raise ValueError(f"backend='triton' is not available for {x.device.type} tensors in this install "
                         f"(available: {available_backends(x.device.type)}); on CPU tensors it runs only under "
                         f"TRITON_INTERPRET=1 set before import, with the Triton kernels installed")
    return kernels.dwconv_bias_swish(x, weight, bias, stride, padding, pool=pool)


def dwconv_bias_swish(x: Tensor, weight: Tensor, bias: Tensor, stride: int = 1, padding: str = "symmetric",
                      backend: Optional[str] = None) -> Tensor:
    """``silu(depthwise_conv2d(x, weight, stride, groups=C) + bias)`` in one pass over x.

    x: (N, C, H, W); weight: (C, 1, k, k), odd k ≤ 7 (3 and 5 are the fast ones); bias: (C,);
    stride 1 or 2; padding ``"symmetric"`` (k//2 each side) or ``"same"`` (TensorFlow SAME).
    """
    return _dispatch(x, weight, bias, stride, padding, backend, pool=False)


def dwconv_bias_swish_pool(x: Tensor, weight: Tensor, bias: Tensor, stride: int = 1, padding: str = "symmetric",
                           backend: Optional[str] = None) -> Tuple[Tensor, Tensor]:
    """``(y, pooled)``: :func:`dwconv_bias_swish` and the fp32 (N, C) mean of y over H×W, in the same pass."""
    return _dispatch(x, weight, bias, stride, padding, backend, pool=True)


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
    w, b = reference.fold_bn(weight.double(), bn_weight.double(), bn_bias.double(), bn_mean.double(),
                             bn_var.double(), float(eps))
    return dwconv_bias_swish(x, w.to(weight.dtype), b.to(weight.dtype), stride, padding, backend)
