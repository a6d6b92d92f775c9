"""Argument validation for every backend of the fused ops (the wrappers, the registered ops' bodies, the C++
bridge and the Triton launchers call these, each with its own dtype list from ``dtypes_for``): the error
names the argument, what was seen and what was expected. Also the output-layout rule and the output size."""
from __future__ import annotations

import numbers
from typing import Optional, Sequence, Tuple

import torch

from ..padding import check_padding, pad_amounts_unchecked



def check_tensor(t, name: str, dim: int, dtypes: Sequence[torch.dtype] = (torch.float32,),
                 device_type: Optional[str] = "cpu", what: str = "the C++ CPU kernels") -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in dtypes:
        expected = " or ".join(str(d).replace("torch.", "") for d in dtypes)
        raise TypeError(f"{name} must be {expected} for {what}, got {str(t.dtype).replace('torch.', '')}")
    if device_type is not None and t.device.type != device_type:
        raise ValueError(f"{name} must be on the {device_type.upper()} for {what}, got device {t.device}")
    if t.dim() != dim:
        raise ValueError(f"{name} must be {dim}-D, got shape {tuple(t.shape)}")
    return t


def check_act(value, name: str = "act", allowed: Sequence[str] = ("silu", "relu", "relu6", "hardswish",
                                                                  "identity")) -> str:
    """An activation (or SE gate) name: a str among ``allowed``; the error names the argument."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, one of {tuple(allowed)}, got {type(value).__name__} {value!r}")
    if value not in allowed:
        raise ValueError(f"{name} must be one of {tuple(allowed)}, got {value!r}")
    return value


def check_gate(value) -> str:
    return check_act(value, "gate", ("sigmoid", "hardsigmoid"))


def check_stride(stride) -> int:
    if isinstance(stride, bool) or not isinstance(stride, numbers.Integral):
        raise TypeError(f"stride must be the int 1 or 2, got {type(stride).__name__} {stride!r}")
    if stride not in (1, 2):
        raise ValueError(f"stride must be 1 or 2, got {stride}")
    return int(stride)


def output_memory_format(x: torch.Tensor) -> torch.memory_format:
    """channels_last when x is channels_last and not also NCHW-contiguous, NCHW otherwise."""
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def check_dwconv_args(x, weight, bias, stride, padding, dtypes=(torch.float32,), device_type: Optional[str] = "cpu",
                      what: str = "the C++ CPU kernels") -> Tuple[int, int, str]:
    """Validate depthwise-conv arguments; returns (k, stride, padding)."""
    check_tensor(x, "x", 4, dtypes, device_type, what)
    check_tensor(weight, "weight", 4, dtypes, x.device.type, what)
    check_tensor(bias, "bias", 1, dtypes, x.device.type, what)
    if weight.device != x.device or bias.device != x.device:
        raise ValueError(f"weight and bias must be on x's device {x.device}, got {weight.device} and {bias.device}")
    if weight.dtype != x.dtype or bias.dtype != x.dtype:
        raise TypeError(f"weight and bias must have x's dtype {x.dtype}, got {weight.dtype} and {bias.dtype}")
    c = x.shape[1]
    if c < 1 or x.shape[2] < 1 or x.shape[3] < 1:
        raise ValueError(f"x must have C, H, W >= 1, got shape {tuple(x.shape)}")
    k = weight.shape[-1]
    if weight.shape[0] != c or weight.shape[1] != 1 or weight.shape[2] != k:
        raise ValueError(f"weight must have shape (C, 1, k, k) = ({c}, 1, k, k) for x with C={c}, "
                         f"got {tuple(weight.shape)}")
    if k % 2 != 1 or k > 7:
        raise ValueError(f"weight kernel size k must be odd and at most 7, got k={k}")
    if bias.shape[0] != c:
        raise ValueError(f"bias must have shape ({c},) for x with C={c}, got {tuple(bias.shape)}")
    return k, check_stride(stride), check_padding(padding)


def output_size(h: int, w: int, k: int, stride: int, padding: str) -> Tuple[int, int, int, int]:
    """(pad_top, pad_left, out_h, out_w)."""
    top, _, out_h = pad_amounts_unchecked(h, k, stride, padding)
    left, _, out_w = pad_amounts_unchecked(w, k, stride, padding)
    return top, left, out_h, out_w


def as_matrix(t: torch.Tensor, name: str, rows: Optional[int], cols: Optional[int], what: str) -> torch.Tensor:
    """A 1×1 conv weight (O, I, 1, 1) or a flat (O, I) matrix, as its (O, I) view."""
    if t.dim() == 4 and t.shape[2] == 1 and t.shape[3] == 1:
        t = t.reshape(t.shape[0], t.shape[1])
    if t.dim() != 2 or (rows is not None and t.shape[0] != rows) or (cols is not None and t.shape[1] != cols):
        want = f"({'O' if rows is None else rows}, {'I' if cols is None else cols})"
        raise ValueError(f"{name} must be shaped {want} or {want[:-1]}, 1, 1) for {what}, got {tuple(t.shape)}")
    return t


def check_se_weights(c: int, reduce_weight, reduce_bias, expand_weight, expand_bias, dtypes, device,
                     what: str) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Validate SE weights for C channels; returns (W1 (S, C), b1, W2 (C, S), b2, S)."""
    named = (("reduce_weight", reduce_weight), ("reduce_bias", reduce_bias), ("expand_weight", expand_weight),
             ("expand_bias", expand_bias))
    for name, t in named:
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in dtypes:
            expected = " or ".join(str(d).replace("torch.", "") for d in dtypes)
            raise TypeError(f"{name} must be {expected} for {what}, got {str(t.dtype).replace('torch.', '')}")
        if t.device != device:
            raise ValueError(f"{name} must be on {device} (the input's device), got {t.device}")
    for name, t in named[1:]:
        if t.dtype != reduce_weight.dtype:
            raise TypeError(f"{name} must have reduce_weight's dtype {reduce_weight.dtype} (the SE weights and biases "
                            f"share one dtype), got {t.dtype}")
    w1 = as_matrix(reduce_weight, "reduce_weight", None, c, what)
    s = w1.shape[0]
    if s < 1:
        raise ValueError(f"reduce_weight must have at least one output channel, got shape {tuple(reduce_weight.shape)}")
    w2 = as_matrix(expand_weight, "expand_weight", c, s, what)
    if reduce_bias.shape != (s,):
        raise ValueError(f"reduce_bias must have shape ({s},), got {tuple(reduce_bias.shape)}")
    if expand_bias.shape != (c,):
        raise ValueError(f"expand_bias must have shape ({c},), got {tuple(expand_bias.shape)}")
    return w1, reduce_bias, w2, expand_bias, s


