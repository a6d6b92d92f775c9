"""The modules ``fuse()`` swaps into a model, one family: :class:`FusedConv` (a stem or head conv + folded BN
[+ an activation] [+ its input]), :class:`FusedMBConv` (one MBConv block or a cousin: another activation, no SE,
a hardsigmoid SE, a fused-MBConv block), :class:`FusedHead` (a classifier after a global mean, in the chain) and
:class:`FusedSequential` (an ``nn.Sequential`` that runs its consecutive fused children as one chain). The
containers a library's forward runs in a row get one chain from :mod:`effnet_kernels.adapters`.

How a call runs:

* **fp32 on the CPU, eager**: one call into the C++ engine (``effnet_kernels._C.Net``) per chain — one
  block or conv when the model's own forward calls it alone (a Python loop over blocks, as
  efficientnet_pytorch's), all the consecutive fused children of a :class:`FusedSequential` at once
  (nested ones too: a backbone's stages). Inside a chain activations stay NHWC in the engine's buffers.
  A chain's output has the memory format eager PyTorch gives for its input (NCHW for an NCHW input: the
  engine transposes its last NHWC buffer into the NCHW output; an NCHW input is transposed once into its
  first), so code after it (``.view()``) sees what it saw before; a channels_last input passes through with
  no copy at all. All engines share one set of warm buffers (see ``csrc/include/effnet/net.h``).
* **everything else** (CUDA, other dtypes, ``torch.compile`` / ``torch.export`` tracing): per module, the
  registered ops (``ops.dwconv_bias_swish_pool``, ``ops.se_project``; Triton kernels on CUDA) and torch
  convolutions.

Each module keeps its folded weights as buffers (its ``state_dict``); an engine is rebuilt whenever they
change (load, ``.to()``, in-place edits, reassigned buffers). Inference only: ``.train()`` raises, as do
autograd and ``torch.jit.trace``.
"""
from __future__ import annotations

import operator
import os
import threading
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import _ext, ops, reference
from .ops._validate import output_memory_format
from .padding import pad_amounts_unchecked
from .parts import BlockPart, ConvPart, Pad, act_label

__all__ = ["FusedConv", "FusedHead", "FusedMBConv", "FusedSequential", "FusedUnit"]


def _has_engine() -> bool:
    return _ext.has_cpp()


def _engine_pad(pad: Pad) -> List[int]:
    return [] if pad == "same" else list(pad)


# ---- engine bookkeeping ---------------------------------------------------------------------------------

# EFFNET_CHECK_WEIGHTS=1: every call also compares the weights' bytes with the engine's copy (writes no version
# counter sees: ``.data`` in place, through ``.numpy()``); costs one read of the weights per call.
_CHECK_BYTES = os.environ.get("EFFNET_CHECK_WEIGHTS", "0") not in ("", "0")


