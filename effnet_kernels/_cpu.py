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
from .padding import _pad_amounts, check_padding

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
    top, _, out_h = _pad_amounts(h, k, stride, padding)
    left, _, out_w = _pad_amounts(w, k, stride, padding)
    return top, left, out_h, out_w


# (x.shape, x.stride(), weight.shape, bias.shape, stride, padding, isa)
#   -> (DwPlan, y shape, y strides, packed weight size (0: not packed), isa).
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
        entry = (plan, shape, y_strides, plan.packed_size, isa)
        if len(_plans) >= _MAX_PLANS:
            _plans.clear()
        _plans[key] = entry
    return entry


# Weights packed for the kernels, per weight tensor, so a model calling an op with the same weights packs
# them once (packing costs 10-90 µs per call on B0-B7's large depthwise layers):
# (tag, id(first tensor)) -> ([weakref(t)...], [_stamp(t)...], (isa, extra), packed). A hit needs the same
# tensors, unchanged since (version counter, data pointer, shape) and the same ISA; an entry goes when one of
# its tensors dies. Inference tensors keep no version counter: their weights are packed on every call.
_packs: dict = {}
_MAX_PACKS = 1024


def _version(t: torch.Tensor) -> Optional[int]:
    try:
        return t._version
    except RuntimeError:  # an inference tensor
        return None


def _stamp(t: torch.Tensor):
    """What must be unchanged for a tensor's packed form to stay valid: its version counter (in-place ops),
    data pointer and shape (``t.data = other`` keeps the version counter). Raises RuntimeError for an
    inference tensor (no version counter). Not caught: writes through ``t.data`` (its own counter) —
    call :func:`clear_caches` after those."""
    return (t._version, t.data_ptr(), t.shape)


def _forget(cache: dict, key, ref) -> None:
    # weakref callback: a tensor of the entry died; drop the entry (and its packed buffer) now.
    e = cache.get(key)
    if e is not None and any(r is ref for r in e[0]):
        del cache[key]


def _hold(cache: dict, key, tensors) -> list:
    return [weakref.ref(t, lambda ref, cache=cache, key=key: _forget(cache, key, ref)) for t in tensors]


def clear_caches() -> None:
    """Drop every cached plan, packed weight buffer and validated call (needed only after writing to a
    weight through ``.data``, which no version counter sees)."""
    _plans.clear()
    _packs.clear()
    _fast.clear()
    _se_plans.clear()


def _cached_pack(tag: str, tensors: Tuple[torch.Tensor, ...], isa: str, size: int, fill, extra=()) -> torch.Tensor:
    """A packed-weights buffer of ``size`` floats, written by ``fill(out)`` once per set of ``tensors``
    (and ``extra``: anything else the packing depends on, e.g. the geometry of views of them)."""
    key = (tag, id(tensors[0]))
    e = _packs.get(key)
    if (e is not None and e[2] == (isa, extra) and e[3].numel() == size and len(e[0]) == len(tensors)
            and all(r() is t and s == _stamp(t) for r, s, t in zip(e[0], e[1], tensors))):
        return e[3]
    packed = torch.empty(size, dtype=torch.float32)
    fill(packed)
    try:
        stamps = [_stamp(t) for t in tensors]
    except RuntimeError:  # an inference tensor
        return packed
    if len(_packs) >= _MAX_PACKS:
        _packs.clear()
    _packs[key] = (_hold(_packs, key, tensors), stamps, (isa, extra), packed)
    return packed


