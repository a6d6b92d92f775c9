"""Triton kernel: fused depthwise conv + bias (folded BN) + Swish, with the SE pool in the same pass.

One program computes a tile of BLOCK_P output pixels × BLOCK_C channels of one sample: for each of the
k×k taps it loads the shifted input tile (masked at the borders: zero padding), multiplies by the tap's
per-channel weight and accumulates in fp32 — an elementwise multiply-and-sum, not ``tl.dot`` (a
depthwise conv has no reduction over channels), so no TF32 enters anywhere. The epilogue adds the bias,
applies Swish in fp32 and stores in the input's dtype. Addressing is by element strides, so one kernel
serves channels_last (the fast path: channels are contiguous, loads vectorise along C) and NCHW or any
strided view; Triton specialises stride arguments equal to 1, so the contiguous axis is known at compile
time.

The pooled sibling writes each tile's per-channel sum of the (fp32) outputs into a partial buffer
(N, pixel tiles, C); the launcher reduces it over the tiles in a fixed order — deterministic, no atomics.

Offsets are int32 unless a tensor has 2³¹ elements or more, where the kernel is specialised to int64.
"""
from __future__ import annotations

import os

import triton
import triton.language as tl
import triton.testing

INTERPRET = os.environ.get("TRITON_INTERPRET", "") not in ("", "0")
# EFFNET_TRITON_AUTOTUNE=0 keeps one config (no tuning): for test runs over many shapes, where every new
# shape would otherwise compile and time every config.
AUTOTUNE = os.environ.get("EFFNET_TRITON_AUTOTUNE", "1") not in ("", "0")

if INTERPRET or not AUTOTUNE:
    # The interpreter would time every config: one, small (it runs each program as numpy calls whose
    # cost grows with the tile: 16×16 with 9 taps ~40 ms, 32×32 with 25 taps ~450 ms here).
    _CONFIGS = [triton.Config({"BLOCK_P": 16, "BLOCK_C": 16}, num_warps=4)] if INTERPRET else \
        [triton.Config({"BLOCK_P": 32, "BLOCK_C": 64}, num_warps=4)]
else:
    _CONFIGS = [
        triton.Config({"BLOCK_P": 32, "BLOCK_C": 64}, num_warps=4),
        triton.Config({"BLOCK_P": 64, "BLOCK_C": 64}, num_warps=4),
        triton.Config({"BLOCK_P": 16, "BLOCK_C": 128}, num_warps=4),
        triton.Config({"BLOCK_P": 128, "BLOCK_C": 32}, num_warps=8),
        triton.Config({"BLOCK_P": 256, "BLOCK_C": 8}, num_warps=4),  # NCHW: long runs of one channel's pixels
    ]


def _quick_bench(kernel_call, quantiles):
    # Short timing per config (the default spends 125 ms on each): many layer shapes get tuned.
    return triton.testing.do_bench(kernel_call, warmup=5, rep=20, quantiles=quantiles)


# Tuned per layer shape and layout (and, implicitly, dtype). The pool's partial buffer is zeroed before
# each trial: a config with fewer pixel tiles must not leave another config's rows behind.
@triton.autotune(configs=_CONFIGS, key=["C", "OH", "OW", "K", "S", "CHANNELS_LAST"], reset_to_zero=["part_ptr"],
                 do_bench=_quick_bench)
# Sizes and the outer strides are not specialised (each distinct divisibility would compile anew: many
# layer shapes, several configs each); the inner strides are, so a contiguous axis (stride 1) is known.
@triton.jit(do_not_specialize=["C", "H", "W", "OH", "OW", "num_ptiles", "sxn", "sxh", "syn", "syh", "pad_top",
                               "pad_left"])
def dwconv_bias_swish_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr, part_ptr,
    C, H, W, OH, OW, num_ptiles,
    sxn, sxc, sxh, sxw, syn, syc, syh, syw,
    pad_top, pad_left,
    K: tl.constexpr, S: tl.constexpr, CHANNELS_LAST: tl.constexpr, POOL: tl.constexpr, I64: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    pid_p = tl.program_id(0)
    pid_c = tl.program_id(1)
    n = tl.program_id(2)
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_p = offs_p < OH * OW
    mask_c = offs_c < C
    oh = offs_p // OW
    ow = offs_p % OW
    if I64:
        n = n.to(tl.int64)
        oh = oh.to(tl.int64)
        ow = ow.to(tl.int64)
        offs_c = offs_c.to(tl.int64)
    x_base = x_ptr + n * sxn
    x_chan = (offs_c * sxc)[None, :]
    acc = tl.zeros([BLOCK_P, BLOCK_C], dtype=tl.float32)
    for kh in tl.static_range(K):
        ih = oh * S - pad_top + kh
        row_ok = mask_p & (ih >= 0) & (ih < H)
        for kw in tl.static_range(K):
            iw = ow * S - pad_left + kw
            ok = row_ok & (iw >= 0) & (iw < W)
            xv = tl.load(x_base + (ih * sxh + iw * sxw)[:, None] + x_chan, mask=ok[:, None] & mask_c[None, :],
                         other=0.0)
            wv = tl.load(w_ptr + offs_c * (K * K) + (kh * K + kw), mask=mask_c, other=0.0)
            acc += xv.to(tl.float32) * wv.to(tl.float32)[None, :]
    bias = tl.load(b_ptr + offs_c, mask=mask_c, other=0.0).to(tl.float32)
    acc += bias[None, :]
    # Swish as eager computes it in fp32: z * sigmoid(z) (-> -0 for z << 0, NaN for -inf, NaN stays NaN).
    out = acc * tl.sigmoid(acc)
    y_off = n * syn + (oh * syh + ow * syw)[:, None] + (offs_c * syc)[None, :]
    tl.store(y_ptr + y_off, out.to(y_ptr.dtype.element_ty), mask=mask_p[:, None] & mask_c[None, :])
    if POOL:
        tile_sum = tl.sum(tl.where(mask_p[:, None], out, 0.0), axis=0)
        tl.store(part_ptr + (n * num_ptiles + pid_p) * C + offs_c, tile_sum, mask=mask_c)
