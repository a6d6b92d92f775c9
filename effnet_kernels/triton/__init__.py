"""Triton (GPU) kernels and their launchers.

``available(device_type)`` says whether they can run on a device type here: on CUDA when Triton imports
and a GPU is present; on CPU tensors only when ``TRITON_INTERPRET=1`` was set before the kernels were
imported (Triton reads it when it decorates a kernel) — the test path in CI.

The launchers are registered as the CUDA kernels of the ``torch.library`` custom ops in
:mod:`effnet_kernels.ops` (not as ``triton_op``\\ s): a custom op's kernel is opaque to ``torch.compile``,
which traces the op through its fake implementation, so the launcher never has to be fake- or
device-safe, and CPU tensors under compile keep going to the C++ kernel.
"""
from __future__ import annotations

import contextlib
from typing import Optional, Tuple

import torch

try:
    import triton  # noqa: F401  (the top-level Triton package)
    HAS_TRITON = True
except ImportError:  # pragma: no cover - CI installs triton with torch
    HAS_TRITON = False

from ._env import INTERPRET
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_I32_LIMIT = 2 ** 31

__all__ = ["HAS_TRITON", "INTERPRET", "DTYPES", "available", "dwconv_bias_swish", "squeeze_excite", "se_gate",
           "se_project"]


def available(device_type: str) -> bool:
    """Can the Triton kernels run on tensors of ``device_type`` in this process?"""
    if not HAS_TRITON:
        return False
    if device_type == "cuda":
        return torch.cuda.is_available()
    return device_type == "cpu" and INTERPRET


def _device_guard(t: torch.Tensor):
    # Triton launches on the current CUDA device: make it the input's (a tensor on cuda:1 works).
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def _span(t: torch.Tensor) -> int:
    """Elements between the first and one past the last addressed element (strided views included)."""
    if t.numel() == 0:
        return 0
    return 1 + sum((s - 1) * abs(st) for s, st in zip(t.shape, t.stride()))


def dwconv_bias_swish(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, stride: int = 1,
                      padding: str = "symmetric", pool: bool = False, validate: bool = True,
                      index64: Optional[bool] = None, tile: Optional[dict] = None,
                      act: str = "silu") -> torch.Tensor | Tuple[torch.Tensor, torch.Tensor]:
    """``act(depthwise_conv2d(x, weight) + bias)`` by the Triton kernel; ``(y, pooled)`` when ``pool``.

    x: (N, C, H, W) fp32/fp16/bf16 on CUDA (or CPU under TRITON_INTERPRET=1), any strides; weight
    (C, 1, k, k) and bias (C,) in x's dtype. Accumulation and the activation in fp32; y in x's dtype,
    channels_last when x is; pooled: the fp32 (N, C) mean of y over H×W. ``index64``: None computes offsets
    in int64 only when a tensor spans 2³¹ elements or more; True forces it (tests reach that path on small
    shapes). ``tile``: ``{"BLOCK_W", "BLOCK_C", "TH", "num_warps"}`` to bypass autotuning (tests, the GPU
    probe). ``act``: "silu" (Swish), "relu", "relu6", "hardswish" or "identity", each as eager PyTorch
    computes it in fp32 (a compile-time parameter of the kernel); checked even when ``validate`` is False.
    """
    from ..ops._validate import check_act, check_dwconv_args, output_memory_format, output_size

    act = check_act(act)
    if validate:
        _, stride, padding = check_dwconv_args(x, weight, bias, stride, padding, dtypes=DTYPES, device_type=None,
                                               what="backend='triton'")
    if not available(x.device.type):
        raise ValueError(f"backend='triton' cannot run on {x.device} here (Triton installed: {HAS_TRITON}; "
                         f"CPU tensors need TRITON_INTERPRET=1 set before import)")
    from .dwconv import ACT_CODES, dwconv_bias_swish_kernel, max_tiles as dw_max_tiles

    n, c, h, w = x.shape
    k = weight.shape[-1]
    top, left, out_h, out_w = output_size(h, w, k, stride, padding)
    fmt = output_memory_format(x)
    y = torch.empty((n, c, out_h, out_w), dtype=x.dtype, device=x.device, memory_format=fmt)
    if n == 0:
        return (y, torch.empty((0, c), dtype=torch.float32, device=x.device)) if pool else y
    w_flat = weight.reshape(c, k * k).contiguous()
    b_flat = bias.contiguous()
    tiles = dw_max_tiles(out_h, out_w) if tile is None else \
        triton.cdiv(out_h, tile["TH"]) * triton.cdiv(out_w, tile["BLOCK_W"])
    # Partial sums per (n, pixel tile, c); rows past the chosen config's tile count stay zero.
    part = torch.zeros((n, tiles, c), dtype=torch.float32, device=x.device) if pool else y
    i64 = max(_span(x), _span(y), n * tiles * c if pool else 0) >= _I32_LIMIT if index64 is None else index64
    channels_last = fmt == torch.channels_last

    def grid(meta):
        return (triton.cdiv(out_h, meta["TH"]) * triton.cdiv(out_w, meta["BLOCK_W"]), triton.cdiv(c, meta["BLOCK_C"]),
                n)

    # tile: a fixed config (tests and the GPU probe reach every TH and mask path with it), else autotuned.
    kernel = dwconv_bias_swish_kernel if tile is None else dwconv_bias_swish_kernel.fn
    extra = {} if tile is None else {"CL_TILE": channels_last, **tile}
    with _device_guard(x):
        kernel[grid](
            x, w_flat, b_flat, y, part,
            c, h, w, out_h, out_w, tiles,
            *x.stride(), *y.stride(),
            top, left,
            K=k, S=stride, CHANNELS_LAST=channels_last, POOL=pool, I64=i64, ACT=ACT_CODES[act], **extra,
        )
    if not pool:
        return y
    return y, part.sum(dim=1).div_(out_h * out_w)  # a fixed-order reduction: deterministic


