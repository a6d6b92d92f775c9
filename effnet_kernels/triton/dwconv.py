"""Triton kernel: fused depthwise conv + bias (folded BN) + Swish, with the SE pool in the same pass.

Tiling. One program computes TH output rows × BLOCK_W consecutive output columns × BLOCK_C channels of
one sample, as TH accumulators of shape [BLOCK_W, BLOCK_C] (fp32). It walks the (TH-1)·S + K input rows
the band needs once; each loaded [BLOCK_W, BLOCK_C] input tile (one per input row and column shift kw)
feeds every output row it belongs to (kh = r - j·S), so a k×k conv loads ((TH-1)·S + K)·K tiles for
TH·K·K multiply-adds instead of K·K per row — the vertical sliding window kept in registers. The column
shifts are served by L1. It is an elementwise multiply-and-sum, not ``tl.dot`` (a depthwise conv has no
reduction over channels), so no TF32 enters anywhere. The epilogue adds the bias, applies the activation
in fp32 and stores in the input's dtype.

The activation is a compile-time parameter (``ACT``, a code of :data:`ACT_CODES`): each one is its own
kernel variant, without a per-element branch. :func:`activation` computes each as eager PyTorch does in
fp32 (the SE kernels use it too, for the activation between their two 1x1 convs).

Addressing is by element strides, so one kernel serves channels_last (the fast path: channels are
contiguous) and NCHW or any strided view. C and the strides are left to Triton's specialisation
(divisible by 16 or not, equal to 1 or not): that is what lets it prove a channels_last pixel 16-element
aligned and the channel mask constant over 16 channels, so loads and stores vectorise (``EVEN_C`` — C a
multiple of BLOCK_C — drops the mask). Checked in the PTX for sm_90 without a GPU
(``benchmarks/triton_ptx.py``): the earlier kernel, which did not specialise C or the outer strides, issued
only scalar loads (154 per thread for a 32×64 fp16 tile of a k=3 conv, 208 registers); this one issues
55 loads, the input tiles as vectors (80 registers for 4 rows × 8 × 64).

The pooled sibling writes each program's per-channel sum of its (fp32) outputs into a partial buffer
(N, tiles, C); the launcher reduces it over the tiles in a fixed order — deterministic, no atomics.

Offsets are int32 unless a tensor has 2³¹ elements or more, where the kernel is specialised to int64.
"""
from __future__ import annotations

import triton
import triton.language as tl
import triton.testing

from ._env import AUTOTUNE, INTERPRET


# The activations by compile-time code (the launchers map the names of effnet_kernels.reference.ACTS to these).
SILU = tl.constexpr(0)
RELU = tl.constexpr(1)
RELU6 = tl.constexpr(2)
HARDSWISH = tl.constexpr(3)
IDENTITY = tl.constexpr(4)
ACT_CODES = {"silu": SILU.value, "relu": RELU.value, "relu6": RELU6.value, "hardswish": HARDSWISH.value,
             "identity": IDENTITY.value}


def _cfg(block_w, block_c, th, warps, channels_last):
    return triton.Config({"BLOCK_W": block_w, "BLOCK_C": block_c, "TH": th, "CL_TILE": channels_last},
                         num_warps=warps)


# CL_TILE marks the layout a config is meant for; the pruner keeps those of the call's layout.
# channels_last: wide channel blocks (64 fp32 = 256 B, 128 fp16 = 256 B per pixel: whole cache lines),
# a few columns, rows of the band in registers. NCHW: long runs of one channel's columns.
_CL_CONFIGS = [_cfg(8, 64, 4, 4, True), _cfg(4, 128, 4, 4, True),    # 16 outputs per thread (k=3)
               _cfg(8, 64, 2, 4, True), _cfg(4, 128, 2, 4, True), _cfg(16, 64, 2, 8, True)]  # 8 per thread
_NCHW_CONFIGS = [_cfg(64, 4, 2, 4, False), _cfg(128, 2, 2, 4, False), _cfg(32, 8, 4, 4, False)]

if INTERPRET:
    # The interpreter would time every config: one, small (it runs each program as numpy calls whose cost
    # grows with the tile). It has both layouts' flag values to prune to, so CL_TILE is not checked here.
    _CONFIGS = [_cfg(8, 16, 2, 1, True)]
elif not AUTOTUNE:
    _CONFIGS = [_CL_CONFIGS[0], _NCHW_CONFIGS[0]]
else:
    _CONFIGS = _CL_CONFIGS + _NCHW_CONFIGS


