"""Triton kernels for squeeze-excitation: the pool, the gate, the scale, and the projection GEMM with the
gate folded into its A tiles.

* ``se_pool_kernel``: per (sample, block of channels) the fp32 mean over H×W (for the stand-alone op;
  inside a block the depthwise kernel emits the means).
* ``se_gate_kernel``: one program per sample: h = act(W1·p + b1) as [BLOCK_S, BLOCK_C] tiles reduced
  over channels, then gate = gate(W2·h + b2) as [BLOCK_C, BLOCK_S] tiles reduced over S. fp32
  multiply-and-sum (no ``tl.dot``, so no TF32); S ≤ BLOCK_S, the next power of two. The inner activation
  (``INNER``, a code of ``dwconv.ACT_CODES``: SiLU by default) and the gate (``GATE``, a code of
  :data:`GATE_CODES`: sigmoid by default, or hardsigmoid) are compile-time parameters, each pair its own
  kernel variant, computed as eager PyTorch does in fp32.
* ``se_scale_kernel``: y = x * gate[n, c], [BLOCK_P, BLOCK_C] tiles.
* ``se_project_kernel``: out[n, :, m] = W · (y[n, :, m] * gate[n]) + bias (+ residual[n, :, m]) as a
  GEMM per sample: the (pixels × Cin) A tile is multiplied by the gate (fp32) and cast back to the input
  dtype before ``tl.dot`` (as eager rounds y * gate to y's dtype); fp32 inputs use
  ``input_precision="ieee"`` (no TF32); bias and residual in the epilogue, fp32 accumulation. y must be
  contiguous in its memory format, so pixel m of y sits at m * (w stride) in both layouts.
"""
from __future__ import annotations

import triton
import triton.language as tl

from ._env import AUTOTUNE, INTERPRET
from .dwconv import activation, relu6

# The SE gates by compile-time code (the launchers map the names of effnet_kernels.reference.GATES to these).
SIGMOID = tl.constexpr(0)
HARDSIGMOID = tl.constexpr(1)
GATE_CODES = {"sigmoid": SIGMOID.value, "hardsigmoid": HARDSIGMOID.value}


@triton.jit
def gate_activation(z, GATE: tl.constexpr):
    # GATE (a code of GATE_CODES) of fp32 z, as eager PyTorch computes it in fp32: sigmoid(z), or hardsigmoid
    # relu6(z + 3) / 6 with a correctly rounded division (eager divides by 6): NaN stays NaN, ±inf -> 1 / 0.
    if GATE == SIGMOID:
        out = tl.sigmoid(z)
    else:
        tl.static_assert(GATE == HARDSIGMOID, "GATE must be a code of GATE_CODES")
        out = tl.math.div_rn(relu6(z + 3.0), 6.0)
    return out


