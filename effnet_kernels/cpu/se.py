"""Squeeze-excitation through the C++ kernels: the stand-alone SE, the gate from pooled means, the gate
applied, and the SE folded into the block's projection (the gate into per-sample weights or into the
activation, whichever costs less, then torch's GEMM)."""
from __future__ import annotations

from typing import Optional

import torch

from .._ext import _C, require_cpp
from ..ops._validate import check_se_input, check_se_weights, output_memory_format
from . import _isa
from ._cache import _MAX_PLANS, _all_cpu_f32, _cached_pack, _recall, _remember, _se_plans



def _se_packed(w1, b1, w2, b2, c: int, s: int, isa: str) -> torch.Tensor:
    C = _C if _C is not None else require_cpp("the C++ squeeze-excitation kernels")

    def fill(out):
        bb1, bb2 = b1.contiguous(), b2.contiguous()
        C.se_pack(c, s, w1.data_ptr(), list(w1.stride()), bb1.data_ptr(), w2.data_ptr(), list(w2.stride()),
                  bb2.data_ptr(), out.data_ptr())
    # Keyed by the (O, I) views' bases, the caller's tensors (a view shares its base's version counter),
    # and the views' geometry (two views of one base are different weights).
    def base(t):
        return t._base if t._base is not None else t
    geometry = tuple((t.shape, t.stride(), t.storage_offset()) for t in (w1, b1, w2, b2))
    return _cached_pack("se", (base(w1), b1, base(w2), b2), isa, C.se_packed_size(c, s), fill, geometry)


def _se_plan(x: torch.Tensor, isa: str):
    key = (x.shape, x.stride(), isa)
    entry = _se_plans.get(key)
    if entry is None:
        C = _C if _C is not None else require_cpp("the C++ squeeze-excitation kernels")
        fmt = output_memory_format(x)
        y_strides = torch.empty(x.shape, dtype=torch.float32, memory_format=fmt, device="meta").stride()
        entry = (C.SePlan(x.shape, x.stride(), y_strides, isa), y_strides)
        if len(_se_plans) >= _MAX_PLANS:
            _se_plans.clear()
        _se_plans[key] = entry
    return entry


def squeeze_excite(x, reduce_weight, reduce_bias, expand_weight, expand_bias, isa: Optional[str] = None,
                   validate: bool = True, inner_act: str = "silu", gate: str = "sigmoid"):
    """x * gate(expand(inner_act(reduce(mean_hw(x))))) by the C++ kernels (fp32 CPU); y in x's layout rule."""
    isa = isa if isa is not None else _isa.forced
    weights = (reduce_weight, reduce_bias, expand_weight, expand_bias)
    c = check_se_input(x, "x", (torch.float32,), "cpu", "the C++ CPU kernels") if validate else x.shape[1]
    w1, b1, w2, b2, s = check_se_weights(c, *weights, (torch.float32,), x.device, "the C++ CPU kernels")
    plan, y_strides = _se_plan(x, isa)
    packed = _se_packed(w1, b1, w2, b2, c, s, isa)
    _remember(("se", x.shape, x.stride(), *map(id, weights), isa, inner_act, gate), weights,
              (plan, y_strides, s, packed, inner_act, gate))
    return _run_se(x, plan, y_strides, s, packed, inner_act, gate)


def _run_se(x, plan, y_strides, s, packed, inner_act, gate):
    y = torch.empty_strided(x.shape, y_strides)
    if x.shape[0]:
        plan.run(x.data_ptr(), packed.data_ptr(), s, y.data_ptr(), torch.get_num_threads(), inner_act, gate)
    return y


def try_fast_se(x, reduce_weight, reduce_bias, expand_weight, expand_bias, inner_act="silu", gate="sigmoid"):
    """squeeze_excite for arguments already validated (same shapes and weight tensors), else None."""
    if _C is None or not _all_cpu_f32(x):
        return None
    weights = (reduce_weight, reduce_bias, expand_weight, expand_bias)
    if not all(isinstance(t, torch.Tensor) for t in weights):
        return None
    if type(inner_act) is not str or type(gate) is not str:
        return None
    hit = _recall(("se", x.shape, x.stride(), *map(id, weights), _isa.forced, inner_act, gate), weights)
    return None if hit is None else _run_se(x, *hit)


def _gate_packed(pooled, packed, s: int, isa: str, inner_act: str = "silu", gate_act: str = "sigmoid") -> torch.Tensor:
    n, c = pooled.shape
    gate = torch.empty_strided((n, c), (c, 1))
    if n:
        pooled = pooled.contiguous()
        _C.se_gate(n, c, s, packed.data_ptr(), pooled.data_ptr(), gate.data_ptr(), torch.get_num_threads(), isa,
                   inner_act, gate_act)
    return gate


def se_gate(pooled, w1, b1, w2, b2, s: int, isa: Optional[str] = None, inner_act: str = "silu",
            gate: str = "sigmoid") -> torch.Tensor:
    """gate (N, C) fp32 from pooled means (validated by the caller; weights as (O, I) views)."""
    isa = isa if isa is not None else _isa.forced
    return _gate_packed(pooled, _se_packed(w1, b1, w2, b2, pooled.shape[1], s, isa), s, isa, inner_act, gate)


def se_apply(y: torch.Tensor, gate: torch.Tensor, isa: Optional[str] = None) -> torch.Tensor:
    """y * gate[n, c] (new tensor in y's layout rule)."""
    plan, y_strides = _se_plan(y, isa if isa is not None else _isa.forced)
    out = torch.empty_strided(y.shape, y_strides)
    if y.shape[0]:
        plan.apply(y.data_ptr(), gate.contiguous().data_ptr(), out.data_ptr(), torch.get_num_threads())
    return out