def _outputs_per_thread(config) -> int:
    kw = config.kwargs
    return kw["BLOCK_W"] * kw["BLOCK_C"] * kw["TH"] // (32 * config.num_warps)


def _prune(configs, named_args, **kwargs):
    # The call's layout; for k ≥ 5 at most 8 outputs per thread (16 need 168–255 registers and spill:
    # benchmarks/triton_ptx.py).
    if len(configs) == 1:
        return configs
    def arg(name):
        return kwargs.get(name, named_args.get(name))
    kept = [c for c in configs if c.kwargs["CL_TILE"] == arg("CHANNELS_LAST")] or configs
    return [c for c in kept if arg("K") < 5 or _outputs_per_thread(c) <= 8] or kept


def max_tiles(out_h: int, out_w: int) -> int:
    """The most pixel tiles any config gives an out_h × out_w output (rows of the pool's partial buffer)."""
    return max(triton.cdiv(out_h, c.kwargs["TH"]) * triton.cdiv(out_w, c.kwargs["BLOCK_W"]) for c in _CONFIGS)


def _quick_bench(kernel_call, quantiles):
    # Short timing per config (the default spends 125 ms on each): many layer shapes get tuned.
    return triton.testing.do_bench(kernel_call, warmup=5, rep=20, quantiles=quantiles)


@triton.jit
def relu6(x):
    # min(max(x, 0), 6) as eager's: NaN stays NaN and -0 stays -0. By comparisons, not tl.maximum / tl.minimum,
    # which on the GPU return the other operand of a NaN.
    return tl.where(x < 0.0, 0.0, tl.where(x > 6.0, 6.0, x))


@triton.jit
def activation(z, ACT: tl.constexpr):
    # ACT (a code of ACT_CODES) of fp32 z, as eager PyTorch computes it in fp32:
    #   silu: z * sigmoid(z) (-> -0 for z << 0, NaN for -inf, NaN stays NaN);
    #   relu: max(z, 0), relu6: min(max(z, 0), 6) (NaN stays NaN in both);
    #   hardswish: z * relu6(z + 3) / 6, in that order, with a correctly rounded division (eager divides by 6;
    #   the GPU's plain fp32 division is approximate): NaN for -inf (-inf * 0), +inf for +inf;
    #   identity: z.
    if ACT == SILU:
        out = z * tl.sigmoid(z)
    elif ACT == RELU:
        out = tl.where(z < 0.0, 0.0, z)
    elif ACT == RELU6:
        out = relu6(z)
    elif ACT == HARDSWISH:
        out = tl.math.div_rn(z * relu6(z + 3.0), 6.0)
    else:
        tl.static_assert(ACT == IDENTITY, "ACT must be a code of ACT_CODES")
        out = z
    return out


@triton.jit
def _tap(acc, xv, w_ptr, w_off, mask_c, KH: tl.constexpr, KW: tl.constexpr, K: tl.constexpr):
    # acc += x · w[:, KH, KW] when (KH, KW) is a tap of this output row (resolved at compile time).
    if KH >= 0:
        if KH < K:
            wv = tl.load(w_ptr + w_off + (KH * K + KW), mask=mask_c, other=0.0).to(tl.float32)
            acc += xv * wv[None, :]
    return acc


@triton.jit
def _epilogue(acc, bias, row, OH, y_cols, syh, mask_w, mask_c, psum, POOL: tl.constexpr, ACT: tl.constexpr):
    # Bias, then the activation as eager computes it in fp32 (SiLU by default: see activation); store the
    # row; add its valid outputs to the pool's running sum.
    z = acc + bias[None, :]
    out = activation(z, ACT)
    m = (mask_w & (row < OH))[:, None] & mask_c[None, :]
    tl.store(y_cols + row * syh, out.to(y_cols.dtype.element_ty), mask=m)
    if POOL:
        psum += tl.sum(tl.where(m, out, 0.0), axis=0)
    return psum


# Tuned per layer shape, layout and activation (and, implicitly, dtype). The pool's partial buffer is zeroed before
# each trial: a config with fewer pixel tiles must not leave another config's rows behind.
@triton.autotune(configs=_CONFIGS, key=["C", "OH", "OW", "K", "S", "CHANNELS_LAST", "ACT"], reset_to_zero=["part_ptr"],
                 prune_configs_by={"early_config_prune": _prune}, do_bench=_quick_bench)
