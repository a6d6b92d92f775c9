"""torch ↔ C++ bridge for the CPU kernels: validates tensors, allocates outputs, passes pointers.

The C++ core is torch-free: it receives data addresses, shapes and element strides. The thread count
is torch's (``torch.get_num_threads()``), read on every call.
"""
from __future__ import annotations

import contextlib
import numbers
import weakref
from typing import Optional, Sequence, Tuple

import torch

from ._ext import _C, require_cpp
from .padding import check_padding, pad_amounts

_forced_isa = ""  # "" = the C++ default (EFFNET_ISA if set, else the best path that passes its self-test)


def isa_info() -> dict:
    return dict(require_cpp("isa_info").isa_info())


@contextlib.contextmanager
def use_isa(isa: str):
    """Force one ISA path ("scalar", "avx2", "avx512", "neon") for CPU kernels inside the block (tests)."""
    global _forced_isa
    supported = isa_info()["supported"]
    if isa not in supported:
        raise ValueError(f"isa must be one of the paths this CPU supports {supported}, got {isa!r}")
    previous, _forced_isa = _forced_isa, isa
    try:
        yield
    finally:
        _forced_isa = previous


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
    top, _, out_h = pad_amounts(h, k, stride, padding)
    left, _, out_w = pad_amounts(w, k, stride, padding)
    return top, left, out_h, out_w


# (x.shape, x.stride(), weight.shape, bias.shape, stride, padding, isa)
#   -> (DwPlan, y shape, y memory format, packed weight size (0: not packed), isa).
# An entry exists only for arguments that passed check_dwconv_args (validity depends on nothing else
# but dtype and device, which try_fast checks on every call).
_plans: dict = {}
_MAX_PLANS = 4096
_F32 = torch.float32


def _plan(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, stride: int, padding: str, isa: str):
    key = (x.shape, x.stride(), weight.shape, bias.shape, stride, padding, isa)
    entry = _plans.get(key)
    if entry is None:
        C = _C if _C is not None else require_cpp("the C++ depthwise kernel")
        n, c, h, w = x.shape
        k = weight.shape[-1]
        top, left, out_h, out_w = output_size(h, w, k, stride, padding)
        fmt = output_memory_format(x)
        shape = (n, c, out_h, out_w)
        y_strides = torch.empty(shape, dtype=torch.float32, memory_format=fmt, device="meta").stride()
        plan = C.DwPlan(x.shape, x.stride(), k, stride, top, left, out_h, out_w, y_strides, isa)
        entry = (plan, shape, fmt, plan.packed_size, isa)
        if len(_plans) >= _MAX_PLANS:
            _plans.clear()
        _plans[key] = entry
    return entry


# Weights packed for the NHWC kernels, per weight tensor, so a model calling the op with the same
# weights packs them once (packing costs 10-90 µs per call on B0-B7's large layers):
# id(weight) -> (weakref(weight), weight._version, weakref(bias), bias._version, isa, packed). A hit needs
# the same two tensors, unchanged since (version counters) and the same ISA. Inference tensors keep no
# version counter: their weights are packed on every call.
_packs: dict = {}
_MAX_PACKS = 1024


def _version(t: torch.Tensor) -> Optional[int]:
    try:
        return t._version
    except RuntimeError:  # an inference tensor
        return None


def _packed_weights(plan, size: int, isa: str, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    e = _packs.get(id(weight))
    if (e is not None and e[0]() is weight and e[2]() is bias and e[4] == isa and e[1] == weight._version
            and e[3] == bias._version and e[5].numel() == size):
        return e[5]
    w, b = weight.contiguous(), bias.contiguous()
    packed = torch.empty(size, dtype=torch.float32)
    plan.pack(w.data_ptr(), b.data_ptr(), packed.data_ptr())
    wv, bv = _version(weight), _version(bias)
    if wv is not None and bv is not None:
        if len(_packs) >= _MAX_PACKS:
            _packs.clear()
        _packs[id(weight)] = (weakref.ref(weight), wv, weakref.ref(bias), bv, isa, packed)
    return packed


def _run(x, weight, bias, pool, entry):
    plan, shape, fmt, pack_size, isa = entry
    y = torch.empty(shape, dtype=torch.float32, memory_format=fmt)
    packed = None  # held until the call returns
    if pack_size:
        packed = _packed_weights(plan, pack_size, isa, weight, bias)
    else:
        if not weight.is_contiguous():
            weight = weight.contiguous()
        if not bias.is_contiguous():
            bias = bias.contiguous()
    pooled = torch.empty(shape[:2], dtype=torch.float32) if pool else None
    # With packed weights the kernel reads only those; weight/bias are passed for the other paths.
    plan.run(x.data_ptr(), weight.data_ptr(), bias.data_ptr(), y.data_ptr(), pooled.data_ptr() if pool else 0,
             torch.get_num_threads(), 0 if packed is None else packed.data_ptr())
    return (y, pooled) if pool else y


def try_fast(x, weight, bias, stride, padding, pool: bool):
    """The eager CPU call for arguments already seen valid (same shapes, stride, padding) and fp32 CPU
    tensors; None when anything differs, so the caller validates in full (and its errors) instead."""
    if type(stride) is not int or type(padding) is not str or _C is None:
        return None
    if not (isinstance(x, torch.Tensor) and isinstance(weight, torch.Tensor) and isinstance(bias, torch.Tensor)):
        return None
    if not (x.dtype is _F32 and weight.dtype is _F32 and bias.dtype is _F32 and x.is_cpu and weight.is_cpu
            and bias.is_cpu):
        return None
    entry = _plans.get((x.shape, x.stride(), weight.shape, bias.shape, stride, padding, _forced_isa))
    if entry is None:
        return None
    return _run(x, weight, bias, pool, entry)


def dwconv_bias_swish(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, stride: int = 1,
                      padding: str = "symmetric", pool: bool = False, isa: Optional[str] = None,
                      validate: bool = True):
    """y = silu(depthwise_conv2d(x, weight) + bias) by the C++ kernels; (y, pooled) when ``pool``.

    pooled is the fp32 (N, C) mean of y over H×W, computed in the same pass. ``validate=False`` is for
    callers that ran :func:`check_dwconv_args` themselves.
    """
    if _C is None:
        require_cpp("the C++ depthwise kernel")
    if validate:
        _, stride, padding = check_dwconv_args(x, weight, bias, stride, padding)
    entry = _plan(x, weight, bias, stride, padding, isa if isa is not None else _forced_isa)
    return _run(x, weight, bias, pool, entry)