def check_se_input(x, name: str, dtypes, device_type: Optional[str], what: str) -> int:
    check_tensor(x, name, 4, dtypes, device_type, what)
    if x.shape[1] < 1 or x.shape[2] < 1 or x.shape[3] < 1:
        raise ValueError(f"{name} must have C, H, W >= 1, got shape {tuple(x.shape)}")
    return x.shape[1]


def check_pooled(pooled, n: int, c: int, device) -> None:
    if not isinstance(pooled, torch.Tensor):
        raise TypeError(f"pooled must be a torch.Tensor, got {type(pooled).__name__}")
    if pooled.dtype != torch.float32:
        raise TypeError(f"pooled must be float32 (the pooled output of dwconv_bias_swish_pool), got {pooled.dtype}")
    if pooled.device != device:
        raise ValueError(f"pooled must be on {device}, got {pooled.device}")
    if tuple(pooled.shape) != (n, c):
        raise ValueError(f"pooled must have shape (N, C) = ({n}, {c}), got {tuple(pooled.shape)}")


def check_projection(y, proj_weight, proj_bias, residual, dtypes, what: str) -> torch.Tensor:
    """Validate the projection (BN folded) and the residual for y; returns the (Cout, Cin) weight view."""
    cin = y.shape[1]
    for name, t in (("proj_weight", proj_weight), ("proj_bias", proj_bias)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype != y.dtype or t.device != y.device:
            raise TypeError(f"{name} must have y's dtype {y.dtype} and device {y.device}, got {t.dtype} on {t.device}")
    pw = as_matrix(proj_weight, "proj_weight", None, cin, what)
    cout = pw.shape[0]
    if proj_bias.shape != (cout,):
        raise ValueError(f"proj_bias must have shape ({cout},), got {tuple(proj_bias.shape)}")
    if residual is not None:
        if not isinstance(residual, torch.Tensor):
            raise TypeError(f"residual must be None or a torch.Tensor, got {type(residual).__name__}")
        if residual.dtype != y.dtype or residual.device != y.device:
            raise TypeError(f"residual must have y's dtype {y.dtype} and device {y.device}, got {residual.dtype} on "
                            f"{residual.device}")
        want = (y.shape[0], cout, y.shape[2], y.shape[3])
        if tuple(residual.shape) != want:
            raise ValueError(f"residual must have shape (N, Cout, H, W) = {want}, got {tuple(residual.shape)}")
    return pw
