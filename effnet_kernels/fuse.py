"""``fuse(model)``: a model's EfficientNet-family blocks as fused inference kernels, each swap proven.

``fuse`` copies the model and runs one sample forward pass on a hook-free copy, recording the input of every
module that could be a block or a conv layer. Each of those, outermost first, is read by what it computes: its
``torch.export`` graph at that input (:mod:`effnet_kernels.graph`: expand → depthwise → SE → projection →
residual, conv + BN + activation, or a chain of them), whatever its class is called. What is read becomes a
fused module of :mod:`effnet_kernels.swapped` (:class:`~effnet_kernels.swapped.FusedConv`,
:class:`~effnet_kernels.swapped.FusedMBConv`, a :class:`~effnet_kernels.swapped.FusedSequential` of them), which
is then run against its source module on the recorded input and on a second shape
(:func:`effnet_kernels.proof.prove`): a swap that does not give the source's outputs is left, with the reason.
Conv + BatchNorm siblings that a container's forward calls back to back (stems and heads: found in the
container's graph) are read and proven the same way. Containers whose forward is known to run their blocks in a
row (``nn.Sequential``, and the per-library adapters of :mod:`effnet_kernels.adapters`) run them as one C++ chain
on the CPU.

``ek.fuse_report(fused)`` lists what was swapped and what was left, and why.
"""
from __future__ import annotations

import copy
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from . import adapters, graph, swapped
from .parts import ConvPart
from .proof import prove

__all__ = ["fuse", "fuse_report", "refresh", "FuseReport"]

refresh = swapped.refresh


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
        self.mode = mode  # "swapped modules"

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



def _units_for(parts, source: nn.Module) -> nn.Module:
    """The fused module for a part, or a FusedSequential for a chain of them."""
    name = type(source).__name__
    units = [(swapped.FusedConv if isinstance(p, ConvPart) else swapped.FusedMBConv)(p, name)
             for p in parts]
    return units[0] if len(units) == 1 else swapped.FusedSequential(*units)


def _describe(unit: nn.Module) -> str:
    if isinstance(unit, swapped.FusedUnit):
        return unit.describe()
    return " -> ".join(u.describe() for u in unit)


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


def _conv_count(module: nn.Module) -> int:
    return sum(1 for p in module.parameters() if p.dim() == 4)


def _conv_and_bn_children(module: nn.Module) -> bool:
    kids = list(module.children())
    return any(isinstance(c, nn.Conv2d) for c in kids) and any(isinstance(c, nn.BatchNorm2d) for c in kids)


# A module with more convolutions than this is a container, not one block (an MBConv has at most five: expand,
# depthwise, the SE's two, projection; a stem chain as transformers' MobileNetV2Stem three): not exported whole.
_MAX_CONVS = 6


def _parse_example(example_inputs, model: nn.Module) -> Tuple[tuple, dict]:
    """(args, kwargs) of the sample forward pass: a tensor, a tuple of arguments, or (args, kwargs); default one
    1 x C x 224 x 224 image, C the first convolution's input channels, on the model's device and dtype."""
    if example_inputs is None:
        first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
        if first is None:
            raise TypeError(f"fuse(): model must contain a convolution, got {type(model).__name__} with none "
                            f"(nothing to fuse)")
        w = first.weight
        x = torch.randn(1, first.in_channels, 224, 224, generator=torch.Generator().manual_seed(0))
        return (x.to(device=w.device, dtype=w.dtype),), {}
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,), {}
    if isinstance(example_inputs, (tuple, list)):
        if len(example_inputs) == 2 and isinstance(example_inputs[0], (tuple, list)) \
                and isinstance(example_inputs[1], dict):
            return tuple(example_inputs[0]), dict(example_inputs[1])
        return tuple(example_inputs), {}
    raise TypeError(f"example_inputs must be a tensor, a tuple of arguments or (args, kwargs), got "
                    f"{type(example_inputs).__name__}")


