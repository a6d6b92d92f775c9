"""The squeeze-excitation ops: ``squeeze_excite`` (stand-alone), ``se_gate`` (the gate from pooled means) and
``se_project`` (the gate folded into the block's projection, + residual), each one ``torch.library`` op
with a fake, CPU and CUDA kernels and a refusing autograd formula; the wrappers dispatch through
``_dispatch.dispatch``."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import cpu as _cpu, reference
from .._ext import has_cpp
from ._dispatch import FLOATS, OpSpec, dispatch, dtypes_for, refuse_backward, triton_kernels
from ._validate import (check_act, check_gate, check_pooled, check_projection, check_se_input, check_se_weights,
                        output_memory_format)

_SE_WHAT = "the squeeze-excitation ops"
_SE_NAMES = ("reduce_weight", "reduce_bias", "expand_weight", "expand_bias")


def _cpu_fp32(*tensors) -> bool:
    """Whether the C++ kernels run (the rule of :func:`dtypes_for` for ``backend=None`` on the CPU): built,
    and every one of ``tensors`` float32 (None: absent)."""
    return has_cpp() and all(t is None or t.dtype == torch.float32 for t in tensors)


@torch.library.custom_op("effnet_kernels::squeeze_excite", mutates_args=(), device_types="cpu")
def _squeeze_excite_op(x: Tensor, reduce_weight: Tensor, reduce_bias: Tensor, expand_weight: Tensor,
                       expand_bias: Tensor, inner_act: str = "silu", gate: str = "sigmoid") -> Tensor:
    # The op can be called directly (torch.ops.effnet_kernels.squeeze_excite): validate as the wrapper does.
    c = check_se_input(x, "x", FLOATS, "cpu", _SE_WHAT)
    check_se_weights(c, reduce_weight, reduce_bias, expand_weight, expand_bias, FLOATS, x.device, _SE_WHAT)
    _same_dtype_as_x(x, reduce_weight)
    _check_acts(inner_act, gate)
    if _cpu_fp32(x, reduce_weight):
        return _cpu.squeeze_excite(x, reduce_weight, reduce_bias, expand_weight, expand_bias, inner_act=inner_act,
                                   gate=gate)
    out = reference.squeeze_excite(x, reduce_weight, reduce_bias, expand_weight, expand_bias, inner_act, gate)
    return out.contiguous(memory_format=output_memory_format(x))


@_squeeze_excite_op.register_fake
def _(x, reduce_weight, reduce_bias, expand_weight, expand_bias, inner_act="silu", gate="sigmoid"):
    return torch.empty_like(x, memory_format=output_memory_format(x))


@torch.library.custom_op("effnet_kernels::se_gate", mutates_args=(), device_types="cpu")
def _se_gate_op(pooled: Tensor, reduce_weight: Tensor, reduce_bias: Tensor, expand_weight: Tensor,
                expand_bias: Tensor, inner_act: str = "silu", gate: str = "sigmoid") -> Tensor:
    # The op can be called directly (torch.ops.effnet_kernels.se_gate): validate what the C++ kernel reads.
    if pooled.dim() != 2:
        raise ValueError(f"pooled must be 2-D (N, C), got shape {tuple(pooled.shape)}")
    check_pooled(pooled, pooled.shape[0], pooled.shape[1], pooled.device)
    c = pooled.shape[1]
    w1, b1, w2, b2, s = check_se_weights(c, reduce_weight, reduce_bias, expand_weight, expand_bias, FLOATS,
                                              pooled.device, _SE_WHAT)
    _check_acts(inner_act, gate)
    if _cpu_fp32(reduce_weight):
        return _cpu.se_gate(pooled, w1, b1, w2, b2, s, inner_act=inner_act, gate=gate)
    return reference.se_gate(pooled, reduce_weight, reduce_bias, expand_weight, expand_bias, inner_act, gate).float()


@_se_gate_op.register_fake
def _(pooled, reduce_weight, reduce_bias, expand_weight, expand_bias, inner_act="silu", gate="sigmoid"):
    return pooled.new_empty(pooled.shape, dtype=torch.float32)


@torch.library.custom_op("effnet_kernels::se_project", mutates_args=(), device_types="cpu")
def _se_project_op(y: Tensor, pooled: Tensor, reduce_weight: Tensor, reduce_bias: Tensor, expand_weight: Tensor,
                   expand_bias: Tensor, proj_weight: Tensor, proj_bias: Tensor, residual: Optional[Tensor],
                   inner_act: str = "silu", gate: str = "sigmoid") -> Tensor:
    # The op can be called directly (torch.ops.effnet_kernels.se_project): validate as the wrapper does.
    check_se_input(y, "y", FLOATS, "cpu", _SE_WHAT)
    check_pooled(pooled, y.shape[0], y.shape[1], y.device)
    w1, b1, w2, b2, s = check_se_weights(y.shape[1], reduce_weight, reduce_bias, expand_weight, expand_bias,
                                              FLOATS, y.device, _SE_WHAT)
    pw = check_projection(y, proj_weight, proj_bias, residual, FLOATS, _SE_WHAT)
    _check_acts(inner_act, gate)
    if _cpu_fp32(y, reduce_weight):
        return _cpu.se_project(y, pooled, w1, b1, w2, b2, s, pw, proj_bias, residual, inner_act=inner_act, gate=gate)
    out = reference.se_project(y, pooled, reduce_weight, reduce_bias, expand_weight, expand_bias, proj_weight,
                               proj_bias, residual, inner_act, gate)
    return out.contiguous(memory_format=output_memory_format(y))


def _fake_project_out(y, proj_weight):
    shape = (y.shape[0], proj_weight.shape[0], y.shape[2], y.shape[3])
    return torch.empty(shape, dtype=y.dtype, device=y.device, memory_format=output_memory_format(y))


@_se_project_op.register_fake
def _(y, pooled, reduce_weight, reduce_bias, expand_weight, expand_bias, proj_weight, proj_bias, residual,
      inner_act="silu", gate="sigmoid"):
    return _fake_project_out(y, proj_weight)


def _cuda_se():
    kernels = triton_kernels("cuda")
    if kernels is None:
        raise RuntimeError("effnet_kernels: the CUDA kernels of the squeeze-excitation ops need Triton, which is not "
                           "importable here")
    return kernels


@_squeeze_excite_op.register_kernel("cuda")
def _(x, reduce_weight, reduce_bias, expand_weight, expand_bias, inner_act="silu", gate="sigmoid"):
    return _cuda_se().squeeze_excite(x, reduce_weight, reduce_bias, expand_weight, expand_bias, inner_act=inner_act,
                                     gate=gate)


@_se_gate_op.register_kernel("cuda")
def _(pooled, reduce_weight, reduce_bias, expand_weight, expand_bias, inner_act="silu", gate="sigmoid"):
    return _cuda_se().se_gate(pooled, reduce_weight, reduce_bias, expand_weight, expand_bias, inner_act=inner_act,
                              gate=gate)


@_se_project_op.register_kernel("cuda")
def _(y, pooled, reduce_weight, reduce_bias, expand_weight, expand_bias, proj_weight, proj_bias, residual,
      inner_act="silu", gate="sigmoid"):
    return _cuda_se().se_project(y, pooled, reduce_weight, reduce_bias, expand_weight, expand_bias, proj_weight,
                                 proj_bias, residual, inner_act=inner_act, gate=gate)


def _check_acts(inner_act, gate) -> None:
    check_act(inner_act, "inner_act")
    check_gate(gate)


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
    c = check_se_input(x, name, dtypes, "cpu" if backend == "cpp" else None, what)
    checked = check_se_weights(c, *weights, dtypes, x.device, what)
    if name == "x":
        _same_dtype_as_x(x, weights[0])
    return c, checked, dtypes, what


# Each spec's args end with (inner_act, gate), the SE's activations.

class _SqueezeExciteSpec(OpSpec):
    op, names = "squeeze_excite", ("x",) + _SE_NAMES

    def fast(self, x, w1, b1, w2, b2, inner_act, gate):
        return _cpu.try_fast_se(x, w1, b1, w2, b2, inner_act, gate)  # CPU fp32, arguments seen valid before

    def validate(self, backend, x, w1, b1, w2, b2, inner_act, gate):
        _check_acts(inner_act, gate)
        return _se_validate(x, "x", (w1, b1, w2, b2), backend)

    def cpp_runs(self, v, x, reduce_weight, *rest):
        return _cpu_fp32(x, reduce_weight)

    def cpp(self, backend, v, x, w1, b1, w2, b2, inner_act, gate):
        return _cpu.squeeze_excite(x, w1, b1, w2, b2, validate=False, inner_act=inner_act, gate=gate)

    def registered(self, v, *args):
        return _squeeze_excite_op(*args)

    def reference(self, v, *args):
        return reference.squeeze_excite(*args)

    def triton(self, kernels, v, x, w1, b1, w2, b2, inner_act, gate):
        return kernels.squeeze_excite(x, w1, b1, w2, b2, inner_act=inner_act, gate=gate)


class _GateSpec(OpSpec):
    op, names = "se_gate", ("pooled",) + _SE_NAMES

    def validate(self, backend, pooled, w1, b1, w2, b2, inner_act, gate):
        _check_acts(inner_act, gate)
        weights = (w1, b1, w2, b2)
        if not isinstance(pooled, Tensor):
            raise TypeError(f"pooled must be a torch.Tensor, got {type(pooled).__name__}")
        if pooled.dim() != 2:
            raise ValueError(f"pooled must be 2-D (N, C), got shape {tuple(pooled.shape)}")
        check_pooled(pooled, pooled.shape[0], pooled.shape[1], pooled.device)
        if backend == "cpp" and pooled.device.type != "cpu":
            raise ValueError(f"pooled must be on the CPU for backend='cpp', got device {pooled.device}")
        on_cpu = pooled.device.type == "cpu"
        return check_se_weights(pooled.shape[1], *weights, dtypes_for(backend, "cpu" if on_cpu else "other"),
                                pooled.device, f"backend={backend!r}" + (" on CPU" if on_cpu else ""))

    def cpp_runs(self, v, pooled, reduce_weight, *rest):
        return _cpu_fp32(reduce_weight)

    def cpp(self, backend, v, pooled, w1, b1, w2, b2, inner_act, gate):
        return _cpu.se_gate(pooled, *v, inner_act=inner_act, gate=gate)

    def registered(self, v, *args):
        return _se_gate_op(*args)

    def reference(self, v, *args):
        return reference.se_gate(*args).float()

    def triton(self, kernels, v, pooled, w1, b1, w2, b2, inner_act, gate):
        return kernels.se_gate(pooled, w1, b1, w2, b2, inner_act=inner_act, gate=gate)


class _ProjectSpec(OpSpec):
    op, names = "se_project", ("y", "pooled") + _SE_NAMES + ("proj_weight", "proj_bias", "residual")

    def fast(self, y, pooled, *rest):
        return _cpu.try_fast_se_project(y, pooled, *rest)

    def validate(self, backend, y, pooled, w1, b1, w2, b2, proj_weight, proj_bias, residual, inner_act, gate):
        _check_acts(inner_act, gate)
        _, checked, dtypes, what = _se_validate(y, "y", (w1, b1, w2, b2), backend)
        _check_pooled_for(y, pooled)
        return checked, check_projection(y, proj_weight, proj_bias, residual, dtypes, what)

    def cpp_runs(self, v, y, pooled, reduce_weight, *rest):
        return _cpu_fp32(y, reduce_weight)

    def cpp(self, backend, v, y, pooled, *rest):
        # Eager default-dispatch calls are remembered, so the next one with these weights takes the fast path.
        (w1, b1, w2, b2, s), pw = v
        proj_bias, residual, inner_act, gate = rest[5], rest[6], rest[7], rest[8]
        return _cpu.se_project(y, pooled, w1, b1, w2, b2, s, pw, proj_bias, residual,
                               remember=rest[:6] if backend is None else None, inner_act=inner_act, gate=gate)

    def registered(self, v, *args):
        return _se_project_op(*args)

    def reference(self, v, *args):
        return reference.se_project(*args)

    def triton(self, kernels, v, *args):
        return kernels.se_project(*args[:9], inner_act=args[9], gate=args[10])


_SE, _GATE, _PROJECT = _SqueezeExciteSpec(), _GateSpec(), _ProjectSpec()


def squeeze_excite(x: Tensor, reduce_weight: Tensor, reduce_bias: Tensor, expand_weight: Tensor,
                   expand_bias: Tensor, backend: Optional[str] = None, inner_act: str = "silu",
                   gate: str = "sigmoid") -> Tensor:
    """``x * gate(expand(inner_act(reduce(mean_hw(x)))))`` — torchvision's ``SqueezeExcitation``, timm's
    ``SqueezeExcite``: EfficientNet's with the defaults (SiLU, sigmoid), MobileNetV3's with
    ``inner_act="relu", gate="hardsigmoid"`` (``inner_act`` any of the depthwise op's activations). Weights shaped like their 1×1 convs ((S, C, 1, 1), (C, S, 1, 1)) or flat
    ((S, C), (C, S)). Two passes over x (pool, then scale); inside an MBConv block use
    :func:`dwconv_bias_swish_pool` + :func:`se_project` instead, which need neither. Output layout: x's
    (channels_last stays channels_last)."""
    return dispatch(_SE, backend, (x, reduce_weight, reduce_bias, expand_weight, expand_bias, inner_act, gate))


def _check_pooled_for(x, pooled):
    if not isinstance(x, Tensor):
        raise TypeError(f"y must be a torch.Tensor, got {type(x).__name__}")
    check_pooled(pooled, x.shape[0], x.shape[1], x.device)


def se_gate(pooled: Tensor, reduce_weight: Tensor, reduce_bias: Tensor, expand_weight: Tensor, expand_bias: Tensor,
            backend: Optional[str] = None, inner_act: str = "silu", gate: str = "sigmoid") -> Tensor:
    """The SE gate ``gate(expand(inner_act(reduce(pooled))))``, fp32 (N, C), from the fp32 (N, C) means that
    :func:`dwconv_bias_swish_pool` emits. One small kernel (two matrix-vector products per sample)."""
    return dispatch(_GATE, backend, (pooled, reduce_weight, reduce_bias, expand_weight, expand_bias, inner_act, gate))


def se_project(y: Tensor, pooled: Tensor, reduce_weight: Tensor, reduce_bias: Tensor, expand_weight: Tensor,
               expand_bias: Tensor, proj_weight: Tensor, proj_bias: Tensor, residual: Optional[Tensor] = None,
               backend: Optional[str] = None, inner_act: str = "silu", gate: str = "sigmoid") -> Tensor:
    """``conv1x1(y * gate(pooled), proj_weight) + proj_bias (+ residual)``: the rest of an MBConv block
    after its depthwise conv, with BN folded into ``proj_weight``/``proj_bias`` ((Cout, Cin, 1, 1) or
    (Cout, Cin)). ``pooled`` is the fp32 (N, Cin) mean of y (from :func:`dwconv_bias_swish_pool`), so y is
    read once, by the GEMM: the gate is folded into per-sample weights or into the GEMM's input, whichever
    costs less for the layer. Output: (N, Cout, H, W) in y's dtype and layout."""
    return dispatch(_PROJECT, backend, (y, pooled, reduce_weight, reduce_bias, expand_weight, expand_bias, proj_weight,
                                        proj_bias, residual, inner_act, gate))


refuse_backward(_squeeze_excite_op, "squeeze_excite")
refuse_backward(_se_gate_op, "se_gate")
refuse_backward(_se_project_op, "se_project")
