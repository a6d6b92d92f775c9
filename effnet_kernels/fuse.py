"""``fuse(model)``: a model's EfficientNet blocks as fused inference kernels.

Any model: ``fuse`` copies it and swaps every module :mod:`effnet_kernels.recognize` recognises for the fused
modules of :mod:`effnet_kernels.swapped` (see :func:`fuse`; :func:`fuse_report` says what it swapped and
left). A whole classifier — this package's :class:`~effnet_kernels.models.EfficientNet` at any φ,
torchvision's ``efficientnet_b0…b7`` and timm's ``efficientnet_b0…b7`` / ``tf_efficientnet_b0…b7`` (through
:func:`~effnet_kernels.from_torchvision` / :func:`~effnet_kernels.from_timm`) — becomes one
:class:`FusedEfficientNet` instead: every BatchNorm folded into its convolution (in float64) once, its
buffers those folded weights (its ``state_dict``). Two ways to run it, same outputs:

* **fp32 on the CPU, eager** (what inference servers run): one call into the C++ core
  (``effnet_kernels._C.Net``), which packed the weights when the model was built. Per MBConv block: the
  expand 1×1 as a GEMM with bias + Swish in its epilogue; the depthwise conv + bias + Swish emitting the SE
  pool means; the SE gate; the projection GEMM with the gate applied to its input as it is packed, the bias
  and the residual in its epilogue. Stem (im2col + GEMM + Swish), head (GEMM + Swish), global mean and
  classifier likewise. Activations are NHWC in buffers reused from call to call: no allocation, no
  dispatcher round trip per op, any input layout (the stem reads it through its strides).
* **every other case** — CUDA (fp32, fp16 / bf16, ``torch.autocast``), and while ``torch.compile`` or
  ``torch.export`` traces the model: the same graph from the registered ops
  (:func:`~effnet_kernels.ops.dwconv_bias_swish_pool`, :func:`~effnet_kernels.ops.se_project`; Triton
  kernels on CUDA) with the 1×1 expand / stem / head convs as torch convolutions + their activation, channels_last.

On the CPU a fused model computes in fp32 (under ``torch.autocast("cpu")`` too); other dtypes there raise.
Stochastic depth and dropout are identity (inference only): ``.train()`` on a fused model raises.
"""
from __future__ import annotations

import copy
from collections import OrderedDict
from dataclasses import dataclass
from typing import List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import ops, recognize, swapped
from .models import ConvBNAct, EfficientNet, MBConv
from .padding import pad_amounts_unchecked
from .reference import fold_bn

__all__ = ["fuse", "fuse_report", "FuseReport", "FusedEfficientNet"]


def _folded(m: ConvBNAct):
    bn = m.bn
    w, b = fold_bn(m.conv.weight.detach().double(), bn.weight.detach().double(), bn.bias.detach().double(),
                   bn.running_mean.double(), bn.running_var.double(), bn.eps)
    return w.float(), b.float()


def _matrix(w: torch.Tensor) -> torch.Tensor:
    return w.reshape(w.shape[0], -1).contiguous()


class _FusedBlock(nn.Module):
    """One MBConv block's folded weights (buffers) and its op-path forward."""

    def __init__(self, block: MBConv):
        super().__init__()
        spec = block.spec
        self.kernel, self.stride, self.skip = spec.kernel, spec.stride, block.has_skip
        self.has_expand = block.expand is not None
        if self.has_expand:
            we, be = _folded(block.expand)
            self.register_buffer("expand_weight", _matrix(we))
            self.register_buffer("expand_bias", be)
        wd, bd = _folded(block.dw)
        self.register_buffer("dw_weight", wd.contiguous())
        self.register_buffer("dw_bias", bd)
        se = block.se
        self.register_buffer("se_reduce_weight", _matrix(se.reduce.weight.detach().float()))
        self.register_buffer("se_reduce_bias", se.reduce.bias.detach().float().clone())
        self.register_buffer("se_expand_weight", _matrix(se.expand.weight.detach().float()))
        self.register_buffer("se_expand_bias", se.expand.bias.detach().float().clone())
        wp, bp = _folded(block.project)
        self.register_buffer("proj_weight", _matrix(wp))
        self.register_buffer("proj_bias", bp)

    def forward(self, x: torch.Tensor, padding: str, backend: Optional[str] = None) -> torch.Tensor:
        t = x.dtype
        e = x
        if self.has_expand:
            e = F.silu(F.conv2d(x, self.expand_weight.to(t)[:, :, None, None], self.expand_bias.to(t)))
        y, pooled = ops.dwconv_bias_swish_pool(e, self.dw_weight.to(t), self.dw_bias.to(t), self.stride, padding,
                                               backend=backend)
        return ops.se_project(y, pooled, self.se_reduce_weight.to(t), self.se_reduce_bias.to(t),
                              self.se_expand_weight.to(t), self.se_expand_bias.to(t), self.proj_weight.to(t),
                              self.proj_bias.to(t), x if self.skip else None, backend=backend)