def _strip_hooks(model: nn.Module) -> None:
    for m in model.modules():
        for d in _HOOK_DICTS:
            if getattr(m, d, None):
                getattr(m, d).clear()


def _capture(probe: nn.Module, args: tuple, kwargs: dict):
    """Run probe(*args, **kwargs) once, recording the first call's arguments of every module that holds 1 to
    _MAX_CONVS convolutions or has a conv and a BatchNorm among its children (their pairing is read from its graph)
    (copies: the forward may write to its tensors in place); and the type of what those that return something else
    than a tensor returned."""
    records: Dict[nn.Module, Tuple[tuple, dict]] = {}
    not_tensor: Dict[nn.Module, str] = {}
    # the output of each module of more than one conv below a module with conv and BN children, and how often it
    # was called (the container's sibling pairs are read from a graph with such modules standing in:
    # graph.sibling_pairs)
    outputs: Dict[nn.Module, list] = {}
    clones: Dict[int, torch.Tensor] = {}
    alive: List[torch.Tensor] = []  # (ids stay unique while the originals live)

    def clone(v):
        if isinstance(v, torch.Tensor):
            c = clones.get(id(v))
            if c is None:
                alive.append(v)
                c = clones[id(v)] = v.detach().clone()
            return c
        if isinstance(v, (tuple, list)):
            return type(v)(clone(x) for x in v)
        return v

    def hook(mod, a, k):
        if mod not in records:
            records[mod] = (clone(tuple(a)), {n: clone(v) for n, v in k.items()})

    def out_hook(mod, a, out):  # (a module that returns something else than one tensor is not swapped whole)
        if not isinstance(out, torch.Tensor):
            not_tensor.setdefault(mod, type(out).__name__)

    # The children that stand in are the outermost modules of more than one conv the container's forward calls
    # below it (a timm features model's stages, efficientnet_pytorch's blocks in a ModuleList): each such module
    # is on a stack while it runs, and its output is kept when the module below it on the stack is a container
    # of conv and BN children that holds it.
    holders: Dict[nn.Module, set] = {}  # module of more than one conv -> the conv + BN containers holding it
    for c in probe.modules():
        if _conv_and_bn_children(c):
            for d in c.modules():
                if d is not c and _conv_count(d) > 1:
                    holders.setdefault(d, set()).add(c)
    stack: List[nn.Module] = []

    def push(mod, a):
        stack.append(mod)

    def pop(mod, a, out):  # (always called: a forward that catches an exception keeps the stack right)
        if stack and stack[-1] is mod:
            stack.pop()
        if mod not in holders:
            return
        seen = outputs.setdefault(mod, [None, 0])
        seen[1] += 1
        if seen[1] == 1 and stack and stack[-1] in holders[mod] and isinstance(out, torch.Tensor):
            seen[0] = out.detach().clone()

    handles = []
    for m in probe.modules():
        if 1 <= _conv_count(m) <= _MAX_CONVS or _conv_and_bn_children(m):
            handles += [m.register_forward_pre_hook(hook, with_kwargs=True), m.register_forward_hook(out_hook)]
        if m in holders or _conv_and_bn_children(m):
            handles += [m.register_forward_pre_hook(push), m.register_forward_hook(pop, always_call=True)]
    try:
        with torch.no_grad():
            probe(*args, **kwargs)
    except Exception as e:
        raise ValueError(f"fuse(): the model's forward pass on example_inputs failed ({type(e).__name__}: {e}); "
                         f"pass example_inputs= the arguments the model takes") from e
    finally:
        for h in handles:
            h.remove()
    return records, not_tensor, {m: out for m, (out, calls) in outputs.items() if calls == 1 and out is not None}