# ------------------------------------------------------------------------------------------------
# Squeeze-excitation

def _pow2(v: int, lo: int = 1) -> int:
    return max(lo, triton.next_power_of_2(int(v)))


def _se_args(x, reduce_weight, reduce_bias, expand_weight, expand_bias, name="x"):
    from ..ops._validate import check_se_input, check_se_weights

    what = "backend='triton'"
    c = check_se_input(x, name, DTYPES, None, what)
    if not available(x.device.type):
        raise ValueError(f"backend='triton' cannot run on {x.device} here (Triton installed: {HAS_TRITON}; "
                         f"CPU tensors need TRITON_INTERPRET=1 set before import)")
    return check_se_weights(c, reduce_weight, reduce_bias, expand_weight, expand_bias, DTYPES, x.device, what)


def _acts(inner_act, gate):
    """(inner_act, gate): the SE's inner activation and gate names, checked (the errors name the argument)."""
    from ..ops._validate import check_act, check_gate

    return check_act(inner_act, "inner_act"), check_gate(gate)


def _gate(pooled, w1, b1, w2, b2, s, acts):
    from .dwconv import ACT_CODES
    from .se import GATE_CODES, se_gate_kernel

    n, c = pooled.shape
    gate = torch.empty((n, c), dtype=torch.float32, device=pooled.device)
    if n == 0:
        return gate
    block_s = _pow2(s)
    # Keep a [BLOCK_S, BLOCK_C] tile near 4k elements (registers), at least 16 channels wide.
    block_c = min(_pow2(c, 16), max(16, 4096 // block_s))
    with _device_guard(pooled):
        se_gate_kernel[(n,)](pooled.contiguous(), w1, b1.contiguous(), w2, b2.contiguous(), gate, c, s,
                             *w1.stride(), *w2.stride(), BLOCK_S=block_s, BLOCK_C=block_c,
                             INNER=ACT_CODES[acts[0]], GATE=GATE_CODES[acts[1]], num_warps=1 if INTERPRET else 4)
    return gate


def se_gate(pooled, reduce_weight, reduce_bias, expand_weight, expand_bias, inner_act="silu", gate="sigmoid"):
    """fp32 (N, C) gate(expand(inner_act(reduce(pooled)))) from fp32 (N, C) means (any float weights).
    ``inner_act``: "silu" (EfficientNet's), "relu", "relu6", "hardswish" or "identity"; ``gate``: "sigmoid"
    or "hardsigmoid" (MobileNetV3's); each as eager PyTorch computes it in fp32."""
    from ..ops._validate import check_pooled, check_se_weights

    acts = _acts(inner_act, gate)
    if not isinstance(pooled, torch.Tensor) or pooled.dim() != 2:
        raise ValueError("pooled must be a 2-D (N, C) tensor")
    check_pooled(pooled, pooled.shape[0], pooled.shape[1], pooled.device)
    w1, b1, w2, b2, s = check_se_weights(pooled.shape[1], reduce_weight, reduce_bias, expand_weight, expand_bias,
                                         DTYPES, pooled.device, "backend='triton'")
    return _gate(pooled, w1, b1, w2, b2, s, acts)


def _pool(x):
    from .se import se_pool_kernel

    n, c, h, w = x.shape
    pooled = torch.empty((n, c), dtype=torch.float32, device=x.device)
    block_c = 16 if INTERPRET else 64
    block_p = 16 if INTERPRET else 64
    with _device_guard(x):
        se_pool_kernel[(triton.cdiv(c, block_c), n)](x, pooled, c, h * w, w, *x.stride(), 1.0 / (h * w),
                                                     BLOCK_P=block_p, BLOCK_C=block_c,
                                                     num_warps=1 if INTERPRET else 4)
    return pooled


def _scale(x, gate):
    from ..ops._validate import output_memory_format
    from .se import se_scale_kernel

    n, c, h, w = x.shape
    y = torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=output_memory_format(x))
    cl = y.stride(1) == 1
    block_p, block_c = (16, 16) if INTERPRET else ((32, 64) if cl else (256, 4))
    grid = (triton.cdiv(h * w, block_p), triton.cdiv(c, block_c), n)
    with _device_guard(x):
        se_scale_kernel[grid](x, gate, y, c, h * w, w, *x.stride(), *y.stride(), BLOCK_P=block_p, BLOCK_C=block_c,
                              num_warps=1 if INTERPRET else 4)
    return y


def squeeze_excite(x, reduce_weight, reduce_bias, expand_weight, expand_bias, inner_act="silu", gate="sigmoid"):
    """The stand-alone SE: pool, gate, scale (three launches); y in x's dtype and layout rule. ``inner_act``
    and ``gate`` as for :func:`se_gate`."""
    acts = _acts(inner_act, gate)
    w1, b1, w2, b2, s = _se_args(x, reduce_weight, reduce_bias, expand_weight, expand_bias)
    if x.shape[0] == 0:
        from ..ops._validate import output_memory_format
        return torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=output_memory_format(x))
    return _scale(x, _gate(_pool(x), w1, b1, w2, b2, s, acts))


