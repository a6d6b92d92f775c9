"""The CPU bridge's caches, in one place: call plans per geometry, packed weights per weight tensor, and the
validated calls the eager fast paths recall. An entry that depends on a tensor holds it weakly and goes when
the tensor dies; a packed entry is valid only while the tensor is unchanged (version counter, data pointer,
shape). ``clear_caches()`` drops everything (needed only after writing to a weight through ``.data``)."""
from __future__ import annotations

import weakref
from typing import Optional, Tuple

import torch



# (x.shape, x.stride(), weight.shape, bias.shape, stride, padding, isa)
#   -> (DwPlan, y shape, y strides, packed weight size (0: not packed), isa).
# An entry exists only for arguments that passed check_dwconv_args (validity depends on nothing else
# but dtype and device, which try_fast checks on every call).
_plans: dict = {}


_MAX_PLANS = 4096


_F32 = torch.float32


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


_se_plans: dict = {}


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