class _Swapper:
    def __init__(self, strict: bool, probe: nn.Module, records: Dict[nn.Module, Tuple[tuple, dict]],
                 not_tensor: Optional[Dict[nn.Module, str]] = None,
                 outputs: Optional[Dict[nn.Module, torch.Tensor]] = None):
        self.strict = strict
        self.probe = probe  # the hook-free copy the inputs were recorded on (the sources the swaps are proven on)
        self.records = records
        self.not_tensor = not_tensor or {}
        self.outputs = outputs or {}  # (_capture's: the outputs of the large children of pair containers)
        self.singles: list = []  # (parent, name, path, module, reason): modules of one conv read as nothing
        self.entries: List[FuseEntry] = []

    def swapped_any(self) -> bool:
        return any(e.swapped for e in self.entries)

    def note(self, path: str, module: nn.Module, swapped_to, reason: Optional[str] = None,
             output_of: Optional[str] = None) -> None:
        if swapped_to is None and self.strict:
            raise ValueError(f"fuse(strict=True): {path or '(model)'} ({_cls(module)}) was left: {reason}")
        self.entries.append(FuseEntry(path, _cls(module), swapped_to is not None,
                                      _describe(swapped_to) if swapped_to is not None else reason,
                                      path if output_of is None else output_of))

    def source(self, path: str) -> nn.Module:
        return self.probe.get_submodule(path) if path else self.probe

    def read(self, src: nn.Module, fresh: bool = False):
        """(parts, None) when src is recorded and its graph reads as a chain of parts, else
        (None, reason or None). A plain nn.Sequential is not read whole (its children are, so its indices
        stay)."""
        rec = self.records.get(src)
        if rec is None:
            return None, None
        if type(src) is nn.Sequential:  # (its children are read; a flat one's runs by FLAT_SEQUENTIALS)
            return None, None
        if _conv_count(src) > _MAX_CONVS:  # a container (recorded for its sibling pairs): its children are read
            return None, None
        if src in self.not_tensor:
            return None, f"it returns {self.not_tensor[src]}, not one tensor"
        args, kwargs = rec
        if not args or not isinstance(args[0], torch.Tensor) or args[0].dim() != 4 or any(
                isinstance(v, torch.Tensor) for v in list(args[1:]) + list(kwargs.values())):
            return None, "its input is not one (N, C, H, W) tensor"
        return self.read_call(src, args, kwargs, fresh)

    @staticmethod
    def read_call(src: nn.Module, args: tuple, kwargs: dict, fresh: bool = False):
        """(parts, None) when src's graph on (args, kwargs) reads as a chain of parts, else (None, the reason)."""
        parts = graph.read(src, args, kwargs, probe=((graph.probe_input(args[0]),) + tuple(args[1:]), kwargs),
                           fresh=fresh)
        return (None, parts) if isinstance(parts, str) else (parts, None)

    def unit_for(self, src: nn.Module, child: nn.Module, parts, rec=None, one_conv: bool = False):
        """(the fused module for ``parts``, None) when it is proven against src on its recorded call (``rec``, by
        default src's), else (None, the reason); ``one_conv``: only one ConvPart is wanted (a pair). A reading
        from a graph of the same structure (graph's cache, whose key leaves out floats such as a BN's eps) that
        fails its proof is read again from a fresh export."""
        args, kwargs = rec if rec is not None else self.records[src]
        for attempt in range(2):
            if one_conv and (len(parts) != 1 or not isinstance(parts[0], ConvPart)):
                return None, f"it reads as {' -> '.join(p.describe() for p in parts)}"
            unit = _units_for(parts, child)
            why = self.proven(unit, src, args, kwargs, sum(2 if p.kind == "block" else 1 for p in parts))
            if why is None or attempt:
                return (unit, None) if why is None else (None, why)
            fresh, _ = self.read_call(src, args, kwargs, fresh=True)
            if fresh is None:
                return None, why
            parts = fresh
        return None, why

    def proven(self, unit: nn.Module, source: nn.Module, args, kwargs, layers: int) -> Optional[str]:
        unit.to(device=args[0].device)
        if args[0].is_floating_point() and args[0].dtype != torch.float32 and args[0].device.type != "cpu":
            unit.to(dtype=args[0].dtype)
        return prove(unit, source, args, kwargs, layers=layers)

    def visit(self, module: nn.Module, prefix: str, quiet: bool = False) -> None:
        """Swap what reads and proves, outermost first; else descend. A module left is reported at the outermost
        level that was read (``quiet``: inside one already reported or about to be). A module of one conv and
        a BN that reads as nothing is reported at the end (self.report_singles) if it still holds its conv then
        (flat runs and sibling pairs may swap it)."""
        for name, child in list(module.named_children()):
            path = prefix + name
            src = self.source(path)
            parts, reason = self.read(src)
            hooked = _hooked_inside(child)
            if parts is not None and hooked is not None:
                parts, reason = None, (f"a hook is registered on its submodule {hooked} (a fused module has no "
                                       f"submodules to call it)")
            unproven = False
            if parts is not None:
                unit, why = self.unit_for(src, child, parts)
                if why is None:
                    _replace(module, name, unit, child)
                    self.note(path, child, unit)
                    continue
                reason, unproven = why, True
            before = len(self.entries)
            report = reason is not None and not quiet and _conv_count(child) >= 2
            if reason is not None and not quiet and _conv_count(child) == 1 and \
                    any(isinstance(m, nn.BatchNorm2d) for m in child.modules()):
                self.singles.append((module, name, path, child, reason))
            self.visit(child, path + ".", quiet or report)
            if type(child) is nn.Sequential and name in adapters.flat_sequentials(module):
                self.flat(child, path + ".")
            # (a module read whole whose proof failed is reported even when parts of it were swapped)
            if report and (unproven or not any(e.swapped for e in self.entries[before:])):
                self.note(path, child, None, reason)
            if type(child) is nn.Sequential and any(isinstance(c, (swapped.FusedUnit, swapped.FusedSequential))
                                                    for c in child):
                _replace(module, name, swapped.FusedSequential(OrderedDict(child._modules)), child)
        self.pairs(module, prefix, quiet)

    def report_singles(self) -> None:
        for module, name, path, child, reason in self.singles:
            if getattr(module, name, None) is child and _conv_count(child) == 1:
                self.note(path, child, None, reason)

    def flat(self, seq: nn.Sequential, prefix: str) -> None:
        """The conv + BN [+ act] runs of a flat nn.Sequential (_flat_runs), each read from its graph: the first
        module of a run becomes the fused one, the others nn.Identity (the Sequential keeps its indices)."""
        src_seq = self.source(prefix[:-1])
        for start, end in _flat_runs(seq):
            path = prefix + str(start)
            first = seq[start]
            run = [seq[i] for i in range(start, end)]
            # a pre-hook on the first module and a hook on the last one's output still see what they saw (they are
            # carried to the fused module and to the Identity in the last one's place); any other hook would not
            hooked = next((prefix + str(start + j) for j, m in enumerate(run)
                           if _has_hooks(m, pre=j > 0, post=j < len(run) - 1)), None)
            rec = self.records.get(src_seq[start])
            source = nn.Sequential(*[src_seq[i] for i in range(start, end)])
            if hooked is not None:
                parts, why = None, (f"a hook on {hooked} would see another module's output once the run is one "
                                    f"fused module")
            elif rec is None:
                parts, why = None, "not called in the sample forward pass"
            else:
                parts, why = self.read_call(source, *rec)
            if parts is not None and len(parts) != 1:
                parts, why = None, f"it reads as {len(parts)} layers"
            if parts is not None:
                unit, why = self.unit_for(source, first, parts, rec)
            if why is not None:
                self.note(path, first, None, why)
                continue
            unit.source = " + ".join(type(m).__name__ for m in run)
            _replace(seq, str(start), unit, first)
            for i in range(start + 1, end):
                _replace(seq, str(i), nn.Identity().eval(), seq[i])
            last = prefix + str(end - 1)
            self.note(path, first, unit, output_of=last)
            if end - start > 1:
                self.entries[-1].what += f" (with {prefix}{start + 1}..{end - 1}, now Identity)"

    def pairs(self, module: nn.Module, prefix: str, quiet: bool = False) -> None:
        """Conv + BatchNorm [+ act] siblings the container's forward calls back to back, found in its graph
        (graph.sibling_pairs; not for a block inside a module reported as left: ``quiet``), each read from the
        graph of the pair itself and proven."""
        src_parent = self.source(prefix[:-1])
        rec = self.records.get(src_parent)
        if rec is None or type(module) is nn.Sequential or not _conv_and_bn_children(module) or (
                quiet and _conv_count(src_parent) <= _MAX_CONVS):
            return
        stand_ins: Dict[str, torch.Tensor] = {}  # the outermost recorded modules below it, by path
        for name, d in src_parent.named_modules():
            if name and d in self.outputs and not any(name.startswith(p + ".") for p in stand_ins):
                stand_ins[name] = self.outputs[d]
        for names in graph.sibling_pairs(src_parent, *rec, stand_ins=stand_ins):
            conv_name, bn_name = names[0], names[1]
            act_name = names[2] if len(names) > 2 else None
            conv, bn = getattr(module, conv_name, None), getattr(module, bn_name, None)
            act = getattr(module, act_name, None) if act_name else None
            if conv is None or bn is None or isinstance(conv, swapped.FusedUnit) or (act_name and act is None):
                continue
            path = prefix + conv_name
            src_conv = getattr(src_parent, conv_name)
            chain = [src_conv, getattr(src_parent, bn_name)] + ([getattr(src_parent, act_name)] if act else [])
            rec_conv = self.records.get(src_conv)
            if _has_hooks(conv, post=True) or _has_hooks(bn, pre=True) or (
                    act is not None and (_has_hooks(bn, post=True) or _has_hooks(act, pre=True))):
                parts, why = None, (f"a hook on {conv_name}'s output or on {bn_name}'s input would see the "
                                    f"BatchNorm's output once the two are one fused module")
            elif rec_conv is None:
                parts, why = None, "not called in the sample forward pass"
            else:
                pair = nn.Sequential(*chain)
                parts, why = self.read_call(pair, *rec_conv)
                if parts is not None:
                    unit, why = self.unit_for(pair, conv, parts, rec_conv, one_conv=True)
            if why is not None:
                self.note(path, conv, None, f"with {bn_name}: {why}")
                continue
            unit.source = f"{type(conv).__name__} + {type(bn).__name__}"
            _replace(module, conv_name, unit, conv)
            _replace(module, bn_name, nn.Identity().eval(), bn)
            if act is not None:
                _replace(module, act_name, nn.Identity().eval(), act)
            self.note(path, conv, unit, output_of=prefix + (act_name or bn_name))
            self.entries[-1].what += (f" (with {bn_name} and {act_name}, now Identity)" if act is not None
                                      else f" (with {bn_name}, now an Identity)")