def _packed_weights(plan, size: int, isa: str, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    def fill(out):
        w, b = weight.contiguous(), bias.contiguous()
        plan.pack(w.data_ptr(), b.data_ptr(), out.data_ptr())
    return _cached_pack("dw", (weight, bias), isa, size, fill)


def _run(x, weight, bias, pool, entry):
    plan, shape, y_strides, pack_size, isa = entry
    y = torch.empty_strided(shape, y_strides)  # (3 µs; torch.empty with a memory format takes 6)
    packed = None  # held until the call returns
    if pack_size:
        packed = _packed_weights(plan, pack_size, isa, weight, bias)
    else:
        if not weight.is_contiguous():
            weight = weight.contiguous()
        if not bias.is_contiguous():
            bias = bias.contiguous()
    pooled = torch.empty_strided((shape[0], shape[1]), (shape[1], 1)) if pool else None
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


# ------------------------------------------------------------------------------------------------
# Squeeze-excitation

def _as_matrix(t: torch.Tensor, name: str, rows: Optional[int], cols: Optional[int], what: str) -> torch.Tensor:
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
    w1 = _as_matrix(reduce_weight, "reduce_weight", None, c, what)
    s = w1.shape[0]
    if s < 1:
        raise ValueError(f"reduce_weight must have at least one output channel, got shape {tuple(reduce_weight.shape)}")
    w2 = _as_matrix(expand_weight, "expand_weight", c, s, what)
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


_se_plans: dict = {}


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


# Validated calls, for the eager fast paths below: key (shapes, strides, ids of the weight tensors, ...) ->
# ([weakref(t)], [_stamp(t)], value). A hit needs the same weight tensors, unchanged since (version
# counter, data pointer, shape), so they are still the validated ones; inference tensors (no version
# counter) are never remembered. Values hold no tensor of the caller's, and an entry goes when one of its
# tensors dies (weakref callback), with its packed buffer.
_fast: dict = {}


def _remember(key, tensors, value) -> None:
    try:
        stamps = [_stamp(t) for t in tensors]
    except RuntimeError:  # an inference tensor
        return
    if len(_fast) >= _MAX_PLANS:
        _fast.clear()
    _fast[key] = (_hold(_fast, key, tensors), stamps, value)


def _recall(key, tensors):
    e = _fast.get(key)
    if e is None:
        return None
    for r, stamp, t in zip(e[0], e[1], tensors):
        if r() is not t or _stamp(t) != stamp:
            return None
    return e[2]


def _all_cpu_f32(*tensors) -> bool:
    return all(isinstance(t, torch.Tensor) and t.dtype is _F32 and t.is_cpu for t in tensors)


def squeeze_excite(x, reduce_weight, reduce_bias, expand_weight, expand_bias, isa: Optional[str] = None,
                   validate: bool = True):
    """x * sigmoid(expand(swish(reduce(mean_hw(x))))) by the C++ kernels (fp32 CPU); y in x's layout rule."""
    isa = isa if isa is not None else _forced_isa
    weights = (reduce_weight, reduce_bias, expand_weight, expand_bias)
    c = check_se_input(x, "x", (torch.float32,), "cpu", "the C++ CPU kernels") if validate else x.shape[1]
    w1, b1, w2, b2, s = check_se_weights(c, *weights, (torch.float32,), x.device, "the C++ CPU kernels")
    plan, y_strides = _se_plan(x, isa)
    packed = _se_packed(w1, b1, w2, b2, c, s, isa)
    _remember(("se", x.shape, x.stride(), *map(id, weights), isa), weights, (plan, y_strides, s, packed))
    return _run_se(x, plan, y_strides, s, packed)


def _run_se(x, plan, y_strides, s, packed):
    y = torch.empty_strided(x.shape, y_strides)
    if x.shape[0]:
        plan.run(x.data_ptr(), packed.data_ptr(), s, y.data_ptr(), torch.get_num_threads())
    return y


def try_fast_se(x, reduce_weight, reduce_bias, expand_weight, expand_bias):
    """squeeze_excite for arguments already validated (same shapes and weight tensors), else None."""
    if _C is None or not _all_cpu_f32(x):
        return None
    weights = (reduce_weight, reduce_bias, expand_weight, expand_bias)
    if not all(isinstance(t, torch.Tensor) for t in weights):
        return None
    hit = _recall(("se", x.shape, x.stride(), *map(id, weights), _forced_isa), weights)
    return None if hit is None else _run_se(x, *hit)


def _gate_packed(pooled, packed, s: int, isa: str) -> torch.Tensor:
    n, c = pooled.shape
    gate = torch.empty_strided((n, c), (c, 1))
    if n:
        pooled = pooled.contiguous()
        _C.se_gate(n, c, s, packed.data_ptr(), pooled.data_ptr(), gate.data_ptr(), torch.get_num_threads(), isa)
    return gate


def se_gate(pooled, w1, b1, w2, b2, s: int, isa: Optional[str] = None) -> torch.Tensor:
    """gate (N, C) fp32 from pooled means (validated by the caller; weights as (O, I) views)."""
    isa = isa if isa is not None else _forced_isa
    return _gate_packed(pooled, _se_packed(w1, b1, w2, b2, pooled.shape[1], s, isa), s, isa)


def se_apply(y: torch.Tensor, gate: torch.Tensor, isa: Optional[str] = None) -> torch.Tensor:
    """y * gate[n, c] (new tensor in y's layout rule)."""
    plan, y_strides = _se_plan(y, isa if isa is not None else _forced_isa)
    out = torch.empty_strided(y.shape, y_strides)
    if y.shape[0]:
        plan.apply(y.data_ptr(), gate.contiguous().data_ptr(), out.data_ptr(), torch.get_num_threads())
    return out


def check_projection(y, proj_weight, proj_bias, residual, dtypes, what: str) -> torch.Tensor:
    """Validate the projection (BN folded) and the residual for y; returns the (Cout, Cin) weight view."""
    cin = y.shape[1]
    for name, t in (("proj_weight", proj_weight), ("proj_bias", proj_bias)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype != y.dtype or t.device != y.device:
            raise TypeError(f"{name} must have y's dtype {y.dtype} and device {y.device}, got {t.dtype} on {t.device}")
    pw = _as_matrix(proj_weight, "proj_weight", None, cin, what)
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


def se_project(y, pooled, w1, b1, w2, b2, s: int, pw, pb, residual=None, isa: Optional[str] = None,
               remember=None) -> torch.Tensor:
    """conv1x1(y * gate, pw) + pb (+ residual), fp32 CPU, arguments validated by the caller.

    The gate (N, Cin) comes from the C++ kernel. It is folded where it costs least: into per-sample weights
    W·diag(gate_n) (Cout·Cin multiplies per sample, N GEMMs in one batched call) when Cout < H·W, else into
    the activation (H·W·Cin, the SIMD scale kernel) ahead of one GEMM. The GEMM runs on y's layout as it
    is (channels_last: (N, HW, Cin) × (Cin, Cout); NCHW: (Cout, Cin) × (N, Cin, HW)); the bias, or the
    residual, is the GEMM's accumulate input (the bias is added afterwards when there is a residual).
    ``remember``: the public arguments ``(reduce_weight, reduce_bias, expand_weight, expand_bias,
    proj_weight, proj_bias)``, to let :func:`try_fast_se_project` skip validation next time.
    """
    isa = isa if isa is not None else _forced_isa
    packed = _se_packed(w1, b1, w2, b2, y.shape[1], s, isa)
    if remember is not None:
        _remember(_project_key(y, remember, residual, isa), remember, (s, packed))
    return _project(y, pooled, packed, s, pw, pb, residual, isa)


def _project_key(y, weights, residual, isa):
    return ("proj", y.shape, y.stride(), *map(id, weights),
            None if residual is None else (residual.shape, residual.stride()), isa)


def try_fast_se_project(y, pooled, reduce_weight, reduce_bias, expand_weight, expand_bias, proj_weight, proj_bias,
                        residual):
    """se_project for arguments already validated (same shapes and weight tensors), else None."""
    if _C is None or not _all_cpu_f32(y, pooled) or not (residual is None or _all_cpu_f32(residual)):
        return None
    weights = (reduce_weight, reduce_bias, expand_weight, expand_bias, proj_weight, proj_bias)
    if not all(isinstance(t, torch.Tensor) for t in weights):
        return None
    if pooled.dim() != 2 or pooled.shape[0] != y.shape[0] or pooled.shape[1] != y.shape[1]:
        return None
    hit = _recall(_project_key(y, weights, residual, _forced_isa), weights)
    if hit is None:
        return None
    s, packed = hit
    pw = proj_weight.reshape(proj_weight.shape[0], proj_weight.shape[1])
    return _project(y, pooled, packed, s, pw, proj_bias, residual, _forced_isa)


def _project(y, pooled, packed, s: int, pw, pb, residual, isa: str) -> torch.Tensor:
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
    gate = _gate_packed(pooled, packed, s, isa)
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


class SeProjection:
    """se_project with everything prepared once (what a fused model builds at fuse time): the SE weights
    validated and packed, the projection as an (O, I) matrix. Calling it runs only the gate kernel, the
    fold (weights or activation) and the GEMM — no validation, no cache lookups.

    ``prepared(y, pooled, residual=None)``: y fp32 (N, Cin, H, W) in either layout, pooled its fp32 (N, Cin)
    means (from the depthwise op), residual None or (N, Cout, H, W).
    """

    def __init__(self, reduce_weight, reduce_bias, expand_weight, expand_bias, proj_weight, proj_bias,
                 isa: Optional[str] = None):
        self.isa = isa if isa is not None else _forced_isa
        c = proj_weight.shape[1]
        w1, b1, w2, b2, self.squeeze = check_se_weights(c, reduce_weight, reduce_bias, expand_weight, expand_bias,
                                                        (torch.float32,), torch.device("cpu"), "SeProjection")
        self.packed = torch.empty(_C.se_packed_size(c, self.squeeze), dtype=torch.float32)
        b1c, b2c = b1.contiguous(), b2.contiguous()
        _C.se_pack(c, self.squeeze, w1.data_ptr(), list(w1.stride()), b1c.data_ptr(), w2.data_ptr(),
                   list(w2.stride()), b2c.data_ptr(), self.packed.data_ptr())
        self.weight = _as_matrix(proj_weight, "proj_weight", None, c, "SeProjection").detach().clone()
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
        return _project(y, pooled, self.packed, self.squeeze, self.weight, self.bias, residual, self.isa)


class Conv1x1:
    """A 1×1 convolution (fp32, CPU) as this package's GEMM on the channels_last view, with the weight
    (Cout, Cin) packed once: ``conv(x, swish=False, residual=None)`` returns channels_last
    ``act(conv1x1(x) + bias) + residual``. What :class:`effnet_kernels._C.Net` runs per 1×1 layer, for
    benchmarks and tests that time one layer."""

    def __init__(self, weight: torch.Tensor, bias: Optional[torch.Tensor] = None, isa: Optional[str] = None):
        w = weight.detach().reshape(weight.shape[0], -1)
        if w.dtype is not _F32 or not w.is_cpu:
            raise ValueError(f"weight must be fp32 on the CPU, got {w.dtype} on {w.device}")
        self.isa = isa if isa is not None else (_forced_isa or "")
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
                swish, torch.get_num_threads(), self.isa)
        return out