@triton.jit
def se_pool_kernel(x_ptr, out_ptr, C, HW, W, sxn, sxc, sxh, sxw, inv_hw,
                   BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    n = tl.program_id(1).to(tl.int64)
    offs_c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    acc = tl.zeros([BLOCK_P, BLOCK_C], dtype=tl.float32)
    base = x_ptr + n * sxn + (offs_c.to(tl.int64) * sxc)[None, :]
    for p0 in range(0, HW, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        pix = (p // W).to(tl.int64) * sxh + (p % W).to(tl.int64) * sxw
        v = tl.load(base + pix[:, None], mask=(p < HW)[:, None] & mask_c[None, :], other=0.0)
        acc += v.to(tl.float32)
    tl.store(out_ptr + n * C + offs_c, tl.sum(acc, axis=0) * inv_hw, mask=mask_c)


@triton.jit
def se_gate_kernel(p_ptr, w1_ptr, b1_ptr, w2_ptr, b2_ptr, g_ptr, C, S, sw1s, sw1c, sw2c, sw2s,
                   BLOCK_S: tl.constexpr, BLOCK_C: tl.constexpr,
                   INNER: tl.constexpr = 0, GATE: tl.constexpr = 0):  # silu and sigmoid unless given
    n = tl.program_id(0).to(tl.int64)
    offs_s = tl.arange(0, BLOCK_S)
    mask_s = offs_s < S
    h = tl.zeros([BLOCK_S], dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C)
        mask_c = offs_c < C
        p = tl.load(p_ptr + n * C + offs_c, mask=mask_c, other=0.0).to(tl.float32)
        w1 = tl.load(w1_ptr + offs_s[:, None] * sw1s + offs_c[None, :] * sw1c,
                     mask=mask_s[:, None] & mask_c[None, :], other=0.0).to(tl.float32)
        h += tl.sum(w1 * p[None, :], axis=1)
    h += tl.load(b1_ptr + offs_s, mask=mask_s, other=0.0).to(tl.float32)
    h = tl.where(mask_s, activation(h, INNER), 0.0)
    for c0 in range(0, C, BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C)
        mask_c = offs_c < C
        w2 = tl.load(w2_ptr + offs_c[:, None] * sw2c + offs_s[None, :] * sw2s,
                     mask=mask_c[:, None] & mask_s[None, :], other=0.0).to(tl.float32)
        z = tl.sum(w2 * h[None, :], axis=1) + tl.load(b2_ptr + offs_c, mask=mask_c, other=0.0).to(tl.float32)
        tl.store(g_ptr + n * C + offs_c, gate_activation(z, GATE), mask=mask_c)


@triton.jit
def se_scale_kernel(x_ptr, g_ptr, y_ptr, C, HW, W, sxn, sxc, sxh, sxw, syn, syc, syh, syw,
                    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    n = tl.program_id(2).to(tl.int64)
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask = (p < HW)[:, None] & (offs_c < C)[None, :]
    ph, pw = (p // W).to(tl.int64), (p % W).to(tl.int64)
    c64 = offs_c.to(tl.int64)
    x = tl.load(x_ptr + n * sxn + (ph * sxh + pw * sxw)[:, None] + (c64 * sxc)[None, :], mask=mask, other=0.0)
    g = tl.load(g_ptr + n * C + offs_c, mask=offs_c < C, other=0.0)
    y = x.to(tl.float32) * g[None, :]
    tl.store(y_ptr + n * syn + (ph * syh + pw * syw)[:, None] + (c64 * syc)[None, :], y.to(y_ptr.dtype.element_ty),
             mask=mask)


if INTERPRET:
    _GEMM_CONFIGS = [triton.Config({"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16}, num_warps=1)]
elif not AUTOTUNE:
    _GEMM_CONFIGS = [triton.Config({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 32}, num_warps=4, num_stages=3)]
else:
    _GEMM_CONFIGS = [
        triton.Config({"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 32}, num_warps=4, num_stages=3),
        triton.Config({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 32}, num_warps=4, num_stages=3),
        triton.Config({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 32}, num_warps=8, num_stages=3),
        triton.Config({"BLOCK_M": 64, "BLOCK_N": 32, "BLOCK_K": 64}, num_warps=4, num_stages=4),
        triton.Config({"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 32}, num_warps=2, num_stages=3),
    ]


@triton.autotune(configs=_GEMM_CONFIGS, key=["HW", "CIN", "COUT", "HAS_RES"],
                 do_bench=lambda fn, quantiles: triton.testing.do_bench(fn, warmup=5, rep=20, quantiles=quantiles))
@triton.jit
def se_project_kernel(y_ptr, g_ptr, w_ptr, b_ptr, r_ptr, o_ptr, HW, CIN, COUT,
                      syn, syc, syp, swo, swi, son, soc, sop,
                      HAS_RES: tl.constexpr, IEEE: tl.constexpr,
                      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    n = tl.program_id(2).to(tl.int64)
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m, mask_n = offs_m < HW, offs_n < COUT
    m64 = offs_m.to(tl.int64)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(0, CIN, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < CIN
        a = tl.load(y_ptr + n * syn + (m64 * syp)[:, None] + (offs_k.to(tl.int64) * syc)[None, :],
                    mask=mask_m[:, None] & mask_k[None, :], other=0.0)
        g = tl.load(g_ptr + n * CIN + offs_k, mask=mask_k, other=0.0)
        a = (a.to(tl.float32) * g[None, :]).to(y_ptr.dtype.element_ty)
        b = tl.load(w_ptr + offs_k[:, None] * swi + offs_n[None, :] * swo, mask=mask_k[:, None] & mask_n[None, :],
                    other=0.0)
        if IEEE:
            acc += tl.dot(a, b, input_precision="ieee")
        else:
            acc += tl.dot(a, b)
    acc += tl.load(b_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    out_off = n * son + (m64 * sop)[:, None] + (offs_n.to(tl.int64) * soc)[None, :]
    mask = mask_m[:, None] & mask_n[None, :]
    if HAS_RES:
        acc += tl.load(r_ptr + out_off, mask=mask, other=0.0).to(tl.float32)
    tl.store(o_ptr + out_off, acc.to(o_ptr.dtype.element_ty), mask=mask)
