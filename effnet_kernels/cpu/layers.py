"""Prepared CPU layers for what a fused model builds once: the SE folded into the projection
(:class:`SeProjection`) and a 1×1 convolution as this package's GEMM (:class:`Conv1x1`)."""
from __future__ import annotations

from typing import Optional

import torch

from .._ext import _C
from ..ops._validate import as_matrix, check_act, check_gate, check_se_weights
from . import _isa
from ._cache import _F32
from .se import _project



class SeProjection:
    """se_project with everything prepared once (what a fused model builds at fuse time): the SE weights
    validated and packed, the projection as an (O, I) matrix. Calling it runs only the gate kernel, the
    fold (weights or activation) and the GEMM — no validation, no cache lookups.

    ``prepared(y, pooled, residual=None)``: y fp32 (N, Cin, H, W) in either layout, pooled its fp32 (N, Cin)
    means (from the depthwise op), residual None or (N, Cout, H, W).
    """

    def __init__(self, reduce_weight, reduce_bias, expand_weight, expand_bias, proj_weight, proj_bias,
                 isa: Optional[str] = None, inner_act: str = "silu", gate: str = "sigmoid"):
        self.isa = isa if isa is not None else _isa.forced
        self.inner_act, self.gate = check_act(inner_act, "inner_act"), check_gate(gate)
        c = proj_weight.shape[1]
        w1, b1, w2, b2, self.squeeze = check_se_weights(c, reduce_weight, reduce_bias, expand_weight, expand_bias,
                                                        (torch.float32,), torch.device("cpu"), "SeProjection")
        self.packed = torch.empty(_C.se_packed_size(c, self.squeeze), dtype=torch.float32)
        b1c, b2c = b1.contiguous(), b2.contiguous()
        _C.se_pack(c, self.squeeze, w1.data_ptr(), list(w1.stride()), b1c.data_ptr(), w2.data_ptr(),
                   list(w2.stride()), b2c.data_ptr(), self.packed.data_ptr())
        self.weight = as_matrix(proj_weight, "proj_weight", None, c, "SeProjection").detach().clone()
        if proj_bias.shape != (self.weight.shape[0],) or proj_bias.dtype != torch.float32:
            raise ValueError(f"proj_bias must be float32 of shape ({self.weight.shape[0]},), got {proj_bias.dtype} "
                             f"{tuple(proj_bias.shape)}")
        self.bias = proj_bias.detach().clone()

    def __call__(self, y: torch.Tensor, pooled: torch.Tensor, residual: Optional[torch.Tensor] = None):
        # Cheap guards for what the C++ gate and scale read (no full validation: this is the lean path).
        c = self.weight.shape[1]
        if not (y.is_cpu and y.dtype is _F32 and y.dim() == 4 and y.shape[1] == c):
            raise ValueError(f"y must be fp32 CPU (N, {c}, H, W), got {y.dtype} {tuple(y.shape)} on {y.device}")
        if not (pooled.is_cpu and pooled.dtype is _F32 and tuple(pooled.shape) == (y.shape[0], c)):
            raise ValueError(f"pooled must be fp32 CPU ({y.shape[0]}, {c}), got {pooled.dtype} "
                             f"{tuple(pooled.shape)} on {pooled.device}")
        if residual is not None and not (residual.is_cpu and residual.dtype is _F32 and tuple(residual.shape) == (
                y.shape[0], self.weight.shape[0], y.shape[2], y.shape[3])):
            raise ValueError(f"residual must be fp32 CPU (N, Cout, H, W), got {tuple(residual.shape)}")
        return _project(y, pooled, self.packed, self.squeeze, self.weight, self.bias, residual, self.isa,
                        self.inner_act, self.gate)


class Conv1x1:
    """A 1×1 convolution (fp32, CPU) as this package's GEMM on the channels_last view, with the weight
    (Cout, Cin) packed once: ``conv(x, swish=False, residual=None)`` returns channels_last
    ``act(conv1x1(x) + bias) + residual``. What :class:`effnet_kernels._C.Net` runs per 1×1 layer, for
    benchmarks and tests that time one layer."""

    def __init__(self, weight: torch.Tensor, bias: Optional[torch.Tensor] = None, isa: Optional[str] = None):
        w = weight.detach().reshape(weight.shape[0], -1)
        if w.dtype is not _F32 or not w.is_cpu:
            raise ValueError(f"weight must be fp32 on the CPU, got {w.dtype} on {w.device}")
        self.isa = isa if isa is not None else (_isa.forced or "")
        self.cout, self.cin = w.shape
        self.packed = torch.empty(_C.gemm_packed_size(self.cout, self.cin, self.isa), dtype=_F32)
        _C.gemm_pack(self.cout, self.cin, w.data_ptr(), w.stride(0), w.stride(1), self.packed.data_ptr(), self.isa)
        if bias is not None and (bias.shape != (self.cout,) or bias.dtype is not _F32):
            raise ValueError(f"bias must be fp32 of shape ({self.cout},), got {bias.dtype} {tuple(bias.shape)}")
        self.bias = None if bias is None else bias.detach().contiguous().clone()

    def __call__(self, x: torch.Tensor, swish: bool = False, residual: Optional[torch.Tensor] = None):
        if not (x.is_cpu and x.dtype is _F32 and x.dim() == 4 and x.shape[1] == self.cin):
            raise ValueError(f"x must be fp32 CPU (N, {self.cin}, H, W), got {x.dtype} {tuple(x.shape)} on {x.device}")
        n, _, h, w = x.shape
        x = x.contiguous(memory_format=torch.channels_last)
        out = torch.empty((n, self.cout, h, w), dtype=_F32, memory_format=torch.channels_last)
        r = 0
        if residual is not None:
            if tuple(residual.shape) != (n, self.cout, h, w) or residual.dtype is not _F32 or not residual.is_cpu:
                raise ValueError(f"residual must be fp32 CPU {(n, self.cout, h, w)}, got {tuple(residual.shape)}")
            residual = residual.contiguous(memory_format=torch.channels_last)
            r = residual.data_ptr()
        _C.gemm(n * h * w, self.cout, self.cin, x.data_ptr(), self.cin, self.packed.data_ptr(),
                0 if self.bias is None else self.bias.data_ptr(), 0, 0, r, self.cout, out.data_ptr(), self.cout,
                "silu" if swish else "identity", torch.get_num_threads(), self.isa)
        return out