def se_project(y, pooled, w1, b1, w2, b2, s: int, pw, pb, residual=None, isa: Optional[str] = None,
               remember=None, inner_act: str = "silu", gate: str = "sigmoid") -> torch.Tensor:
    """conv1x1(y * gate, pw) + pb (+ residual), fp32 CPU, arguments validated by the caller.

    The gate (N, Cin) comes from the C++ kernel. It is folded where it costs least: into per-sample weights
    W·diag(gate_n) (Cout·Cin multiplies per sample, N GEMMs in one batched call) when Cout < H·W, else into
    the activation (H·W·Cin, the SIMD scale kernel) ahead of one GEMM. The GEMM runs on y's layout as it
    is (channels_last: (N, HW, Cin) × (Cin, Cout); NCHW: (Cout, Cin) × (N, Cin, HW)); the bias, or the
    residual, is the GEMM's accumulate input (the bias is added afterwards when there is a residual).
    ``remember``: the public arguments ``(reduce_weight, reduce_bias, expand_weight, expand_bias,
    proj_weight, proj_bias)``, to let :func:`try_fast_se_project` skip validation next time.
    """
    isa = isa if isa is not None else _isa.forced
    packed = _se_packed(w1, b1, w2, b2, y.shape[1], s, isa)
    if remember is not None:
        _remember(_project_key(y, remember, residual, isa, inner_act, gate), remember, (s, packed))
    return _project(y, pooled, packed, s, pw, pb, residual, isa, inner_act, gate)


def _project_key(y, weights, residual, isa, inner_act, gate):
    return ("proj", y.shape, y.stride(), *map(id, weights),
            None if residual is None else (residual.shape, residual.stride()), isa, inner_act, gate)


def try_fast_se_project(y, pooled, reduce_weight, reduce_bias, expand_weight, expand_bias, proj_weight, proj_bias,
                        residual, inner_act="silu", gate="sigmoid"):
    """se_project for arguments already validated (same shapes and weight tensors), else None."""
    if _C is None or not _all_cpu_f32(y, pooled) or not (residual is None or _all_cpu_f32(residual)):
        return None
    weights = (reduce_weight, reduce_bias, expand_weight, expand_bias, proj_weight, proj_bias)
    if not all(isinstance(t, torch.Tensor) for t in weights):
        return None
    if pooled.dim() != 2 or pooled.shape[0] != y.shape[0] or pooled.shape[1] != y.shape[1]:
        return None
    if type(inner_act) is not str or type(gate) is not str:
        return None
    hit = _recall(_project_key(y, weights, residual, _isa.forced, inner_act, gate), weights)
    if hit is None:
        return None
    s, packed = hit
    pw = proj_weight.reshape(proj_weight.shape[0], proj_weight.shape[1])
    return _project(y, pooled, packed, s, pw, proj_bias, residual, _isa.forced, inner_act, gate)


def _project(y, pooled, packed, s: int, pw, pb, residual, isa: str, inner_act: str = "silu",
             gate_act: str = "sigmoid") -> torch.Tensor:
    n, cin, h, w = y.shape
    cout, hw = pw.shape[0], h * w
    fmt = output_memory_format(y)
    # (empty_strided: 3 µs; torch.empty with a memory format takes 6)
    strides = (hw * cout, 1, w * cout, cout) if fmt == torch.channels_last else (cout * hw, hw, w, 1)
    out = torch.empty_strided((n, cout, h, w), strides)
    if n == 0:
        return out
    if not (y.is_contiguous(memory_format=fmt)):
        y = y.contiguous(memory_format=fmt)
    gate = _gate_packed(pooled, packed, s, isa, inner_act, gate_act)
    scale_weights = cout < hw
    if fmt == torch.channels_last:
        o = out.permute(0, 2, 3, 1).reshape(n, hw, cout)
        acc = pb.view(1, 1, cout)
        if residual is not None:
            acc = residual.contiguous(memory_format=fmt).permute(0, 2, 3, 1).reshape(n, hw, cout)
        if scale_weights and n == 1:  # one GEMM: addmm (baddbmm copies its transposed operand)
            torch.addmm(acc.reshape(-1, cout), y.permute(0, 2, 3, 1).reshape(hw, cin), (pw * gate).t(),
                        out=o.view(hw, cout))
        elif scale_weights:
            wn = pw.unsqueeze(0) * gate.unsqueeze(1)  # (N, Cout, Cin)
            torch.baddbmm(acc, y.permute(0, 2, 3, 1).reshape(n, hw, cin), wn.transpose(1, 2), out=o)
        else:
            ys = se_apply(y, gate, isa)
            torch.addmm(acc.reshape(-1, cout), ys.permute(0, 2, 3, 1).reshape(n * hw, cin), pw.t(),
                        out=o.view(n * hw, cout))
        if residual is not None:
            o.add_(pb)
    else:
        o = out.view(n, cout, hw)
        acc = pb.view(1, cout, 1)
        if residual is not None:
            acc = residual.contiguous().view(n, cout, hw)
        if scale_weights:
            wn = pw.unsqueeze(0) * gate.unsqueeze(1)
            torch.baddbmm(acc, wn, y.view(n, cin, hw), out=o)
        else:
            ys = se_apply(y, gate, isa)
            torch.baddbmm(acc, pw.unsqueeze(0).expand(n, cout, cin), ys.view(n, cin, hw), out=o)
        if residual is not None:
            o.add_(pb.view(1, cout, 1))
    return out
