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
import os
from typing import Optional, Tuple

import torch

try:
    import triton  # noqa: F401  (the top-level Triton package)
    HAS_TRITON = True
except ImportError:  # pragma: no cover - CI installs triton with torch
    HAS_TRITON = False

INTERPRET = os.environ.get("TRITON_INTERPRET", "") not in ("", "0")
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_I32_LIMIT = 2 ** 31

__all__ = ["HAS_TRITON", "INTERPRET", "DTYPES", "available", "dwconv_bias_swish"]


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
                      index64: Optional[bool] = None,
                      tile: Optional[dict] = None) -> torch.Tensor | Tuple[torch.Tensor, torch.Tensor]:
    """``silu(depthwise_conv2d(x, weight) + bias)`` by the Triton kernel; ``(y, pooled)`` when ``pool``.

    x: (N, C, H, W) fp32/fp16/bf16 on CUDA (or CPU under TRITON_INTERPRET=1), any strides; weight
    (C, 1, k, k) and bias (C,) in x's dtype. Accumulation and Swish in fp32; y in x's dtype, channels_last
    when x is; pooled: the fp32 (N, C) mean of y over H×W. ``index64``: None computes offsets in int64
    only when a tensor spans 2³¹ elements or more; True forces it (tests reach that path on small shapes).
    ``tile``: ``{"BLOCK_W", "BLOCK_C", "TH", "num_warps"}`` to bypass autotuning (tests, the GPU probe).
    """
    from .._cpu import check_dwconv_args, output_memory_format, output_size

    if validate:
        _, stride, padding = check_dwconv_args(x, weight, bias, stride, padding, dtypes=DTYPES, device_type=None,
                                               what="backend='triton'")
    if not available(x.device.type):
        raise ValueError(f"backend='triton' cannot run on {x.device} here (Triton installed: {HAS_TRITON}; "
                         f"CPU tensors need TRITON_INTERPRET=1 set before import)")
    from .dwconv import dwconv_bias_swish_kernel, max_tiles as dw_max_tiles

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
            K=k, S=stride, CHANNELS_LAST=channels_last, POOL=pool, I64=i64, **extra,
        )
    if not pool:
        return y
    return y, part.sum(dim=1).div_(out_h * out_w)  # a fixed-order reduction: deterministic