class FusedEfficientNet(nn.Module):
    """The inference model :func:`fuse` returns (see the module docstring). Its ``state_dict`` holds the
    folded weights and loads into ``fuse()`` of the same architecture; the C++ engine is rebuilt from
    them whenever they change (load, ``.to()``, in-place edits, reassigned buffers: every forward checks
    that the buffers are the ones the engine copied, unchanged)."""

    def __init__(self, model: EfficientNet):
        super().__init__()
        self.padding = model.padding
        self.in_channels = model.stem.conv.weight.shape[1]
        ws, bs = _folded(model.stem)
        self.stem_kernel, self.stem_stride = ws.shape[-1], model.stem.conv.stride[0]
        self.register_buffer("stem_weight", ws.contiguous())
        self.register_buffer("stem_bias", bs)
        self.blocks = nn.ModuleList(_FusedBlock(b) for stage in model.blocks for b in stage)
        wh, bh = _folded(model.head)
        self.register_buffer("head_weight", _matrix(wh))
        self.register_buffer("head_bias", bh)
        self.register_buffer("classifier_weight", model.classifier.weight.detach().float().contiguous())
        self.register_buffer("classifier_bias", model.classifier.bias.detach().float().clone())
        self._net = None
        self._watch = None
        # None: the C++ engine for fp32 CPU inputs, the ops' default backend otherwise. A backend name
        # ("triton", "torch", "cpp") sends every call through the registered-op path with that backend (the
        # tests run the GPU path's Triton kernels on CPU tensors this way, under TRITON_INTERPRET=1).
        self.ops_backend: Optional[str] = None
        self.register_load_state_dict_post_hook(_drop_engine_hook)
        super().train(False)

    # ---- inference only -------------------------------------------------------------------------------
    def train(self, mode: bool = True):
        if mode:
            raise RuntimeError("a fused EfficientNet is inference-only (BatchNorm is folded into the convolutions, "
                               "dropout and stochastic depth are gone): train the source model and fuse() it again")
        return super().train(False)

    def _apply(self, fn, *args, **kwargs):
        self._drop_engine()
        return super()._apply(fn, *args, **kwargs)

    def _drop_engine(self) -> None:
        self._net = None
        self._watch = None

    def _engine_is_current(self) -> bool:
        """Whether the C++ engine's copy of the weights is still the buffers' (~30 µs for B0): every buffer
        the engine was built from is still in its place (not reassigned, not replaced by a submodule's
        .half() / .to()) and unchanged in place (same version; a submodule's load_state_dict copies in place).
        Inference tensors (a model fused under inference_mode) carry no version and are checked by place."""
        return self._net is not None and all(
            bufs.get(name) is t and (v is None or t._version == v) for bufs, name, t, v in self._watch)

    def __getstate__(self):  # copy.deepcopy / pickle / torch.save: the engine is rebuilt from the buffers
        state = self.__dict__.copy()
        state["_net"] = None
        state["_watch"] = None
        return state

    # ---- the C++ engine (fp32 CPU) ----------------------------------------------------------------------
    def _engine(self):
        """The C++ engine for the current weights (rebuilt when they changed); None when a buffer is not fp32
        on the CPU (the registered-op path runs those)."""
        if self._engine_is_current():
            return self._net
        self._drop_engine()
        if any(b.dtype != torch.float32 or b.device.type != "cpu" for b in self.buffers()):
            return None
        from ._ext import _C
        from .cpu import _isa
        net = _C.Net(self.padding == "same", _isa.forced or "")
        keep: List[torch.Tensor] = []  # the C++ side copies every weight; these only need to live through the calls
        ptr = swapped.pointer_to(keep)

        cout, cin, k, _ = self.stem_weight.shape
        net.set_stem(cin, cout, k, self.stem_stride, ptr(self.stem_weight, cout, cin, k, k),
                     ptr(self.stem_bias, cout))
        for b in self.blocks:
            cexp, s = b.dw_weight.shape[0], b.se_reduce_weight.shape[0]
            cin_b = b.expand_weight.shape[1] if b.has_expand else cexp
            co = b.proj_weight.shape[0]
            net.add_block(cin_b, cexp, co, b.kernel, b.stride, s, b.skip,
                          ptr(b.expand_weight, cexp, cin_b) if b.has_expand else 0,
                          ptr(b.expand_bias, cexp) if b.has_expand else 0,
                          ptr(b.dw_weight, cexp, 1, b.kernel, b.kernel), ptr(b.dw_bias, cexp),
                          ptr(b.se_reduce_weight, s, cexp), ptr(b.se_reduce_bias, s),
                          ptr(b.se_expand_weight, cexp, s), ptr(b.se_expand_bias, cexp),
                          ptr(b.proj_weight, co, cexp), ptr(b.proj_bias, co))
        hc, hin = self.head_weight.shape
        net.set_head(hin, hc, ptr(self.head_weight, hc, hin), ptr(self.head_bias, hc))
        classes = self.classifier_weight.shape[0]
        net.set_classifier(hc, classes, ptr(self.classifier_weight, classes, hc), ptr(self.classifier_bias, classes))
        self._watch = [(m._buffers, name, t, None if t.is_inference() else t._version)
                       for m in self.modules() for name, t in m._buffers.items() if t is not None]
        self._net = net
        return self._net

    def _uses_engine(self, x: torch.Tensor) -> bool:
        # Real (not fake / functional) fp32 CPU tensors, outside torch.compile (CPU autocast too: the CPU
        # kernels are fp32).
        return (self.ops_backend is None and type(x) is torch.Tensor and x.device.type == "cpu"
                and x.dtype == torch.float32 and not torch.compiler.is_compiling() and _has_engine())

    # ---- forward ----------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        swapped.check_input(x, self.in_channels, self.stem_weight.device, self.stem_weight.dtype, "FusedEfficientNet")
        if self._uses_engine(x):
            net = self._engine()
            if net is not None:
                n, _, h, w = x.shape
                logits = torch.empty((n, self.classifier_weight.shape[0]), dtype=torch.float32)
                net.run(x.data_ptr(), n, h, w, list(x.stride()), logits.data_ptr(), torch.get_num_threads())
                return logits
        return self._forward_ops(x)

    def _engine_taps(self, x: torch.Tensor):
        """``(logits, {"stem": t, "blocks.<i>": t, ..., "head": t})``: the C++ engine's forward pass on x (fp32
        CPU) with every step's output kept, each as an (N, C, H, W) channels_last tensor — what the tests
        compare block by block with the source model. Not for concurrent use with other callers."""
        if not self._uses_engine(x) or self._engine() is None:
            raise RuntimeError("_engine_taps needs the C++ engine: fp32 CPU input and weights, effnet_kernels._C "
                               "built, ops_backend None")
        net = self._engine()
        net.set_taps(True)
        try:
            with torch.inference_mode():
                logits = self(x)
        finally:
            net.set_taps(False)
        taps = {}
        for name, (n, h, w, c), data in net.last_taps():
            taps[name] = torch.frombuffer(bytearray(data), dtype=torch.float32).view(n, h, w, c).permute(0, 3, 1, 2)
        return logits, taps

    def _forward_ops(self, x: torch.Tensor, head_only: bool = False) -> torch.Tensor:
        """The registered-op path; ``head_only``: the head's output (N, C, H, W) instead of the logits."""
        if x.device.type != "cpu" and torch.is_autocast_enabled(x.device.type):
            x = x.to(torch.get_autocast_dtype(x.device.type))
        with torch.autocast(x.device.type, enabled=False):
            t = x.dtype
            x = x.contiguous(memory_format=torch.channels_last)
            k, s = self.stem_kernel, self.stem_stride
            if self.padding == "same":
                top, bottom, _ = pad_amounts_unchecked(x.shape[-2], k, s, "same")
                left, right, _ = pad_amounts_unchecked(x.shape[-1], k, s, "same")
                x = F.conv2d(F.pad(x, (left, right, top, bottom)), self.stem_weight.to(t), self.stem_bias.to(t), s)
            else:
                x = F.conv2d(x, self.stem_weight.to(t), self.stem_bias.to(t), s, k // 2)
            x = F.silu(x)
            for block in self.blocks:
                x = block(x, self.padding, self.ops_backend)
            x = F.silu(F.conv2d(x, self.head_weight.to(t)[:, :, None, None], self.head_bias.to(t)))
            if head_only:
                return x
            return F.linear(x.mean((2, 3)), self.classifier_weight.to(t), self.classifier_bias.to(t))


def _drop_engine_hook(module: "FusedEfficientNet", _incompatible_keys) -> None:
    module._drop_engine()  # a module-level function, so a fused model pickles


def _has_engine() -> bool:
    from ._ext import has_cpp
    return has_cpp()


# ---- fuse(): the whole-classifier engine, or a copy with every recognised module swapped -------------------

@dataclass
class FuseEntry:
    """One module fuse() looked at: its path in the model, class, and what became of it."""
    path: str
    cls: str
    swapped: bool
    what: str  # the fused module (swapped) or the reason it was left
    output_of: str = ""  # the source module whose output the fused module's equals (a stem conv's: its BN's)


class FuseReport:
    """What :func:`fuse` swapped and what it left, per module path (``ek.fuse_report(fused)``)."""

    def __init__(self, entries: List[FuseEntry], mode: str):
        self.entries = entries
        self.mode = mode  # "whole-model engine" or "swapped modules"

    @property
    def swapped(self) -> List[FuseEntry]:
        return [e for e in self.entries if e.swapped]

    @property
    def left(self) -> List[FuseEntry]:
        return [e for e in self.entries if not e.swapped]

    def __str__(self) -> str:
        lines = [f"fuse(): {len(self.swapped)} swapped, {len(self.left)} left ({self.mode})"]
        for e in self.entries:
            lines.append(f"  {'swapped' if e.swapped else 'left   '}  {e.path or '(model)'}  [{e.cls}]  {e.what}")
        return "\n".join(lines)

    __repr__ = __str__


def fuse_report(fused: nn.Module) -> FuseReport:
    """The :class:`FuseReport` of a model :func:`fuse` returned."""
    report = getattr(fused, "_effnet_fuse_report", None)
    if not isinstance(report, FuseReport):
        raise TypeError(f"fused must be a model returned by effnet_kernels.fuse(), got {type(fused).__name__} "
                        f"without a fuse report")
    return report


def _cls(m) -> str:
    return f"{type(m).__module__}.{type(m).__qualname__}"


def _supported() -> str:
    return ", ".join(recognize.registered())


def _whole_classifier(model: nn.Module) -> Optional[EfficientNet]:
    """This package's EfficientNet for a whole B0-B7 classifier of a known class whose every layer the
    whole-model engine computes (SiLU blocks with SE, average pooling, a linear classifier); else None."""
    if isinstance(model, EfficientNet) and type(model) is EfficientNet:
        return model
    name = type(model).__module__
    try:
        if name.startswith("torchvision") and type(model).__name__ == "EfficientNet":
            if type(model.avgpool) is not nn.AdaptiveAvgPool2d or type(model.classifier[-1]) is not nn.Linear:
                return None
            from .models import from_torchvision
            return from_torchvision(model)
        if name.startswith("timm") and type(model).__name__ == "EfficientNet":
            pool = model.global_pool
            if getattr(pool, "pool_type", None) != "avg" or type(model.classifier) is not nn.Linear:
                return None
            from .models import from_timm
            return from_timm(model)
    except (TypeError, ValueError, AttributeError, IndexError):
        return None  # not one of the preset architectures: the general path swaps its modules
    return None


def _same_parts(source: "_Swapper", converted: EfficientNet) -> bool:
    """Whether this package's EfficientNet the converter built folds to the same blocks, stem and head as the
    source model did: same strides, paddings, residuals and (to fp64 rounding) the same folded weights."""
    ours = _Swapper(False, dry=True)
    ours.visit(converted, "")
    if not all(e.swapped for e in ours.entries):
        return False
    groups = [([p for p in s.parts if p.kind == "block"], [p for p in s.parts if p.kind == "conv"])
              for s in (source, ours)]
    (sb, sc), (ob, oc) = groups
    if len(sb) != len(ob) or len(sc) != len(oc):
        return False
    for a, b in zip(sb + sc, ob + oc):
        def geometry(p):
            return (p.stride, p.pad, getattr(p, "skip", None), p.act, getattr(p, "se_inner", None),
                    getattr(p, "se_gate", None), getattr(p, "se", ()) is None)
        if geometry(a) != geometry(b):
            return False
        ta = [t for t in _tensors_of(a)]
        tb = [t for t in _tensors_of(b)]
        if len(ta) != len(tb) or any(x.shape != y.shape or not torch.allclose(x, y, rtol=1e-9, atol=0)
                                     for x, y in zip(ta, tb)):
            return False
    return True


def _tensors_of(part):
    if isinstance(part, recognize.ConvPart):
        return [part.weight, part.bias]
    return [*(part.expand or ()), *part.dw, *(part.se or ()), *part.project]


def _unit_for(part, source: nn.Module) -> swapped.FusedUnit:
    cls = swapped.FusedConv if isinstance(part, recognize.ConvPart) else swapped.FusedMBConv
    return cls(part, type(source).__name__)


def _has_hooks(m: nn.Module, pre: bool = False, post: bool = False) -> bool:
    return bool((pre and (m._forward_pre_hooks or getattr(m, "_forward_pre_hooks_with_kwargs", None)))
                or (post and m._forward_hooks))


def _hooked_inside(module: nn.Module) -> Optional[str]:
    """The name of a submodule of ``module`` (not itself) with a forward hook or pre-hook, or None."""
    for name, m in module.named_modules():
        if name and _has_hooks(m, pre=True, post=True):
            return name
    return None


_HOOK_DICTS = ("_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks",
               "_forward_pre_hooks_with_kwargs")


def _replace(module: nn.Module, name: str, new: nn.Module, old: nn.Module) -> None:
    """module.name = new, keeping the hooks registered on old (timm's FeatureHookNet reads features so)."""
    for d in _HOOK_DICTS:
        if getattr(old, d, None):
            getattr(new, d).update(getattr(old, d))
    setattr(module, name, new)


class _Swapper:
    def __init__(self, strict: bool, dry: bool = False):
        self.strict = strict
        self.dry = dry  # only look: report what would be swapped, change nothing
        self.entries: List[FuseEntry] = []
        self.parts: list = []  # the folded parts of what was (or would be) swapped, in visiting order

    def swapped_any(self) -> bool:
        return any(e.swapped for e in self.entries)

    def replace(self, module: nn.Module, name: str, new: nn.Module, old: nn.Module) -> None:
        if not self.dry:
            _replace(module, name, new, old)

    def note(self, path: str, module: nn.Module, swapped_to, reason: Optional[str] = None,
             output_of: Optional[str] = None, part=None) -> None:
        if part is not None:
            self.parts.append(part)
        if swapped_to is None and self.strict:
            raise ValueError(f"fuse(strict=True): {path or '(model)'} ({_cls(module)}) was left: {reason}")
        self.entries.append(FuseEntry(path, _cls(module), swapped_to is not None,
                                      swapped_to.describe() if swapped_to is not None else reason,
                                      path if output_of is None else output_of))

    def visit(self, module: nn.Module, prefix: str) -> None:
        for name, child in list(module.named_children()):
            path = prefix + name
            part = recognize.recognize(child)
            hooked = _hooked_inside(child)
            if hooked is not None and isinstance(part, (recognize.ConvPart, recognize.BlockPart)):
                part = f"a hook is registered on its submodule {hooked} (a fused module has no submodules to call it)"
            if isinstance(part, (recognize.ConvPart, recognize.BlockPart)):
                unit = part if self.dry else _unit_for(part, child)  # (a part describes itself as its unit does)
                self.replace(module, name, unit, child)
                self.note(path, child, unit, part=part)
                continue
            if isinstance(part, str):
                self.note(path, child, None, part)
                continue
            like = recognize.subclass_of_registered(child)
            if like is not None:
                self.note(path, child, None, f"a subclass of {like}, not the class itself (recognition is by "
                                             f"exact class: a subclass may compute something else)")
            self.visit(child, path + ".")
            if type(child) is nn.Sequential and name in recognize.FLAT_SEQUENTIALS.get(type(module), ()):
                self.flat(child, path + ".")
            if type(child) is nn.Sequential and any(isinstance(c, (swapped.FusedUnit, swapped.FusedSequential))
                                                    for c in child):
                self.replace(module, name, swapped.FusedSequential(OrderedDict(child._modules)), child)
        self.pairs(module, prefix)

    def flat(self, seq: nn.Sequential, prefix: str) -> None:
        """The conv + BN [+ act] runs of a flat nn.Sequential (recognize.flat_runs): the first module of a run
        becomes the fused one, the others nn.Identity (the Sequential keeps its indices)."""
        for start, end, part in recognize.flat_runs(seq):
            path = prefix + str(start)
            first = seq[start]
            run = [seq[i] for i in range(start, end)]
            # a pre-hook on the first module and a hook on the last one's output still see what they saw (they are
            # carried to the fused module and to the Identity in the last one's place); any other hook would not
            hooked = next((prefix + str(start + j) for j, m in enumerate(run)
                           if _has_hooks(m, pre=j > 0, post=j < len(run) - 1)), None)
            if hooked is not None and not isinstance(part, str):
                part = f"a hook on {hooked} would see another module's output once the run is one fused module"
            if isinstance(part, str):
                self.note(path, first, None, part)
                continue
            unit = part if self.dry else _unit_for(part, first)
            if not self.dry:
                unit.source = " + ".join(type(m).__name__ for m in run)
            self.replace(seq, str(start), unit, first)
            for i in range(start + 1, end):
                self.replace(seq, str(i), nn.Identity().eval(), seq[i])
            last = prefix + str(end - 1)
            self.note(path, first, unit, output_of=last, part=part)
            if end - start > 1:
                self.entries[-1].what += f" (with {prefix}{start + 1}..{end - 1}, now Identity)"

    def pairs(self, module: nn.Module, prefix: str) -> None:
        """Conv + BatchNorm siblings the container's forward calls back to back."""
        named = recognize.PAIR_CONTAINERS.get(type(module), [])
        if type(module) in recognize.ADJACENT_CONTAINERS:
            kids = list(module._modules.items())
            named = named + [(a, b) for (a, _), (b, _) in zip(kids, kids[1:])]
        returned = getattr(module, "return_layers", None) or {}  # timm feature wrappers: outputs kept by name
        for names in named:
            conv_name, bn_name = names[0], names[1]
            conv, bn = getattr(module, conv_name, None), getattr(module, bn_name, None)
            if conv is None or bn is None or conv_name in returned:
                continue
            # a third name: the activation module the container calls right after the BN (timm's
            # MobileNetV3Features act1), folded in when the kernels apply it, else left to run after the pair
            act_name = names[2] if len(names) > 2 and getattr(module, names[2], None) is not None else None
            act = getattr(module, act_name) if act_name else None
            if act is not None and (recognize.act_of(act) is None or bn_name in returned):
                act_name = act = None
            part = recognize.conv_bn_pair(conv, bn, act)
            if part is None:
                continue
            if isinstance(part, recognize.ConvPart) and (_has_hooks(conv, post=True) or _has_hooks(bn, pre=True) or (
                    act is not None and (_has_hooks(bn, post=True) or _has_hooks(act, pre=True)))):
                part = (f"a hook on {conv_name}'s output or on {bn_name}'s input would see the BatchNorm's output "
                        f"once the two are one fused module")
            path = prefix + conv_name
            if isinstance(part, str):
                self.note(path, conv, None, f"with {bn_name}: {part}")
                continue
            unit = part if self.dry else _unit_for(part, conv)
            if not self.dry:
                unit.source = f"{type(conv).__name__} + {type(bn).__name__}"
            self.replace(module, conv_name, unit, conv)
            self.replace(module, bn_name, nn.Identity().eval(), bn)
            if act is not None:
                self.replace(module, act_name, nn.Identity().eval(), act)
            self.note(path, conv, unit, output_of=prefix + (act_name or bn_name), part=part)
            self.entries[-1].what += (f" (with {bn_name} and {act_name}, now Identity)" if act is not None
                                      else f" (with {bn_name}, now an Identity)")


def _chain_feature_backbones(model: nn.Module, swapper: "_Swapper") -> None:
    """timm EfficientNetFeatures / MobileNetV3Features whose stem and stages were all swapped run them as one
    chain (swapped.fused_features_class); so do timm EfficientNet / MobileNetV3 classifiers' forward_features
    (swapped.fused_classifier_class) and efficientnet_pytorch EfficientNets whose stem, blocks and head were
    (swapped.fused_lukemelas_class)."""
    try:
        from efficientnet_pytorch.model import EfficientNet as LukemelasEfficientNet
    except ImportError:
        LukemelasEfficientNet = None
    for path, m in model.named_modules():
        if LukemelasEfficientNet is not None and type(m) is LukemelasEfficientNet:
            units = swapped.lukemelas_plan(m)
            if units is not None:
                m.__class__ = swapped.fused_lukemelas_class(LukemelasEfficientNet)
                name = f"{LukemelasEfficientNet.__module__}.{LukemelasEfficientNet.__qualname__}"
                swapper.entries.append(FuseEntry(path, name, True, f"one chain: the stem, {len(units) - 2} blocks "
                                                 f"and the head (extract_features, extract_endpoints)", path))
    try:
        from timm.models.efficientnet import EfficientNet as TimmEfficientNet, EfficientNetFeatures
        from timm.models.mobilenetv3 import MobileNetV3, MobileNetV3Features
    except ImportError:
        return
    for path, m in model.named_modules():
        base = type(m)
        if base in (EfficientNetFeatures, MobileNetV3Features):
            plan = swapped.features_plan(m)
            if plan is not None:
                m.__class__ = swapped.fused_features_class(base)
                units, layers = plan
                name = f"{base.__module__}.{base.__qualname__}"
                swapper.entries.append(FuseEntry(path, name, True, f"one chain: the stem and {len(units) - 1} "
                                                 f"blocks, feature maps after layers {layers}", path))
        elif base in (TimmEfficientNet, MobileNetV3):
            units = swapped.timm_classifier_plan(m)
            if units is not None:
                m.__class__ = swapped.fused_classifier_class(base)
                name = f"{base.__module__}.{base.__qualname__}"
                head = " and the head" if hasattr(m, "bn2") else ""
                blocks = len(units) - 1 - bool(head)
                swapper.entries.append(FuseEntry(path, name, True, f"one chain: the stem, {blocks} blocks{head} "
                                                 f"(forward_features)", path))


def fuse(model: nn.Module, strict: bool = False, inplace: bool = False) -> nn.Module:
    """A fused copy of ``model``, same outputs (see the module docstring); the source is never modified.

    * A whole B0–B7 classifier (this package's EfficientNet at any φ, torchvision's and timm's
      ``efficientnet_b*`` / ``tf_efficientnet_b*``) becomes a :class:`FusedEfficientNet`: the whole
      forward pass in one C++ call.
    * Any other ``nn.Module`` — a backbone, a feature extractor, a U-Net or detector around one,
      efficientnet_pytorch's EfficientNet — is copied and every module :mod:`effnet_kernels.recognize`
      recognises is replaced by a fused one (:mod:`effnet_kernels.swapped`); everything else (decoders,
      heads, custom layers, forward signatures, attribute paths) stays as it was.

    ``ek.fuse_report(fused)`` lists what was swapped and what was left, and why. ``strict=True`` raises a
    ValueError on the first module left. A model with nothing to swap is a TypeError naming what is
    supported. ``model`` must be in eval mode. ``inplace`` is accepted for the usual signature: the
    source is never modified either way, and the result never shares storage with it. The result lives on
    the source's device and in its dtype. On the CPU in fp32 a whole classifier's C++ engine is built
    (weights packed) here, so its first forward pass is as fast as the next; in a model with swapped modules
    each engine is built at its first call (which chains a model's forward runs is only known then: one per
    stage for timm's features_only, one per block in efficientnet_pytorch's loop, one for a whole
    nn.Sequential), so the first forward pass packs the weights (milliseconds to a second)."""
    if not isinstance(inplace, bool):
        raise TypeError(f"inplace must be a bool, got {type(inplace).__name__}")
    if not isinstance(strict, bool):
        raise TypeError(f"strict must be a bool, got {type(strict).__name__}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"fuse(): model must be an nn.Module, got {type(model).__name__}")
    if isinstance(model, (FusedEfficientNet, swapped.FusedUnit)) or getattr(model, "_effnet_fuse_report", None):
        raise TypeError(f"model must be an unfused model, got a {type(model).__name__} fuse() returned (it is "
                        f"already fused)")
    if model.training:
        raise ValueError("fuse() needs a model in eval mode (it folds the BatchNorm running statistics): call "
                         "model.eval() first")
    params = list(model.parameters()) + list(model.buffers())
    device, dtype = (params[0].device, params[0].dtype) if params else (torch.device("cpu"), torch.float32)
    src = _whole_classifier(model)
    if src is not None:
        # the block checks first: a preset architecture with, say, another activation is not the engine's;
        # and what the converter rebuilt from the weights' shapes must fold to the same parts as the source
        # (a changed stride, padding or BN eps is not in the shapes)
        check = _Swapper(strict, dry=True)
        check.visit(model, "")
        if all(e.swapped for e in check.entries) and _same_parts(check, src):
            with torch.no_grad():
                fused = FusedEfficientNet(src).to(device=device, dtype=dtype)
            fused._effnet_fuse_report = FuseReport(check.entries, "whole-model engine")
            if _has_engine():
                fused._engine()  # packs the weights now when they are fp32 on the CPU (None otherwise)
            return fused
    with torch.no_grad():
        out = copy.deepcopy(model)
        swapper = _Swapper(strict)
        top = recognize.recognize(out)
        if isinstance(top, (recognize.ConvPart, recognize.BlockPart)):  # the model is one block / conv
            unit = _unit_for(top, out)
            swapper.note("", out, unit)
            out = unit
        elif isinstance(top, str):
            swapper.note("", out, None, top)
        else:
            swapper.visit(out, "")
            if type(out) is nn.Sequential and any(isinstance(c, (swapped.FusedUnit, swapped.FusedSequential))
                                                  for c in out):
                seq = swapped.FusedSequential(OrderedDict(out._modules))
                for d in _HOOK_DICTS:
                    if getattr(out, d, None):
                        getattr(seq, d).update(getattr(out, d))
                out = seq
    if not swapper.swapped_any():
        left = "; ".join(f"{e.path}: {e.what}" for e in swapper.entries[:3])
        raise TypeError(f"fuse(): model must contain a module fuse() recognises, got {type(model).__name__} "
                        f"({_cls(model)}) with nothing to swap in it" + (f" (left: {left})" if left else "")
                        + f"; it recognises: {_supported()}")
    for m in out.modules():
        if isinstance(m, swapped.FusedUnit):
            m.to(device=device, dtype=dtype)
    _chain_feature_backbones(out, swapper)
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    swapper.entries.sort(key=lambda e: order.get(e.path, len(order)))
    out._effnet_fuse_report = FuseReport(swapper.entries, "swapped modules")
    return out