_FLAT_ACTS = (nn.ReLU, nn.ReLU6, nn.SiLU, nn.Hardswish)


def _flat_runs(seq: nn.Sequential) -> List[Tuple[int, int]]:
    """(first index, end index) of the runs of a flat nn.Sequential that may read as one fused layer: a
    depthwise conv, BN, act, 1x1 conv, BN (a separable block laid out flat, as MNASNet's) and a conv, BN [, an
    activation module]. What each computes is read from its graph."""
    kids = list(seq)
    out, i = [], 0
    while i < len(kids):
        m = kids[i]
        if not isinstance(m, nn.Conv2d) or i + 1 >= len(kids) or not isinstance(kids[i + 1], nn.BatchNorm2d):
            i += 1
            continue
        if m.groups > 1 and m.groups == m.in_channels == m.out_channels and i + 5 <= len(kids):
            end = i + 5
        else:
            end = i + 3 if i + 2 < len(kids) and isinstance(kids[i + 2], _FLAT_ACTS) else i + 2
        out.append((i, end))
        i = end
    return out


def _chain_containers(model: nn.Module, swapper: "_Swapper") -> None:
    """Containers whose forward runs their fused children in a row get the adapter that runs them as one chain
    (:mod:`effnet_kernels.adapters`)."""
    for path, m in model.named_modules():
        adapted = adapters.adapt(m)
        if adapted is not None:
            name = f"{type(m).__bases__[0].__module__}.{type(m).__bases__[0].__qualname__}"
            swapper.entries.append(FuseEntry(path, name, True, adapted, path))