# EVEN_C: C is a multiple of the config's BLOCK_C (no channel mask).
@triton.heuristics({"EVEN_C": lambda args: args["C"] % args["BLOCK_C"] == 0})
# Spatial sizes are not specialised (each distinct divisibility would compile anew: many layer shapes,
# several configs each). C and the strides are (see the module docstring).
@triton.jit(do_not_specialize=["H", "W", "OH", "OW", "num_ptiles", "pad_top", "pad_left"])
def dwconv_bias_swish_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr, part_ptr,
    C, H, W, OH, OW, num_ptiles,
    sxn, sxc, sxh, sxw, syn, syc, syh, syw,
    pad_top, pad_left,
    K: tl.constexpr, S: tl.constexpr, CHANNELS_LAST: tl.constexpr, POOL: tl.constexpr, I64: tl.constexpr,
    EVEN_C: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr, TH: tl.constexpr,
    CL_TILE: tl.constexpr, ACT: tl.constexpr = 0,  # ACT_CODES["silu"] unless given
):
    tl.static_assert(TH == 1 or TH == 2 or TH == 4, "TH (output rows per program) must be 1, 2 or 4")
    pid_t = tl.program_id(0)  # pixel tile: (row band, column block)
    pid_c = tl.program_id(1)
    n = tl.program_id(2)
    w_tiles = tl.cdiv(OW, BLOCK_W)
    band = pid_t // w_tiles
    ow = (pid_t % w_tiles) * BLOCK_W + tl.arange(0, BLOCK_W)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_w = ow < OW
    if EVEN_C:
        mask_c = tl.full([BLOCK_C], 1, tl.int1)  # constant along C: loads and stores vectorise
    else:
        mask_c = offs_c < C
    if I64:
        n = n.to(tl.int64)
        band = band.to(tl.int64)
        ow = ow.to(tl.int64)
        offs_c = offs_c.to(tl.int64)
    oh0 = band * TH
    ih0 = oh0 * S - pad_top
    iw0 = ow * S - pad_left
    x_base = x_ptr + n * sxn + (offs_c * sxc)[None, :]
    w_off = offs_c * (K * K)

    acc0 = tl.zeros([BLOCK_W, BLOCK_C], dtype=tl.float32)
    acc1 = tl.zeros([BLOCK_W, BLOCK_C], dtype=tl.float32)
    acc2 = tl.zeros([BLOCK_W, BLOCK_C], dtype=tl.float32)
    acc3 = tl.zeros([BLOCK_W, BLOCK_C], dtype=tl.float32)
    for r in tl.static_range((TH - 1) * S + K):
        ih = ih0 + r
        row_ok = (ih >= 0) & (ih < H)
        x_row = x_base + ih * sxh
        for kw in tl.static_range(K):
            iw = iw0 + kw
            ok = mask_w & row_ok & (iw >= 0) & (iw < W)
            xv = tl.load(x_row + (iw * sxw)[:, None], mask=ok[:, None] & mask_c[None, :], other=0.0)
            xv = xv.to(tl.float32)
            acc0 = _tap(acc0, xv, w_ptr, w_off, mask_c, r, kw, K)
            if TH > 1:
                acc1 = _tap(acc1, xv, w_ptr, w_off, mask_c, r - S, kw, K)
            if TH > 2:
                acc2 = _tap(acc2, xv, w_ptr, w_off, mask_c, r - 2 * S, kw, K)
                acc3 = _tap(acc3, xv, w_ptr, w_off, mask_c, r - 3 * S, kw, K)

    bias = tl.load(b_ptr + offs_c, mask=mask_c, other=0.0).to(tl.float32)
    y_cols = y_ptr + n * syn + (ow * syw)[:, None] + (offs_c * syc)[None, :]
    psum = tl.zeros([BLOCK_C], dtype=tl.float32)
    psum = _epilogue(acc0, bias, oh0, OH, y_cols, syh, mask_w, mask_c, psum, POOL, ACT)
    if TH > 1:
        psum = _epilogue(acc1, bias, oh0 + 1, OH, y_cols, syh, mask_w, mask_c, psum, POOL, ACT)
    if TH > 2:
        psum = _epilogue(acc2, bias, oh0 + 2, OH, y_cols, syh, mask_w, mask_c, psum, POOL, ACT)
        psum = _epilogue(acc3, bias, oh0 + 3, OH, y_cols, syh, mask_w, mask_c, psum, POOL, ACT)
    if POOL:
        tl.store(part_ptr + (n * num_ptiles + pid_t) * C + offs_c, psum, mask=mask_c)