class _Engine:
    """A C++ Net built from some units' buffers, and what it was built from (to tell when it is stale)."""
    __slots__ = ("net", "tensors", "versions", "generations", "units", "plain", "copies")

    def __init__(self):
        self.net = None
        self.tensors = ()
        self.versions = None
        self.generations = None
        self.units = ()
        self.plain = ()
        self.copies = None

    def current(self, units) -> bool:
        """The same modules (a child replaced by another fused one is not), each the generation it was (a
        buffer reassigned, an attribute the engine reads changed, .to() / .half(): a new generation), each
        buffer unchanged in place (its version; inference tensors have none and are checked by generation).
        ~10 us for B0."""
        if self.net is None or len(units) != len(self.units) or \
                not all(map(operator.is_, map(_unwrap, units), self.plain)):
            return False
        if [u._generation for u in self.plain] != self.generations or \
                [t._version for t in self.tensors] != self.versions:
            return False
        return not _CHECK_BYTES or all(torch.equal(t, c) for t, c in zip(self.all_tensors(), self.copies))

    def all_tensors(self):
        return [t for u in self.plain for t in u._buffers.values() if t is not None]

    def get(self, units: Sequence["FusedUnit"]):
        """The Net for ``units`` (rebuilt when their weights changed); None when a buffer is not fp32 on the
        CPU. The versions are read before the weights are packed: a write during the packing leaves the new
        Net stale, rebuilt at the next call; a load_state_dict of the fused model holds _LOAD_LOCK, which a
        build takes too, so a Net never packs half-loaded weights. A concurrent caller keeps the Net it took
        (swapped in whole)."""
        if self.current(units):
            return self.net
        locked = _LOAD_LOCK.acquire(timeout=_LOAD_WAIT_S)
        try:
            plain = tuple(_unwrap(u) for u in units)
            bufs = [t for u in plain for t in u._buffers.values() if t is not None]
            if any(b.dtype != torch.float32 or b.device.type != "cpu" for b in bufs):
                self.net = None
                return None
            tensors = tuple(t for t in bufs if not t.is_inference())
            versions = [t._version for t in tensors]
            generations = [u._generation for u in plain]
            copies = [t.detach().clone() for t in bufs] if _CHECK_BYTES else None
            from ._ext import _C
            from .cpu import _isa
            net = _C.Net(_isa.forced or "")
            keep: List[torch.Tensor] = []
            for i, u in enumerate(units):
                u._add_to(net, pointer_to(keep), f"layers.{i}" if len(units) > 1 else "layer")
            self.net = None  # (a reader between these assignments sees no Net and rebuilds, never a mix)
            self.tensors, self.versions, self.generations, self.copies = tensors, versions, generations, copies
            self.units, self.plain = tuple(units), plain
            self.net = net
            return net
        finally:
            if locked:
                _LOAD_LOCK.release()


# Held by a fused model's load_state_dict (its pre- and post-hooks) and by every engine build. A build waits
# at most _LOAD_WAIT_S for it (never a hang: a load whose post-hook an exception skipped leaves it held until
# that thread's next load), then builds anyway (the versions it read first still mark a Net packed from a
# half-loaded state stale for the next call).
_LOAD_LOCK = threading.RLock()
_LOAD_WAIT_S = 5.0
_held = threading.local()


def lock_loads(model: nn.Module) -> None:
    """Make ``model.load_state_dict`` exclusive with engine builds: a call that overlaps it packs the old or the
    new weights, never a mix (a Net already built keeps its own copy of the old ones)."""
    model.register_load_state_dict_pre_hook(_take_load_lock)
    model.register_load_state_dict_post_hook(_drop_load_lock)


def _take_load_lock(*_args, **_kwargs) -> None:
    for _ in range(getattr(_held, "depth", 0)):  # a load of this thread whose post-hook never ran
        _LOAD_LOCK.release()
    _LOAD_LOCK.acquire()
    _held.depth = 1


def _drop_load_lock(*_args, **_kwargs) -> None:
    if getattr(_held, "depth", 0):
        _held.depth = 0
        _LOAD_LOCK.release()


def live_nets(model: nn.Module) -> list:
    """The C++ Nets the model's fused modules built so far (the profile and band settings of each)."""
    return [e.net for e in _live_engines(model)]