def fuse(model: nn.Module, strict: bool = False, inplace: bool = False, example_inputs=None) -> nn.Module:
    """A fused copy of ``model``, same outputs (see the module docstring); the source is never modified.

    Every module that computes an MBConv block (or a cousin: another activation, no SE, a hardsigmoid SE), a
    conv + BN [+ act] layer, or a chain of them is replaced by a fused module, whatever library it comes from,
    after its swap is proven on the input it sees in one sample forward pass (``example_inputs``: a tensor, a
    tuple of arguments, or (args, kwargs); default one 1 x C x 224 x 224 image). Everything else (decoders,
    heads, custom layers, forward signatures, attribute paths, hooks) stays as it was; a module with a hook on
    one of its submodules is not swapped whole (the hook would never be called).

    ``ek.fuse_report(fused)`` lists what was swapped and what was left, and why. ``strict=True`` raises a
    ValueError on the first module left. A model with nothing to swap is a TypeError. ``model`` must be in eval
    mode. ``inplace`` is accepted for the usual signature: the source is never modified either way, and the
    result never shares storage with it. The result lives on the source's device and in its dtype. Each C++
    engine is built at its first call (which chains a model's forward runs is only known then), so the first
    forward pass packs the weights (milliseconds to a second). Weights written after fuse in a way no version
    counter sees (``.data`` in place, ``.numpy()``) need ``ek.refresh(fused)``."""
    if not isinstance(inplace, bool):
        raise TypeError(f"inplace must be a bool, got {type(inplace).__name__}")
    if not isinstance(strict, bool):
        raise TypeError(f"strict must be a bool, got {type(strict).__name__}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"fuse(): model must be an nn.Module, got {type(model).__name__}")
    if isinstance(model, swapped.FusedUnit) or getattr(model, "_effnet_fuse_report", None):
        raise TypeError(f"model must be an unfused model, got a {type(model).__name__} fuse() returned (it is "
                        f"already fused)")
    if model.training:
        raise ValueError("fuse() needs a model in eval mode (it folds the BatchNorm running statistics): call "
                         "model.eval() first")
    args, kwargs = _parse_example(example_inputs, model)
    params = list(model.parameters()) + list(model.buffers())
    device, dtype = (params[0].device, params[0].dtype) if params else (torch.device("cpu"), torch.float32)
    with torch.no_grad():
        probe = copy.deepcopy(model)
        _strip_hooks(probe)
        records, not_tensor, outputs = _capture(probe, args, kwargs)
        out = copy.deepcopy(model)
        swapper = _Swapper(strict, probe, records, not_tensor, outputs)
        parts, reason = swapper.read(probe)
        if parts is not None and not _hooked_inside(out):  # the model is one block / conv / chain of them
            unit, why = swapper.unit_for(probe, out, parts)
            if why is None:
                for d in _HOOK_DICTS:
                    if getattr(out, d, None):
                        getattr(unit, d).update(getattr(out, d))
                swapper.note("", out, unit)
                out = unit
            else:
                swapper.note("", out, None, why)
        else:
            swapper.visit(out, "")
            swapper.report_singles()
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
                        + "; it swaps MBConv blocks (expand, depthwise, SE, projection, residual), their cousins "
                          "and conv + BatchNorm layers, read from what each module computes")
    for m in out.modules():
        if isinstance(m, swapped.FusedUnit):
            m.to(device=device, dtype=dtype)
    _chain_containers(out, swapper)
    swapped.lock_loads(out)
    swapped.refresh(out)  # the engines the proofs built (one per module) go: the model's chains are built at first call
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    swapper.entries.sort(key=lambda e: order.get(e.path, len(order)))
    out._effnet_fuse_report = FuseReport(swapper.entries, "swapped modules")
    return out
