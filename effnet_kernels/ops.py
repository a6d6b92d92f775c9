"""Public fused ops. Each is one ``torch.library`` op (``effnet_kernels::<name>``) with a fixed schema and
a fake implementation, so ``torch.compile(fullgraph=True)`` and ``torch.export`` can trace models that
use them; ``backend=`` lives only in these Python wrappers.

* :func:`dwconv_bias_swish` — ``silu(depthwise_conv2d(x, weight) + bias)``: the primitive fused blocks
  call with BatchNorm folded into ``weight``/``bias`` once (see :func:`effnet_kernels.reference.fold_bn`);
* :func:`dwconv_bias_swish_pool` — the same plus ``pooled``, the fp32 (N, C) mean of y over H×W computed in
  the same pass (the squeeze-excitation input);
* :func:`dwconv_bn_swish` — the convenience form with an unfolded eval-mode BatchNorm;
* :func:`squeeze_excite` — the stand-alone squeeze-excitation ``x * sigmoid(expand(silu(reduce(mean(x)))))``
  (torchvision's ``SqueezeExcitation(activation=SiLU)``, timm's ``SqueezeExcite``);
* :func:`se_gate` — the SE gate from the pooled means the depthwise op emits;
* :func:`se_project` — what an MBConv block runs after its depthwise conv: the SE gate folded into the
  projection 1×1 conv (BN folded), plus the residual, without another pass over y for the pool or the scale.

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
from ._cpu import clear_caches
from ._ext import has_cpp

__all__ = ["BACKENDS", "available_backends", "dwconv_bias_swish", "dwconv_bias_swish_pool", "dwconv_bn_swish",
           "squeeze_excite", "se_gate", "se_project", "clear_caches"]

BACKENDS = ("cpp", "triton", "torch")
_FLOATS = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def available_backends(device_type: str = "cpu") -> Tuple[str, ...]:
    """The backends that can run on ``device_type`` ("cpu", "cuda", … : a torch device type) in this install."""
    if not isinstance(device_type, str):
        raise TypeError(f"device_type must be a torch device type string such as 'cpu' or 'cuda', got "
                        f"{type(device_type).__name__} {device_type!r}")
    try:
        parsed = torch.device(device_type).type
    except RuntimeError:
        raise ValueError(f"device_type must be a torch device type such as 'cpu' or 'cuda', got {device_type!r}") \
            from None
    if parsed != device_type:
        raise ValueError(f"device_type must be a device type without an index ({parsed!r}), got {device_type!r}")
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


def _no_kernel(name: str, x: Tensor) -> str:
    devices = "cpu" + (", cuda" if _triton_kernels("cuda") is not None else "")
    return (f"{name} must be on a device with a kernel for the fused ops in this install ({devices}) or use "
            f"backend='torch', got {name} on {x.device} (backends there: {available_backends(x.device.type)})")


def _no_triton(x: Tensor) -> str:
    return (f"backend='triton' needs CUDA tensors (or CPU tensors with TRITON_INTERPRET=1 set before import and "
            f"Triton installed), got {x.device.type} tensors; the backends available for them here: "
            f"{available_backends(x.device.type)}")


def _check_backend(backend) -> Optional[str]:
    if backend is None:
        return None
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend must be None or one of {BACKENDS}, got {backend!r}")
    return backend


_TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def dtypes_for(backend: Optional[str], device_type: str) -> Tuple[torch.dtype, ...]:
    """The one dtype rule, the same for the wrappers below and the registered ops they call:

    * ``"cpp"``: float32 (the C++ kernels are fp32);
    * ``"triton"``: float32, float16, bfloat16 (accumulating in fp32);
    * ``"torch"``: every float dtype (the eager reference);
    * ``None``: on the CPU every float dtype — float32 runs the C++ kernels (the reference when ``_C`` is not
      built), float16 / bfloat16 / float64 run the reference, in that dtype; on other devices the Triton
      kernel's dtypes.
    """
    if backend == "cpp":
        return (torch.float32,)
    if backend == "triton":
        return _TRITON_DTYPES
    if backend == "torch" or device_type == "cpu":
        return _FLOATS
    return _TRITON_DTYPES


def _refuse_autograd_and_trace(op: str, backend: Optional[str], named) -> None:
    """The kernels write through raw pointers (CPU) or launch Triton: autograd sees no computation and
    torch.jit.trace records only the output allocation. Refuse both rather than return an output without
    gradients or a trace that returns uninitialised memory; the reference (``backend="torch"``) is eager
    PyTorch and supports both. ``named``: (argument name, value) pairs."""
    if backend == "torch":
        return
    if torch.jit.is_tracing():
        raise RuntimeError(f"effnet_kernels.ops.{op} (backend={backend!r}) cannot be recorded by torch.jit.trace, "
                           f"which would record only the output allocation: use torch.compile or torch.export "
                           f"(the op is a registered torch.library op), or backend='torch' to trace the eager "
                           f"reference")
    if torch.is_grad_enabled():
        for name, t in named:
            if isinstance(t, Tensor) and t.requires_grad:
                raise RuntimeError(f"effnet_kernels.ops.{op} (backend={backend!r}) computes no gradients, but {name} "
                                   f"requires grad while grad mode is on: call it under torch.no_grad() or "
                                   f"torch.inference_mode() (or detach {name}), or use backend='torch' for autograd "
                                   f"through the eager reference")


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
    # Without the compiled module (warned once at import) or for other dtypes: the reference. The op can be
    # called directly (torch.ops.effnet_kernels.*): validate as the wrappers do.
    _, stride, padding = _cpu.check_dwconv_args(x, weight, bias, stride, padding, dtypes=dtypes_for(None, "cpu"),
                                                what="the CPU op")
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
    """Validate for the chosen backend (dtypes by :func:`dtypes_for`); returns (stride, padding)."""
    on_cpu = isinstance(x, Tensor) and x.device.type == "cpu"
    device_type = "cpu" if backend == "cpp" or (backend is None and on_cpu) else None
    dtypes = dtypes_for(backend, "cpu" if on_cpu else "other")
    what = f"backend={backend!r}" + (" on CPU" if on_cpu else "")
    _, stride, padding = _cpu.check_dwconv_args(x, weight, bias, stride, padding, dtypes=dtypes,
                                                device_type=device_type, what=what)
    return stride, padding


def _dispatch(x, weight, bias, stride, padding, backend, pool: bool, op_name: str):
    if backend is not None:
        backend = _check_backend(backend)
    _refuse_autograd_and_trace(op_name, backend, (("x", x), ("weight", weight), ("bias", bias)))
    if backend is None and not torch.compiler.is_compiling():
        # Eager fast path: arguments of a shape already validated, fp32 on CPU -> the C++ call, without
        # the dispatcher (~8 us) or a second validation.
        out = _cpu.try_fast(x, weight, bias, stride, padding, pool)
        if out is not None:
            return out
    backend = _check_backend(backend)
    stride, padding = _validate(x, weight, bias, stride, padding, backend)
    if backend is None:
        if (x.device.type == "cpu" and has_cpp() and x.dtype == torch.float32
                and not torch.compiler.is_compiling()):
            # Eager fast path: the same C++ call the registered op makes, without the dispatcher.
            return _cpu.dwconv_bias_swish(x, weight, bias, stride, padding, pool=pool, validate=False)
        if x.device.type != "cpu" and _triton_kernels(x.device.type) is None:
            raise ValueError(_no_kernel("x", x))
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
        raise ValueError(_no_triton(x))
    return kernels.dwconv_bias_swish(x, weight, bias, stride, padding, pool=pool)


def dwconv_bias_swish(x: Tensor, weight: Tensor, bias: Tensor, stride: int = 1, padding: str = "symmetric",
                      backend: Optional[str] = None) -> Tensor:
    """``silu(depthwise_conv2d(x, weight, stride, groups=C) + bias)`` in one pass over x.

    x: (N, C, H, W); weight: (C, 1, k, k), odd k ≤ 7 (3 and 5 are the fast ones); bias: (C,);
    stride 1 or 2; padding ``"symmetric"`` (k//2 each side) or ``"same"`` (TensorFlow SAME).
    """
    return _dispatch(x, weight, bias, stride, padding, backend, pool=False, op_name="dwconv_bias_swish")


def dwconv_bias_swish_pool(x: Tensor, weight: Tensor, bias: Tensor, stride: int = 1, padding: str = "symmetric",
                           backend: Optional[str] = None) -> Tuple[Tensor, Tensor]:
    """``(y, pooled)``: :func:`dwconv_bias_swish` and the fp32 (N, C) mean of y over H×W, in the same pass."""
    return _dispatch(x, weight, bias, stride, padding, backend, pool=True, op_name="dwconv_bias_swish_pool")


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
    _refuse_autograd_and_trace("dwconv_bn_swish", _check_backend(backend), (
        ("x", x), ("weight", weight), ("bn_weight", bn_weight), ("bn_bias", bn_bias), ("bn_mean", bn_mean),
        ("bn_var", bn_var)))
    w, b = reference.fold_bn(weight.double(), bn_weight.double(), bn_bias.double(), bn_mean.double(),
                             bn_var.double(), float(eps))
    return dwconv_bias_swish(x, w.to(weight.dtype), b.to(weight.dtype), stride, padding, backend)


# ------------------------------------------------------------------------------------------------
# Squeeze-excitation ops

_SE_WHAT = "the squeeze-excitation ops"
_SE_NAMES = ("reduce_weight", "reduce_bias", "expand_weight", "expand_bias")


def _cpu_fp32(*tensors) -> bool:
    """Whether the C++ kernels run (the rule of :func:`dtypes_for` for ``backend=None`` on the CPU): built,
    and every one of ``tensors`` float32 (None: absent)."""
    return has_cpp() and all(t is None or t.dtype == torch.float32 for t in tensors)


@torch.library.custom_op("effnet_kernels::squeeze_excite", mutates_args=(), device_types="cpu")
def _squeeze_excite_op(x: Tensor, reduce_weight: Tensor, reduce_bias: Tensor, expand_weight: Tensor,
                       expand_bias: Tensor) -> Tensor:
    # The op can be called directly (torch.ops.effnet_kernels.squeeze_excite): validate as the wrapper does.
    c = _cpu.check_se_input(x, "x", _FLOATS, "cpu", _SE_WHAT)
    _cpu.check_se_weights(c, reduce_weight, reduce_bias, expand_weight, expand_bias, _FLOATS, x.device, _SE_WHAT)
    _same_dtype_as_x(x, reduce_weight)
    if _cpu_fp32(x, reduce_weight):
        return _cpu.squeeze_excite(x, reduce_weight, reduce_bias, expand_weight, expand_bias)
    out = reference.squeeze_excite(x, reduce_weight, reduce_bias, expand_weight, expand_bias)
    return out.contiguous(memory_format=_cpu.output_memory_format(x))


@_squeeze_excite_op.register_fake
def _(x, reduce_weight, reduce_bias, expand_weight, expand_bias):
    return torch.empty_like(x, memory_format=_cpu.output_memory_format(x))


@torch.library.custom_op("effnet_kernels::se_gate", mutates_args=(), device_types="cpu")
def _se_gate_op(pooled: Tensor, reduce_weight: Tensor, reduce_bias: Tensor, expand_weight: Tensor,
                expand_bias: Tensor) -> Tensor:
    # The op can be called directly (torch.ops.effnet_kernels.se_gate): validate what the C++ kernel reads.
    if pooled.dim() != 2:
        raise ValueError(f"pooled must be 2-D (N, C), got shape {tuple(pooled.shape)}")
    _cpu.check_pooled(pooled, pooled.shape[0], pooled.shape[1], pooled.device)
    c = pooled.shape[1]
    w1, b1, w2, b2, s = _cpu.check_se_weights(c, reduce_weight, reduce_bias, expand_weight, expand_bias, _FLOATS,
                                              pooled.device, _SE_WHAT)
    if _cpu_fp32(reduce_weight):
        return _cpu.se_gate(pooled, w1, b1, w2, b2, s)
    return reference.se_gate(pooled, reduce_weight, reduce_bias, expand_weight, expand_bias).float()


@_se_gate_op.register_fake
def _(pooled, reduce_weight, reduce_bias, expand_weight, expand_bias):
    return pooled.new_empty(pooled.shape, dtype=torch.float32)


@torch.library.custom_op("effnet_kernels::se_project", mutates_args=(), device_types="cpu")
def _se_project_op(y: Tensor, pooled: Tensor, reduce_weight: Tensor, reduce_bias: Tensor, expand_weight: Tensor,
                   expand_bias: Tensor, proj_weight: Tensor, proj_bias: Tensor, residual: Optional[Tensor]) -> Tensor:
    # The op can be called directly (torch.ops.effnet_kernels.se_project): validate as the wrapper does.
    _cpu.check_se_input(y, "y", _FLOATS, "cpu", _SE_WHAT)
    _cpu.check_pooled(pooled, y.shape[0], y.shape[1], y.device)
    w1, b1, w2, b2, s = _cpu.check_se_weights(y.shape[1], reduce_weight, reduce_bias, expand_weight, expand_bias,
                                              _FLOATS, y.device, _SE_WHAT)
    pw = _cpu.check_projection(y, proj_weight, proj_bias, residual, _FLOATS, _SE_WHAT)
    if _cpu_fp32(y, reduce_weight):
        return _cpu.se_project(y, pooled, w1, b1, w2, b2, s, pw, proj_bias, residual)
    out = reference.se_project(y, pooled, reduce_weight, reduce_bias, expand_weight, expand_bias, proj_weight,
                               proj_bias, residual)
    return out.contiguous(memory_format=_cpu.output_memory_format(y))


def _fake_project_out(y, proj_weight):
    shape = (y.shape[0], proj_weight.shape[0], y.shape[2], y.shape[3])
    return torch.empty(shape, dtype=y.dtype, device=y.device, memory_format=_cpu.output_memory_format(y))


@_se_project_op.register_fake
def _(y, pooled, reduce_weight, reduce_bias, expand_weight, expand_bias, proj_weight, proj_bias, residual):
    return _fake_project_out(y, proj_weight)


def _cuda_se():
    kernels = _triton_kernels("cuda")
    if kernels is None:
        raise RuntimeError("effnet_kernels: the CUDA kernels of the squeeze-excitation ops need Triton, which is not "
                           "importable here")
    return kernels


@_squeeze_excite_op.register_kernel("cuda")
def _(x, reduce_weight, reduce_bias, expand_weight, expand_bias):
    return _cuda_se().squeeze_excite(x, reduce_weight, reduce_bias, expand_weight, expand_bias)


@_se_gate_op.register_kernel("cuda")
def _(pooled, reduce_weight, reduce_bias, expand_weight, expand_bias):
    return _cuda_se().se_gate(pooled, reduce_weight, reduce_bias, expand_weight, expand_bias)


@_se_project_op.register_kernel("cuda")
def _(y, pooled, reduce_weight, reduce_bias, expand_weight, expand_bias, proj_weight, proj_bias, residual):
    return _cuda_se().se_project(y, pooled, reduce_weight, reduce_bias, expand_weight, expand_bias, proj_weight,
                                 proj_bias, residual)


def _same_dtype_as_x(x: Tensor, reduce_weight) -> None:
    """squeeze_excite scales x by a gate computed from x: its SE weights must have x's dtype (as eager's
    convolutions require), on every backend."""
    if isinstance(reduce_weight, Tensor) and reduce_weight.dtype != x.dtype:
        raise TypeError(f"reduce_weight, reduce_bias, expand_weight and expand_bias must have x's dtype {x.dtype} for "
                        f"squeeze_excite, got {reduce_weight.dtype}")


def _se_validate(x, name, weights, backend):
    """Validate x (4-D) and the SE weights for the backend (dtypes by :func:`dtypes_for`); returns
    (C, (W1, b1, W2, b2, S), dtypes, what)."""
    on_cpu = isinstance(x, Tensor) and x.device.type == "cpu"
    dtypes = dtypes_for(backend, "cpu" if on_cpu else "other")
    what = f"backend={backend!r}" + (" on CPU" if on_cpu else "")
    c = _cpu.check_se_input(x, name, dtypes, "cpu" if backend == "cpp" else None, what)
    checked = _cpu.check_se_weights(c, *weights, dtypes, x.device, what)
    if name == "x":
        _same_dtype_as_x(x, weights[0])
    return c, checked, dtypes, what


def _se_backend(x, backend, name="x"):
    backend = _check_backend(backend)
    if backend == "cpp" and not has_cpp():
        raise ValueError("backend='cpp' needs the compiled module effnet_kernels._C, which is not built "
                         "(pip install . from the source tree)")
    if backend == "triton" and _triton_kernels(x.device.type) is None:
        raise ValueError(_no_triton(x))
    if backend is None and x.device.type != "cpu" and _triton_kernels(x.device.type) is None:
        raise ValueError(_no_kernel(name, x))
    return backend


def squeeze_excite(x: Tensor, reduce_weight: Tensor, reduce_bias: Tensor, expand_weight: Tensor,
                   expand_bias: Tensor, backend: Optional[str] = None) -> Tensor:
    """``x * sigmoid(expand(silu(reduce(mean_hw(x)))))`` — torchvision's ``SqueezeExcitation`` with SiLU,
    timm's ``SqueezeExcite``. Weights shaped like their 1×1 convs ((S, C, 1, 1), (C, S, 1, 1)) or flat
    ((S, C), (C, S)). Two passes over x (pool, then scale); inside an MBConv block use
    :func:`dwconv_bias_swish_pool` + :func:`se_project` instead, which need neither. Output layout: x's
    (channels_last stays channels_last)."""
    weights = (reduce_weight, reduce_bias, expand_weight, expand_bias)
    if backend is not None:
        backend = _check_backend(backend)
    _refuse_autograd_and_trace("squeeze_excite", backend, (("x", x), *zip(_SE_NAMES, weights)))
    if backend is None and not torch.compiler.is_compiling():
        out = _cpu.try_fast_se(x, *weights)  # eager, CPU fp32, arguments seen valid before
        if out is not None:
            return out
    _se_validate(x, "x", weights, backend)
    backend = _se_backend(x, backend)
    if backend is None:
        if x.device.type == "cpu" and _cpu_fp32(x, reduce_weight) and not torch.compiler.is_compiling():
            return _cpu.squeeze_excite(x, *weights, validate=False)
        return _squeeze_excite_op(x, *weights)
    if backend == "cpp":
        return _cpu.squeeze_excite(x, *weights, validate=False)
    if backend == "torch":
        return reference.squeeze_excite(x, *weights)
    return _triton_kernels(x.device.type).squeeze_excite(x, *weights)


def _check_pooled_for(x, pooled):
    if not isinstance(x, Tensor):
        raise TypeError(f"y must be a torch.Tensor, got {type(x).__name__}")
    _cpu.check_pooled(pooled, x.shape[0], x.shape[1], x.device)


def se_gate(pooled: Tensor, reduce_weight: Tensor, reduce_bias: Tensor, expand_weight: Tensor, expand_bias: Tensor,
            backend: Optional[str] = None) -> Tensor:
    """The SE gate ``sigmoid(expand(silu(reduce(pooled))))``, fp32 (N, C), from the fp32 (N, C) means that
    :func:`dwconv_bias_swish_pool` emits. One small kernel (two matrix-vector products per sample)."""
    weights = (reduce_weight, reduce_bias, expand_weight, expand_bias)
    if backend is not None:
        backend = _check_backend(backend)
    _refuse_autograd_and_trace("se_gate", backend, (("pooled", pooled), *zip(_SE_NAMES, weights)))
    if not isinstance(pooled, Tensor):
        raise TypeError(f"pooled must be a torch.Tensor, got {type(pooled).__name__}")
    if pooled.dim() != 2:
        raise ValueError(f"pooled must be 2-D (N, C), got shape {tuple(pooled.shape)}")
    _cpu.check_pooled(pooled, pooled.shape[0], pooled.shape[1], pooled.device)
    if backend == "cpp" and pooled.device.type != "cpu":
        raise ValueError(f"pooled must be on the CPU for backend='cpp', got device {pooled.device}")
    on_cpu = pooled.device.type == "cpu"
    w1, b1, w2, b2, s = _cpu.check_se_weights(pooled.shape[1], *weights,
                                              dtypes_for(backend, "cpu" if on_cpu else "other"), pooled.device,
                                              f"backend={backend!r}" + (" on CPU" if on_cpu else ""))
    backend = _se_backend(pooled, backend, "pooled")
    if backend is None:
        if on_cpu and _cpu_fp32(reduce_weight) and not torch.compiler.is_compiling():
            return _cpu.se_gate(pooled, w1, b1, w2, b2, s)
        return _se_gate_op(pooled, *weights)
    if backend == "cpp":
        return _cpu.se_gate(pooled, w1, b1, w2, b2, s)
    if backend == "torch":
        return reference.se_gate(pooled, *weights).float()
    return _triton_kernels(pooled.device.type).se_gate(pooled, *weights)


def se_project(y: Tensor, pooled: Tensor, reduce_weight: Tensor, reduce_bias: Tensor, expand_weight: Tensor,
               expand_bias: Tensor, proj_weight: Tensor, proj_bias: Tensor, residual: Optional[Tensor] = None,
               backend: Optional[str] = None) -> Tensor:
    """``conv1x1(y * gate(pooled), proj_weight) + proj_bias (+ residual)``: the rest of an MBConv block
    after its depthwise conv, with BN folded into ``proj_weight``/``proj_bias`` ((Cout, Cin, 1, 1) or
    (Cout, Cin)). ``pooled`` is the fp32 (N, Cin) mean of y (from :func:`dwconv_bias_swish_pool`), so y is
    read once, by the GEMM: the gate is folded into per-sample weights or into the GEMM's input, whichever
    costs less for the layer. Output: (N, Cout, H, W) in y's dtype and layout."""
    weights = (reduce_weight, reduce_bias, expand_weight, expand_bias)
    if backend is not None:
        backend = _check_backend(backend)
    _refuse_autograd_and_trace("se_project", backend, (("y", y), ("pooled", pooled), *zip(_SE_NAMES, weights),
                                                       ("proj_weight", proj_weight), ("proj_bias", proj_bias),
                                                       ("residual", residual)))
    if backend is None and not torch.compiler.is_compiling():
        out = _cpu.try_fast_se_project(y, pooled, *weights, proj_weight, proj_bias, residual)
        if out is not None:
            return out
    _, (w1, b1, w2, b2, s), dtypes, what = _se_validate(y, "y", weights, backend)
    _check_pooled_for(y, pooled)
    pw = _cpu.check_projection(y, proj_weight, proj_bias, residual, dtypes, what)
    backend = _se_backend(y, backend, "y")
    if backend is None:
        if y.device.type == "cpu" and _cpu_fp32(y, reduce_weight) and not torch.compiler.is_compiling():
            return _cpu.se_project(y, pooled, w1, b1, w2, b2, s, pw, proj_bias, residual,
                                   remember=weights + (proj_weight, proj_bias))
        return _se_project_op(y, pooled, *weights, proj_weight, proj_bias, residual)
    if backend == "cpp":
        return _cpu.se_project(y, pooled, w1, b1, w2, b2, s, pw, proj_bias, residual)
    if backend == "torch":
        return reference.se_project(y, pooled, *weights, proj_weight, proj_bias, residual)
    return _triton_kernels(y.device.type).se_project(y, pooled, *weights, proj_weight, proj_bias, residual)


# ------------------------------------------------------------------------------------------------
# The registered ops have no backward: called directly with an input that requires grad (grad mode on),
# they refuse at the call, not at .backward(). (Only reached then: without such an input the autograd
# layer calls the kernel straight away.)

def _refuse_backward(name: str):
    def setup_context(ctx, inputs, output):
        raise RuntimeError(f"torch.ops.effnet_kernels.{name} computes no gradients, but an input requires grad while "
                           f"grad mode is on: call it under torch.no_grad() or torch.inference_mode(), or use "
                           f"effnet_kernels.ops.{name}(..., backend='torch') for autograd through the eager reference")

    def backward(ctx, *grads):  # never reached: setup_context refused the forward
        raise RuntimeError(f"torch.ops.effnet_kernels.{name} has no backward")

    return backward, setup_context


for _op, _name in ((_dwconv_bias_swish_op, "dwconv_bias_swish"), (_dwconv_bias_swish_pool_op, "dwconv_bias_swish_pool"),
                   (_squeeze_excite_op, "squeeze_excite"), (_se_gate_op, "se_gate"), (_se_project_op, "se_project")):
    _backward, _setup = _refuse_backward(_name)
    _op.register_autograd(_backward, setup_context=_setup)
del _op, _name, _backward, _setup