def se_project(y, pooled, reduce_weight, reduce_bias, expand_weight, expand_bias, proj_weight, proj_bias,
               residual=None, inner_act="silu", gate="sigmoid"):
    """W · (y * gate) + bias (+ residual) per sample: the gate in the GEMM's A tiles (se_project_kernel).
    ``inner_act`` and ``gate`` as for :func:`se_gate`."""
    from ..ops._validate import check_pooled, check_projection, output_memory_format
    from .se import se_project_kernel

    acts = _acts(inner_act, gate)
    w1, b1, w2, b2, s = _se_args(y, reduce_weight, reduce_bias, expand_weight, expand_bias, name="y")
    check_pooled(pooled, y.shape[0], y.shape[1], y.device)
    pw = check_projection(y, proj_weight, proj_bias, residual, DTYPES, "backend='triton'")
    n, cin, h, w = y.shape
    cout = pw.shape[0]
    fmt = output_memory_format(y)
    out = torch.empty((n, cout, h, w), dtype=y.dtype, device=y.device, memory_format=fmt)
    if n == 0:
        return out
    y = y.contiguous(memory_format=fmt)  # pixel m at m * (pixel stride) in both layouts
    # torch ignores the stride of a size-1 dimension when it calls a tensor contiguous: with W == 1 the
    # pixels step along H (a transposed (N, C, 16, 1) view keeps stride(3) = 16).
    pixel_stride = y.stride(3) if w > 1 else y.stride(2)
    if residual is not None:
        residual = residual.contiguous(memory_format=fmt)
    g = _gate(pooled, w1, b1, w2, b2, s, acts)

    def grid(meta):
        return (triton.cdiv(h * w, meta["BLOCK_M"]), triton.cdiv(cout, meta["BLOCK_N"]), n)

    with _device_guard(y):
        se_project_kernel[grid](y, g, pw, proj_bias.contiguous(), residual if residual is not None else out, out,
                                h * w, cin, cout, y.stride(0), y.stride(1), pixel_stride, *pw.stride(),
                                out.stride(0), out.stride(1), out.stride(3),
                                HAS_RES=residual is not None, IEEE=y.dtype == torch.float32)
    return out