def refresh(model: nn.Module) -> None:
    """Drop every engine of a fused model: the next call packs the weights again. For writes no version
    counter sees (``p.data`` changed in place, ``.numpy()`` views); in-place ops, ``copy_``,
    ``load_state_dict``, replaced buffers and children are seen without it."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    for m in model.modules():
        if isinstance(m, FusedUnit):
            m._drop_engine()
        elif isinstance(m, FusedSequential):
            m._chains = {}
        m.__dict__.pop("_effnet_chain", None)
        m.__dict__.pop("_effnet_head_chain", None)


def _live_engines(model: nn.Module) -> List[_Engine]:
    found = []
    for m in model.modules():
        if isinstance(m, FusedUnit):
            found.append(m._engine)
        elif isinstance(m, FusedSequential):
            found += list(m._chains.values())
        for key in ("_effnet_chain", "_effnet_head_chain"):  # an adapted container's chains
            if isinstance(m.__dict__.get(key), _Engine):
                found.append(m.__dict__[key])
    return [e for e in found if e.net is not None]


def engine_taps(model: nn.Module, run):
    """``(run(), {module: {"out": t, "dw": t}})``: every fused module's output (and a block's depthwise
    output) inside the C++ engines during ``run()`` (called twice: the first builds the engines), each
    (N, C, H, W) channels_last: what the tests compare, block by block, with the source model, on the very path the model runs (chains included). Not for
    concurrent use with other callers."""
    run()  # builds the engines this run uses (they are built at their first call)
    engines = _live_engines(model)
    for e in engines:
        e.net.set_taps(True)
    try:
        out = run()
        taps: Dict[nn.Module, Dict[str, torch.Tensor]] = {}
        for e in _live_engines(model):
            for name, (n, h, w, c), data in e.net.last_taps():
                layer, _, kind = name.partition(".dw")
                index = 0 if layer == "layer" else int(layer.split(".")[1])
                t = torch.frombuffer(bytearray(data), dtype=torch.float32).view(n, h, w, c).permute(0, 3, 1, 2)
                unit = e.units[index]
                if isinstance(unit, WithActivation):  # a conv with the container's act folded in: not its output
                    taps.setdefault(unit.unit, {})["out_" + unit.folded_act] = t
                    continue
                taps.setdefault(unit, {})["dw" if name.endswith(".dw") else "out"] = t
    finally:
        for e in _live_engines(model):
            e.net.set_taps(False)
    return out, taps


class WithActivation:
    """A FusedConv in a chain with the activation its container applies after it folded in (an adapter's: a
    shared activation module the container calls after several convs cannot be swapped into any of them);
    everything else is the conv's (buffers, generation, backend, channels)."""

    def __init__(self, unit: "FusedConv", act: str):
        if act not in reference.ACTS:
            raise ValueError(f"act must be one of {reference.ACTS}, got {act!r}")
        self.unit, self.folded_act = unit, act

    def __getattr__(self, name: str):
        return getattr(self.unit, name)

    def _add_to(self, net, ptr, name: str) -> None:
        self.unit._add_to(net, ptr, name, act=self.folded_act)

    def _forward_ops(self, x):
        return reference.activation(self.unit._forward_ops(x), self.folded_act)


def _unwrap(u):
    return u.unit if type(u) is WithActivation else u  # a WithActivation's conv


def pointer_to(keep: List[torch.Tensor]):
    """``ptr(t, *shape)``: the address of t's data for the C++ side, which copies prod(shape) floats from
    there (t's shape must be that; a contiguous copy is kept alive in ``keep``); 0 for None."""
    def ptr(t: Optional[torch.Tensor], *shape: int) -> int:
        # The C++ side copies prod(shape) floats from here: the shape must be what the layer says.
        if t is None:
            return 0
        if tuple(t.shape) != shape:
            raise ValueError(f"a fused module's buffers disagree: expected shape {shape}, got {tuple(t.shape)}")
        t = t.detach().contiguous()
        keep.append(t)
        return t.data_ptr()
    return ptr


def check_input(x, cin: int, device: torch.device, weight_dtype: torch.dtype, what: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4 or x.shape[1] != cin:
        raise ValueError(f"x must be (N, {cin}, H, W) for {what}, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {x.dtype}")
    if x.device != device:
        raise ValueError(f"x must be on the fused module's device {device}, got {x.device}: move one")
    if x.device.type == "cpu" and (x.dtype != torch.float32 or weight_dtype != torch.float32):
        raise TypeError(f"x must be float32 on the CPU, where fused modules run in float32 (their C++ kernels are "
                        f"fp32), got x {x.dtype} and weights {weight_dtype}: use .float() on both (under "
                        f"torch.autocast('cpu') they also compute in float32)")
    if torch.jit.is_tracing():
        # The tracer records dispatcher ops only: the engine's call and the ops' raw-pointer fast paths would
        # leave a graph that returns uninitialised memory.
        raise RuntimeError(f"torch.jit.trace (and the TorchScript ONNX exporter) cannot record a fused module "
                           f"({what}): use torch.export.export or torch.compile")
    if x.requires_grad and torch.is_grad_enabled():
        raise RuntimeError(f"fused modules ({what}) are inference-only and compute no gradients: call the model "
                           f"under torch.inference_mode() or torch.no_grad(), or detach x")


def _engine_runs(x: torch.Tensor, units) -> bool:
    # Real (not fake / functional) fp32 CPU tensors, outside torch.compile, every unit on the default path.
    return (type(x) is torch.Tensor and x.device.type == "cpu" and x.dtype == torch.float32
            and all(u.ops_backend is None for u in units) and not torch.compiler.is_compiling() and _has_engine())


def _checked_net(engine: _Engine, units, x: torch.Tensor):
    """Validate x for the chain's first module; the chain's C++ Net when it runs x, else None (the op path)."""
    first = units[0]
    check_input(x, first.in_channels, first._device(), first._dtype(), type(_unwrap(first)).__name__)
    return engine.get(units) if _engine_runs(x, units) else None


def run_chain(engine: _Engine, units: Sequence["FusedUnit"], x: torch.Tensor) -> torch.Tensor:
    """Run ``units`` one after the other on x (validated), through the C++ engine when it can."""
    net = _checked_net(engine, units, x)
    if net is not None:
        n, _, h, w = x.shape
        c, oh, ow = net.out_shape(h, w)
        if type(units[-1]) is FusedHead:  # global mean + the classifier: (n, classes)
            out = torch.empty((n, c), dtype=torch.float32)
            net.run(x.data_ptr(), n, h, w, list(x.stride()), out.data_ptr(), torch.get_num_threads())
            return out
        if output_memory_format(x) == torch.channels_last:
            out = torch.empty((n, c, oh, ow), dtype=torch.float32, memory_format=torch.channels_last)
            net.run(x.data_ptr(), n, h, w, list(x.stride()), out.data_ptr(), torch.get_num_threads())
        else:  # the engine transposes its last NHWC buffer into the NCHW output
            out = torch.empty((n, c, oh, ow), dtype=torch.float32)
            net.run(x.data_ptr(), n, h, w, list(x.stride()), 0, torch.get_num_threads(), out.data_ptr())
        return out
    fmt = output_memory_format(x)
    if x.device.type != "cpu" and torch.is_autocast_enabled(x.device.type):
        x = x.to(torch.get_autocast_dtype(x.device.type))
    with torch.autocast(x.device.type, enabled=False):
        y = x
        for u in units:
            y = u._forward_ops(y)
    return y if y.dim() != 4 else y.contiguous(memory_format=fmt)


def run_chain_outputs(engine: _Engine, units: Sequence["FusedUnit"], x: torch.Tensor,
                      layers: Sequence[int]) -> List[torch.Tensor]:
    """Run ``units`` as one chain on x and return the outputs of ``layers`` (unit indices, ascending), each
    in the memory format eager gives: a backbone's feature maps from one engine call."""
    net = _checked_net(engine, units, x)
    if net is not None:
        n, _, h, w = x.shape
        cl = output_memory_format(x) == torch.channels_last
        fmt = torch.channels_last if cl else torch.contiguous_format
        last = len(units) - 1
        final = torch.empty((n, *net.out_shape(h, w)), dtype=torch.float32, memory_format=torch.channels_last)
        final_nchw, outs, spec = None, [], []
        for li in layers:
            if li == last:
                t = final if cl else torch.empty(final.shape, dtype=torch.float32)
                final_nchw = None if cl else t
            else:
                t = torch.empty((n, *net.layer_shape(li, h, w)), dtype=torch.float32, memory_format=fmt)
                spec.append((li, t.data_ptr() if cl else 0, 0 if cl else t.data_ptr()))
            outs.append(t)
        net.run_outputs(x.data_ptr(), n, h, w, list(x.stride()), final.data_ptr(), torch.get_num_threads(),
                        0 if final_nchw is None else final_nchw.data_ptr(), spec)
        return outs
    fmt = output_memory_format(x)
    if x.device.type != "cpu" and torch.is_autocast_enabled(x.device.type):
        x = x.to(torch.get_autocast_dtype(x.device.type))
    wanted, outs = set(layers), []
    with torch.autocast(x.device.type, enabled=False):
        y = x
        for i, u in enumerate(units):
            y = u._forward_ops(y)
            if i in wanted:
                outs.append(y.contiguous(memory_format=fmt))
    return outs


# ---- the swapped modules --------------------------------------------------------------------------------

_CONFIG_ATTRS = ("kernel", "stride", "pad", "act", "skip", "se_inner", "se_gate", "has_se", "has_expand", "dense")


class FusedUnit(nn.Module):
    """Base of the swapped modules: folded weights as buffers, inference only, an engine of its own."""

    in_channels: int
    out_channels: int

    def __init__(self, source: str):
        super().__init__()
        self.source = source  # the class it replaced (fuse_report, repr)
        self._engine = _Engine()
        self._generation = 0
        # None: the C++ engine for fp32 CPU inputs, the ops' default backend otherwise; a backend name
        # ("triton", "torch", "cpp") sends every call through the registered-op path with that backend.
        self.ops_backend: Optional[str] = None
        self.register_load_state_dict_post_hook(_drop_engine_hook)
        super().train(False)

    def train(self, mode: bool = True):
        if mode:
            raise RuntimeError(f"a fused module ({type(self).__name__}, in place of {self.source}) is inference-only "
                               f"(BatchNorm is folded into the convolutions, dropout and stochastic depth are gone): "
                               f"train the source model and fuse() it again")
        return super().train(False)

    def _apply(self, fn, *args, **kwargs):
        self._drop_engine()
        return super()._apply(fn, *args, **kwargs)

    def _drop_engine(self) -> None:
        self._engine = _Engine()
        self._generation += 1

    def __getstate__(self):  # deepcopy / pickle / torch.save: the engine is rebuilt from the buffers
        state = self.__dict__.copy()
        state["_engine"] = _Engine()
        return state

    def _device(self) -> torch.device:
        return next(iter(self._buffers.values())).device  # (the weights are this module's own buffers)

    def _dtype(self) -> torch.dtype:
        return next(iter(self._buffers.values())).dtype

    def _buf(self, name: str, t: torch.Tensor) -> None:
        self.register_buffer(name, t.float().contiguous())

    def forward(self, x: torch.Tensor, drop_connect_rate=None) -> torch.Tensor:
        # drop_connect_rate (keyword or positional): efficientnet_pytorch's block argument (stochastic depth,
        # the identity at inference)
        return run_chain(self._engine, [self], x)

    def __setattr__(self, name, value):
        # a buffer reassigned or an attribute the engine reads (stride, padding, skip, activations) changed: a new
        # generation, so the engine is rebuilt before the next call
        super().__setattr__(name, value)
        if name in _CONFIG_ATTRS or name in self.__dict__.get("_buffers", ()):
            self.__dict__["_generation"] = self.__dict__.get("_generation", 0) + 1

    def extra_repr(self) -> str:
        return f"{self.describe()}, in place of {self.source}"

    def set_swish(self, memory_efficient: bool = True) -> None:
        """efficientnet_pytorch's ``model.set_swish()`` reaches every block: a fused module computes the same
        SiLU either way."""


class FusedConv(FusedUnit):
    """A dense conv with BatchNorm folded, then an activation (``act``: a name of
    :data:`effnet_kernels.reference.ACTS`): a stem (k×k, im2col + GEMM) or a head (1×1 GEMM)."""

    def __init__(self, part: ConvPart, source: str):
        super().__init__(source)
        self.out_channels, self.in_channels, self.kernel, _ = part.weight.shape
        self.stride, self.pad, self.act, self.skip = part.stride, part.pad, part.act, part.skip
        self._buf("weight", part.weight)
        self._buf("bias", part.bias)

    def describe(self) -> str:
        return (f"conv {self.kernel}x{self.kernel}/{self.stride} {self.in_channels}->{self.out_channels}"
                + act_label(self.act) + (" +skip" if self.skip else ""))

    def _add_to(self, net, ptr, name: str, act: Optional[str] = None) -> None:
        co, ci, k = self.out_channels, self.in_channels, self.kernel
        net.add_conv(name, ci, co, k, self.stride, _engine_pad(self.pad), self.act if act is None else act,
                     ptr(self.weight, co, ci, k, k), ptr(self.bias, co), self.skip)

    def _forward_ops(self, x: torch.Tensor) -> torch.Tensor:
        t = x.dtype
        y = F.conv2d(_pad(x, self.pad, self.kernel, self.stride), self.weight.to(t), self.bias.to(t), self.stride)
        y = reference.activation(y, self.act)
        return y + x if self.skip else y


def _pad(x: torch.Tensor, pad: Pad, k: int, stride: int) -> torch.Tensor:
    if pad == "same":
        top, bottom, _ = pad_amounts_unchecked(x.shape[-2], k, stride, "same")
        left, right, _ = pad_amounts_unchecked(x.shape[-1], k, stride, "same")
    else:
        top, bottom, left, right = pad
    if top or bottom or left or right:
        x = F.pad(x, (left, right, top, bottom))
    return x


class FusedMBConv(FusedUnit):
    """One MBConv block: [expand 1×1 + act] → depthwise + act (+ SE pool) → [SE gate] → projection [+ x]; act
    SiLU (EfficientNet), ReLU6 (MobileNetV2, EfficientNet-Lite), ReLU / Hardswish (MobileNetV3, MNASNet), none;
    the SE's inner activation and gate (sigmoid, or hardsigmoid) its own. ``dense``: a fused-MBConv block
    (EfficientNetV2): the expand is a dense k×k conv (``expand_weight`` (cexp, cin, k, k)) and there is no
    depthwise conv."""

    def __init__(self, part: BlockPart, source: str):
        super().__init__(source)
        self.kernel, self.stride, self.pad, self.skip = part.kernel, part.stride, part.pad, part.skip
        self.act, self.se_inner, self.se_gate = part.act, part.se_inner, part.se_gate
        self.has_se = part.se is not None
        self.has_expand = part.expand is not None
        self.dense = part.dense
        if self.has_expand:
            self._buf("expand_weight", part.expand[0])
            self._buf("expand_bias", part.expand[1])
        if not self.dense:
            self._buf("dw_weight", part.dw[0])
            self._buf("dw_bias", part.dw[1])
        for name, t in zip(("se_reduce_weight", "se_reduce_bias", "se_expand_weight", "se_expand_bias"),
                           part.se or ()):
            self._buf(name, t)
        self._buf("proj_weight", part.project[0])
        self._buf("proj_bias", part.project[1])
        self.expanded = self.proj_weight.shape[1]
        self.in_channels = self.expand_weight.shape[1] if self.has_expand else self.expanded
        self.out_channels = self.proj_weight.shape[0]

    def describe(self) -> str:
        se = "" if not self.has_se else (" SE" if (self.se_inner, self.se_gate) == ("silu", "sigmoid") else
                                         f" SE({self.se_inner}/{self.se_gate})")
        return (("FusedMBConv" if self.dense else "MBConv") + f" k{self.kernel}/{self.stride} {self.in_channels}->"
                f"{self.expanded}->{self.out_channels}"
                + act_label(self.act) + (se if self.has_se else " no SE") + (" +skip" if self.skip else ""))

    def _add_to(self, net, ptr, name: str) -> None:
        from ._ext import _C
        b = _C.BlockSpec()
        cexp, s = self.expanded, self.se_reduce_weight.shape[0] if self.has_se else 0
        cin, co, k = self.in_channels, self.out_channels, self.kernel
        b.pad, b.cin, b.cexp, b.cout, b.k, b.stride, b.squeeze, b.skip = (
            _engine_pad(self.pad), cin, cexp, co, k, self.stride, s, self.skip)
        b.act, b.se_inner, b.se_gate, b.dense = self.act, self.se_inner, self.se_gate, self.dense
        if self.dense:
            b.expand_weight, b.expand_bias = ptr(self.expand_weight, cexp, cin, k, k), ptr(self.expand_bias, cexp)
        else:
            if self.has_expand:
                b.expand_weight, b.expand_bias = ptr(self.expand_weight, cexp, cin), ptr(self.expand_bias, cexp)
            b.dw_weight, b.dw_bias = ptr(self.dw_weight, cexp, 1, k, k), ptr(self.dw_bias, cexp)
        if self.has_se:
            b.se_reduce_weight, b.se_reduce_bias = ptr(self.se_reduce_weight, s, cexp), ptr(self.se_reduce_bias, s)
            b.se_expand_weight, b.se_expand_bias = ptr(self.se_expand_weight, cexp, s), ptr(self.se_expand_bias, cexp)
        b.proj_weight, b.proj_bias = ptr(self.proj_weight, co, cexp), ptr(self.proj_bias, co)
        net.add_block(name, b)

    def _dw_padding(self, h: int, w: int) -> Optional[str]:
        """The ops' padding name for this input, or None when the block's fixed padding is neither."""
        if self.pad == "same":
            return "same"
        k, s = self.kernel, self.stride
        if self.pad == (k // 2,) * 4:
            return "symmetric"
        same = pad_amounts_unchecked(h, k, s, "same")[:2] + pad_amounts_unchecked(w, k, s, "same")[:2]
        return "same" if tuple(self.pad) == tuple(same) else None

    def _forward_ops(self, x: torch.Tensor) -> torch.Tensor:
        t = x.dtype
        e = x
        if self.dense:  # the dense k×k conv (torch's; the fused ops have no dense conv), then SE + projection
            y = reference.activation(F.conv2d(_pad(x, self.pad, self.kernel, self.stride), self.expand_weight.to(t),
                                              self.expand_bias.to(t), self.stride), self.act)
            return self._se_project(y, y.float().mean((2, 3)) if self.has_se else None, x)
        if self.has_expand:
            e = reference.activation(F.conv2d(x, self.expand_weight.to(t)[:, :, None, None], self.expand_bias.to(t)),
                                     self.act)
        padding = self._dw_padding(x.shape[-2], x.shape[-1])
        pooled = None
        if padding is not None and self.has_se:
            y, pooled = ops.dwconv_bias_swish_pool(e, self.dw_weight.to(t), self.dw_bias.to(t), self.stride, padding,
                                                   backend=self.ops_backend, act=self.act)
        elif padding is not None:
            y = ops.dwconv_bias_swish(e, self.dw_weight.to(t), self.dw_bias.to(t), self.stride, padding,
                                      backend=self.ops_backend, act=self.act)
        else:  # fixed padding of a model built for another image size (efficientnet_pytorch): torch's conv
            y = reference.activation(F.conv2d(_pad(e, self.pad, self.kernel, self.stride), self.dw_weight.to(t),
                                              self.dw_bias.to(t), self.stride, groups=self.expanded), self.act)
            pooled = y.float().mean((2, 3)) if self.has_se else None
        return self._se_project(y, pooled, x)

    def _se_project(self, y: torch.Tensor, pooled: Optional[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        t = x.dtype
        if not self.has_se:  # the projection alone: a 1x1 conv (+ the input)
            out = F.conv2d(y, self.proj_weight.to(t)[:, :, None, None], self.proj_bias.to(t))
            return out + x if self.skip else out
        return ops.se_project(y, pooled, self.se_reduce_weight.to(t), self.se_reduce_bias.to(t),
                              self.se_expand_weight.to(t), self.se_expand_bias.to(t), self.proj_weight.to(t),
                              self.proj_bias.to(t), x if self.skip else None, backend=self.ops_backend,
                              inner_act=self.se_inner, gate=self.se_gate)


class FusedHead(FusedUnit):
    """A classifier's linear layer whose chain ends the engine's run: after the last layer, the global mean
    over H x W and this GEMM (``Net.set_classifier``). Called alone it is the linear layer it replaced (its
    weight and bias the same tensors' values). It takes the place of a whole classifier's nn.Linear only where
    an adapter knows the pooling before it is a global mean (effnet_kernels.adapters)."""

    def __init__(self, linear: nn.Linear, source: str):
        super().__init__(source)
        self.out_channels, self.in_channels = linear.weight.shape
        self._buf("weight", linear.weight.detach())
        self._buf("bias", linear.bias.detach() if linear.bias is not None else torch.zeros(self.out_channels))
        self.has_bias = linear.bias is not None

    def describe(self) -> str:
        return f"classifier {self.in_channels}->{self.out_channels} (global mean + linear, in the chain)"

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # alone: the nn.Linear it replaced
        t = x.dtype
        return F.linear(x, self.weight.to(t), self.bias.to(t) if self.has_bias else None)

    def _add_to(self, net, ptr, name: str) -> None:
        co, ci = self.out_channels, self.in_channels
        net.set_classifier(ci, co, ptr(self.weight, co, ci), ptr(self.bias, co))

    def _forward_ops(self, x: torch.Tensor) -> torch.Tensor:
        return self(x.mean((2, 3)))


def _drop_engine_hook(module, _incompatible_keys) -> None:
    module._drop_engine()  # a module-level function, so a fused module pickles


def _chain_units(module: nn.Module) -> Optional[List[FusedUnit]]:
    """The units ``module`` runs back to back when the chain may run it in one call (no hooks on it: a
    hook must see its module's call), else None."""
    if module._forward_hooks or module._forward_pre_hooks or getattr(module, "_forward_hooks_with_kwargs", None):
        return None
    if isinstance(module, FusedUnit):
        return [module]
    if type(module) is nn.Identity:
        return []
    if type(module) is FusedSequential:
        units: List[FusedUnit] = []
        for child in module:
            sub = _chain_units(child)
            if sub is None:
                return None
            units += sub
        return units
    return None


class FusedSequential(nn.Sequential):
    """An ``nn.Sequential`` (same children, same indices) whose consecutive fused children — and nested
    ``FusedSequential`` made only of them, and ``nn.Identity`` between them — run as one C++ chain."""

    def __init__(self, *args):
        super().__init__(*args)
        self._chains: Dict[Tuple[int, ...], _Engine] = {}
        super().train(False)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_chains"] = {}
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self.__dict__.setdefault("_chains", {})

    def _apply(self, fn, *args, **kwargs):
        self._chains = {}
        return super()._apply(fn, *args, **kwargs)

    def train(self, mode: bool = True):
        if mode:
            raise RuntimeError("a FusedSequential holds fused (inference-only) modules: train the source model and "
                               "fuse() it again")
        return super().train(False)

    def forward(self, x):
        if torch.compiler.is_compiling():  # the op path runs per module anyway
            for child in self:
                x = child(x)
            return x
        run: List[FusedUnit] = []
        for child in self:
            units = _chain_units(child)
            if units is not None:
                run += units
                continue
            x = self._run(run, x)
            run = []
            x = child(x)
        return self._run(run, x)

    def _run(self, units: List[FusedUnit], x):
        if not units:
            return x
        if len(units) == 1:
            return units[0](x)
        key = tuple(id(u) for u in units)
        engine = self._chains.get(key)
        if engine is None:
            engine = self._chains[key] = _Engine()
        return run_chain(engine, units, x)
