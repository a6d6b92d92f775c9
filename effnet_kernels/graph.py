"""Read what a module computes from its ``torch.export`` graph: the MBConv family as folded parts.

``read(module, args, kwargs)`` exports ``module`` at its real input (eval mode; the module is called on fake
tensors, so never pass a module that stays in a fused model) and walks the aten graph from the input to the
output as a chain of *parts* (:class:`~effnet_kernels.parts.ConvPart`,
:class:`~effnet_kernels.parts.BlockPart`), whatever the module's class is called:

* a block: [pad] → [expand 1×1 conv → BN → act] → [pad] → depthwise k×k conv → BN → act →
  [SE: mean → conv or linear → act → conv or linear → sigmoid | hardsigmoid → mul] → 1×1 conv → BN
  [→ + the block's input];
* a conv: [pad] → dense k×k conv → BN [→ act].

Activations: SiLU (``silu``, or ``x * sigmoid(x)``), ReLU, ReLU6 (``hardtanh(0, 6)``), Hardswish, none.
Eval no-ops (dropout with train=False, aliases, clones, metadata asserts) are skipped; in-place ops read as
their functional forms. Weights resolve through the export's graph signature to the module's own tensors and
are folded in float64. A graph that mutates its input or a buffer, a computed weight (a parametrization,
weight standardisation), a BatchNorm in training mode, or any op outside the patterns is refused: the result
is then a reason naming the first op that differs.

Pads in the graph are constants of the shape it was exported at. :func:`read` is given a second input (another
parity and batch, :func:`probe_input`), exported where the first graph pads asymmetrically or has a strided
layer: the same pads at both shapes are fixed pads, TensorFlow SAME at both is ``"same"``, anything else is
refused.
"""
from __future__ import annotations

import operator
import re
from typing import Dict, List, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from .padding import pad_amounts_unchecked
from .parts import BlockPart, ConvPart, Left, _Se, _block

__all__ = ["read", "probe_input", "Parts"]

Parts = List[Union[ConvPart, BlockPart]]

_A = torch.ops.aten
# ops that are the identity at inference (their first argument is their value)
_PASS = {_A.alias.default, _A.clone.default, _A.detach.default, _A.contiguous.default, _A.lift_fresh_copy.default}
_IGNORE = {_A._assert_scalar.default, _A._assert_tensor_metadata.default, _A.sym_constrain_range_for_size.default,
           _A.sym_size.int, operator.getitem}
_ACT_OPS = {
    _A.silu.default: "silu", _A.silu_.default: "silu",
    _A.relu.default: "relu", _A.relu_.default: "relu",
    _A.hardswish.default: "hardswish", _A.hardswish_.default: "hardswish",
}
_HARDTANH = {_A.hardtanh.default, _A.hardtanh_.default}
_SIGMOID = {_A.sigmoid.default, _A.sigmoid_.default}
_HARDSIGMOID = {_A.hardsigmoid.default, _A.hardsigmoid_.default}
_MUL = {_A.mul.Tensor, _A.mul_.Tensor}
_ADD = {_A.add.Tensor, _A.add_.Tensor}
_CONV = {_A.conv2d.default, _A.conv2d.padding, _A.convolution.default}
_BN = {_A.batch_norm.default}
_DROPOUT = {_A.dropout.default, _A.dropout_.default, _A.feature_dropout.default, _A.feature_dropout_.default}
# what a stored per-channel vector may go through to be a BatchNorm's scale or shift (FrozenBatchNorm2d's
# arithmetic form: w * (var + eps).rsqrt(), b - mean * scale, each reshaped to (1, C, 1, 1))
_CONST_UNARY = {_A.rsqrt.default: torch.rsqrt, _A.sqrt.default: torch.sqrt, _A.reciprocal.default: torch.reciprocal,
                _A.neg.default: torch.neg}
_CONST_BINARY = {_A.add.Tensor: torch.add, _A.add.Scalar: torch.add, _A.sub.Tensor: torch.sub,
                 _A.sub.Scalar: torch.sub, _A.mul.Tensor: torch.mul, _A.mul.Scalar: torch.mul,
                 _A.div.Tensor: torch.div, _A.div.Scalar: torch.div}
_SHAPE = {_A.view.default, _A.reshape.default, _A.flatten.using_ints, _A.squeeze.dims, _A.squeeze.dim,
          _A.unsqueeze.default, _A._unsafe_view.default}


class _Mismatch(Exception):
    pass


def _op_name(n) -> str:
    t = n.target
    return getattr(t, "__name__", str(t)) if n.op == "call_function" else n.op


class _Walker:
    def __init__(self, ep, module: nn.Module):
        self.gm = ep.graph_module
        sig = ep.graph_signature
        if sig.buffers_to_mutate or getattr(sig, "user_inputs_to_mutate", None):
            raise _Mismatch("it writes to its input or to a buffer")
        named = dict(module.named_parameters(remove_duplicate=False))
        named.update(dict(module.named_buffers(remove_duplicate=False)))
        self.tensors: Dict[str, torch.Tensor] = {}
        for spec in sig.input_specs:
            if spec.target is not None:
                t = named.get(spec.target)
                if t is None:
                    t = ep.constants.get(spec.target) if hasattr(ep, "constants") else None
                if t is None:
                    raise _Mismatch(f"its graph reads {spec.target}, which is not one of its tensors")
                self.tensors[spec.arg.name] = t
        self.inputs = [n for n in self.gm.graph.nodes if n.op == "placeholder" and n.name not in self.tensors]
        self.consumed = set()
        self.skipped = {}  # node -> the node whose value it is (identities)
        for n in self.gm.graph.nodes:
            if n.op != "call_function":
                continue
            if n.target in _PASS or (n.target in _DROPOUT and not _train_flag(n)):
                self.skipped[n] = n.args[0]
            elif n.target in _DROPOUT:
                raise _Mismatch(f"{_op_name(n)} in training mode")

    # ---- navigation (identities skipped) ----
    def value(self, n):
        while n in self.skipped:
            n = self.skipped[n]
        return n

    def users(self, n) -> list:
        out = []
        for u in n.users:
            if u.op == "call_function" and u.target in _IGNORE:
                continue
            if u in self.skipped:
                out += self.users(u)
            else:
                out.append(u)
        return out

    def only_user(self, n, what: str):
        us = self.users(n)
        if len(us) != 1:
            raise _Mismatch(f"{what} feeds {len(us)} ops ({', '.join(_op_name(u) for u in us) or 'none'}), "
                            f"one expected")
        return us[0]

    def tensor(self, n, what: str) -> Optional[torch.Tensor]:
        if n is None:
            return None
        n = self.value(n)
        if getattr(n, "op", None) != "placeholder" or n.name not in self.tensors:
            raise _Mismatch(f"{what} is computed ({_op_name(n) if hasattr(n, 'op') else n!r}), not a stored tensor")
        return self.tensors[n.name].detach()

    def take(self, n):
        self.consumed.add(n)
        return n

    # ---- pieces ----
    def pads(self, n, src):
        """Constant zero pads from n (a user of src) on: (the node after them, what feeds it, (top, bottom,
        left, right))."""
        total = [0, 0, 0, 0]
        while n.op == "call_function" and n.target in (_A.pad.default, _A.constant_pad_nd.default):
            if self.value(n.args[0]) is not src:
                raise _Mismatch("a pad reads another value")
            p = list(n.args[1])
            if n.target == _A.pad.default:
                mode = n.args[2] if len(n.args) > 2 else n.kwargs.get("mode", "constant")
                value = n.args[3] if len(n.args) > 3 else n.kwargs.get("value", None)
            else:
                mode, value = "constant", n.args[2] if len(n.args) > 2 else n.kwargs.get("value", 0.0)
            if mode != "constant" or (value or 0.0) != 0.0 or len(p) != 4 or min(p) < 0:
                raise _Mismatch(f"a pad {p} mode {mode!r} value {value!r} (zero padding of H and W expected)")
            total = [total[0] + p[2], total[1] + p[3], total[2] + p[0], total[3] + p[1]]
            src = self.take(n)
            n = self.only_user(n, "a pad")
        return n, src, tuple(total)

    def conv(self, n, src):
        """A conv node reading src: (weight, bias or None, stride, pad (t, b, l, r), groups)."""
        if n.op != "call_function" or n.target not in _CONV:
            raise _Mismatch(f"{_op_name(n)} where a convolution was expected")
        if self.value(n.args[0]) is not src:
            raise _Mismatch("a convolution reads another value")
        a = list(n.args) + [None] * 9
        if n.target == _A.convolution.default:
            w, b, stride, padding, dilation, transposed, _, groups = a[1:9]
            if transposed:
                raise _Mismatch("a transposed convolution")
        else:
            w, b = a[1], a[2]
            stride = a[3] if a[3] is not None else n.kwargs.get("stride", [1, 1])
            padding = a[4] if a[4] is not None else n.kwargs.get("padding", [0, 0])
            dilation = a[5] if a[5] is not None else n.kwargs.get("dilation", [1, 1])
            groups = a[6] if a[6] is not None else n.kwargs.get("groups", 1)
        weight = self.tensor(w, "a convolution's weight")
        bias = self.tensor(b, "a convolution's bias")
        if weight.dim() != 4:
            raise _Mismatch(f"a convolution with a {weight.dim()}-d weight")
        stride = list(stride) * (2 if len(stride) == 1 else 1)
        dilation = list(dilation) * (2 if len(dilation) == 1 else 1)
        if dilation != [1, 1]:
            raise _Mismatch(f"a dilated convolution {dilation}")
        if stride[0] != stride[1]:
            raise _Mismatch(f"a convolution with strides {stride}")
        kh, kw = weight.shape[-2:]
        if kh != kw:
            raise _Mismatch(f"a {kh}x{kw} convolution (square kernels only)")
        if isinstance(padding, str):
            if padding == "valid":
                pad = (0, 0, 0, 0)
            else:  # torch's "same" (stride 1): the extra pixel of an even total goes after
                t = kh - 1
                pad = (t // 2, t - t // 2, t // 2, t - t // 2)
        else:
            padding = list(padding) * (2 if len(padding) == 1 else 1)
            pad = (padding[0], padding[0], padding[1], padding[1])
        self.take(n)
        return weight, bias, int(stride[0]), pad, int(groups)

    def constant(self, n) -> Optional[torch.Tensor]:
        """n's value in float64 when the graph computes it from the module's stored tensors and numbers alone
        through reshapes and elementwise arithmetic (FrozenBatchNorm2d's scale and shift), its nodes taken; else
        None."""
        if isinstance(n, (int, float)) and not isinstance(n, bool):
            return torch.tensor(float(n), dtype=torch.float64)
        if not isinstance(n, torch.fx.Node):
            return None
        n = self.value(n)
        if n.op == "placeholder":
            t = self.tensors.get(n.name)
            return None if t is None else t.detach().double()
        if n.op != "call_function" or n.kwargs.get("alpha", 1) != 1:
            return None
        if n.target in _SHAPE or n.target in _CONST_UNARY:
            x = self.constant(n.args[0])
            if x is None:
                return None
            if n.target in _CONST_UNARY:
                out = _CONST_UNARY[n.target](x)
            elif n.target == _A.unsqueeze.default:
                out = x.unsqueeze(n.args[1])
            elif n.target in (_A.view.default, _A.reshape.default, _A._unsafe_view.default):
                out = x.reshape(list(n.args[1]))
            else:
                return None
        elif n.target in _CONST_BINARY:
            a, b = self.constant(n.args[0]), self.constant(n.args[1])
            if a is None or b is None:
                return None
            out = _CONST_BINARY[n.target](a, b)
        else:
            return None
        self.take(n)
        return out

    def _per_channel(self, t: Optional[torch.Tensor], channels: int) -> Optional[torch.Tensor]:
        if t is None or t.numel() != channels or t.dim() not in (3, 4) or (t.dim() == 4 and t.shape[0] != 1) \
                or tuple(t.shape[-2:]) != (1, 1):
            return None
        return t.flatten()

    def frozen_bn(self, n, src, channels: int):
        """x * scale + shift on src, scale and shift per-channel vectors computed from stored tensors (the
        arithmetic form of FrozenBatchNorm2d): (the add node, scale, shift) in float64, else None."""
        if n.target not in _MUL or len(n.args) != 2:
            return None
        a, b = n.args
        other = b if self.value(a) is src else a if self.value(b) is src else None
        saved = (set(self.consumed), dict(self.skipped))
        scale = self._per_channel(self.constant(other), channels) if other is not None else None
        add = self.users(n)
        if scale is not None and len(add) == 1 and add[0].target in (_ADD | {_A.sub.Tensor}) \
                and add[0].kwargs.get("alpha", 1) == 1 and len(add[0].args) == 2:
            x, y = add[0].args
            sign = 1.0
            if self.value(x) is n:
                other2 = y
                sign = -1.0 if add[0].target == _A.sub.Tensor else 1.0
            elif self.value(y) is n and add[0].target in _ADD:
                other2 = x
            else:
                other2 = None
            shift = self._per_channel(self.constant(other2), channels) if other2 is not None else None
            if shift is not None:
                self.take(n)
                return self.take(add[0]), scale, sign * shift
        self.consumed, self.skipped = saved
        return None

    def bn(self, n, src, channels: int):
        """A BatchNorm node reading src in eval mode: (scale, shift) in float64. Also FrozenBatchNorm2d's
        arithmetic form (self.frozen_bn)."""
        if n.op == "call_function" and n.target in _MUL:
            frozen = self.frozen_bn(n, src, channels)
            if frozen is not None:
                return frozen
        if n.op != "call_function" or n.target not in _BN:
            raise _Mismatch(f"{_op_name(n)} where a BatchNorm was expected")
        if self.value(n.args[0]) is not src:
            raise _Mismatch("a BatchNorm reads another value")
        if n.target == _A.batch_norm.default:
            _, w, b, mean, var, training, _, eps = n.args[:8]
        else:
            raise _Mismatch(f"{_op_name(n)} (the export's batch_norm expected)")
        if training:
            raise _Mismatch("a BatchNorm in training mode (batch statistics): call .eval()")
        mean, var = self.tensor(mean, "a BatchNorm's mean"), self.tensor(var, "a BatchNorm's variance")
        if mean is None or var is None:
            raise _Mismatch("a BatchNorm without running statistics")
        var, mean = var.double(), mean.double()
        gamma = self.tensor(w, "a BatchNorm's weight")
        beta = self.tensor(b, "a BatchNorm's bias")
        gamma = torch.ones_like(var) if gamma is None else gamma.double()
        beta = torch.zeros_like(var) if beta is None else beta.double()
        if var.numel() != channels:
            raise _Mismatch(f"a BatchNorm of {var.numel()} channels after a conv giving {channels}")
        scale = gamma / torch.sqrt(var + float(eps))
        self.take(n)
        return n, scale, beta - mean * scale

    def act(self, n) -> Tuple[object, str]:
        """The activation applied to n's value, if any: (its output node, name); (n, "identity") if none."""
        us = self.users(n)
        if len(us) == 1 and us[0].op == "call_function":
            u = us[0]
            if u.target in _ACT_OPS:
                return self.take(u), _ACT_OPS[u.target]
            if u.target in _HARDTANH:
                lo, hi = (list(u.args[1:3]) + [-1.0, 1.0])[:2]
                if (lo, hi) == (0.0, 6.0):
                    return self.take(u), "relu6"
                raise _Mismatch(f"hardtanh({lo}, {hi}), not one the fused kernels apply")
        if len(us) == 2:  # x * sigmoid(x): SiLU written out (efficientnet_pytorch's Swish)
            sig = [u for u in us if u.op == "call_function" and u.target in _SIGMOID]
            mul = [u for u in us if u.op == "call_function" and u.target in _MUL]
            if len(sig) == 1 and len(mul) == 1 and self.users(sig[0]) == mul[0:1] and \
                    {self.value(a) for a in mul[0].args[:2]} == {n, sig[0]}:
                self.take(sig[0])
                return self.take(mul[0]), "silu"
        return n, "identity"

    def conv_bn(self, src, n=None):
        """[pads] → conv → BN from n (src's single user unless given): (bn node, w fp64, b fp64, stride, pad,
        groups)."""
        n = self.only_user(src, "a layer's input") if n is None else n
        n, feed, extra = self.pads(n, src)
        w, b, stride, pad, groups = self.conv(n, feed)
        pad = tuple(p + e for p, e in zip(pad, extra))
        bn_node = self.only_user(n, "a convolution")
        out, scale, shift = self.bn(bn_node, n, w.shape[0])
        w = w.double() * scale.reshape(-1, 1, 1, 1)
        b = shift if b is None else b.double() * scale + shift
        return out, w, b, stride, pad, groups

    def se(self, d, cexp: int):
        """The SE on d (the depthwise output): (mul node, _Se), or None when d feeds the projection directly."""
        us = self.users(d)
        if len(us) == 1:
            return None
        if len(us) != 2:
            raise _Mismatch(f"the depthwise output feeds {len(us)} ops")
        pool = [u for u in us if u.target in (_A.mean.dim, _A.adaptive_avg_pool2d.default, _A._adaptive_avg_pool2d.default)]
        mul = [u for u in us if u.target in _MUL]
        if len(pool) != 1 or len(mul) != 1:
            raise _Mismatch(f"the depthwise output feeds {', '.join(_op_name(u) for u in us)}, not an SE")
        p, mul = pool[0], mul[0]
        if p.target == _A.mean.dim:
            dims = sorted(int(x) % 4 for x in p.args[1])
            if dims != [2, 3]:
                raise _Mismatch(f"a mean over dims {list(p.args[1])}")
        elif list(p.args[1]) != [1, 1]:
            raise _Mismatch(f"an adaptive pool to {list(p.args[1])}")
        self.take(p)
        x = self.shapes(p)
        rx, rw, rb = self.linear(x, "the SE's reduce")
        x, inner = self.act(rx)
        if inner == "identity":
            raise _Mismatch(f"{_op_name(self.only_user(rx, 'the SE reduce'))} after the SE's reduce, not an "
                            f"activation the fused kernels apply")
        ex, ew, eb = self.linear(x, "the SE's expand")
        g = self.only_user(ex, "the SE's expand")
        if g.target in _SIGMOID:
            gate = "sigmoid"
        elif g.target in _HARDSIGMOID:
            gate = "hardsigmoid"
        else:
            raise _Mismatch(f"{_op_name(g)} as the SE's gate, not a sigmoid or hardsigmoid")
        self.take(g)
        g = self.shapes(g)
        if self.only_user(g, "the SE's gate") is not mul or {self.value(a) for a in mul.args[:2]} != {d, g}:
            raise _Mismatch("the SE's gate does not scale the depthwise output")
        self.take(mul)
        if rw.shape[1] != cexp or ew.shape != (cexp, rw.shape[0]):
            raise _Mismatch(f"SE weights {tuple(rw.shape)}, {tuple(ew.shape)} for {cexp} channels")
        rb = torch.zeros(rw.shape[0], dtype=torch.float64) if rb is None else rb
        eb = torch.zeros(ew.shape[0], dtype=torch.float64) if eb is None else eb
        return mul, _Se((rw, rb, ew, eb), inner, gate)

    def shapes(self, n):
        """Skip view / reshape / flatten / (un)squeeze after n (the SE's vector between its layouts)."""
        while True:
            us = self.users(n)
            if len(us) == 1 and us[0].target in _SHAPE:
                n = self.take(us[0])
                continue
            return n

    def linear(self, x, what):
        """A 1x1 conv or a linear layer reading x: (node, weight (out, in) fp64, bias fp64 or None)."""
        n = self.only_user(x, what)
        if n.target == _A.linear.default:
            w = self.tensor(n.args[1], f"{what} weight")
            b = self.tensor(n.args[2] if len(n.args) > 2 else None, f"{what} bias")
            self.take(n)
        else:
            w, b, stride, pad, groups = self.conv(n, x)
            if w.shape[-1] != 1 or groups != 1 or stride != 1 or any(pad):
                raise _Mismatch(f"{what} is a {w.shape[-1]}x{w.shape[-1]} conv (stride {stride}, groups {groups}, "
                                f"pad {pad}), not 1x1")
            w = w.flatten(1)
        n = self.shapes(n)
        return n, w.double(), None if b is None else b.double()

    def residual(self, out, src):
        """The add of out and src (the part's input) that is out's only user, taken; else None."""
        us = self.users(out)
        if len(us) == 1 and us[0].target in _ADD and len(us[0].args) == 2 and us[0].kwargs.get("alpha", 1) == 1 \
                and {self.value(a) for a in us[0].args} == {out, src}:
            return self.take(us[0])
        return None

    # ---- parts ----
    def part(self, src, src_channels: int):
        """The part starting at src: (its output node, part). src may also feed the part's residual add."""
        us = self.users(src)
        layer = [u for u in us if u.target not in _ADD]
        if len(layer) != 1 or len(us) - len(layer) > 1:
            raise _Mismatch(f"a layer's input feeds {', '.join(_op_name(u) for u in us) or 'nothing'} (one layer "
                            f"[and a residual add] expected)")
        out, w, b, stride, pad, groups = self.conv_bn(src, layer[0])
        co, ci = w.shape[:2]
        k = w.shape[-1]
        if groups == 1 and ci == src_channels:
            after, act = self.act(out)
            if k == 1 and stride == 1 and pad == (0, 0, 0, 0) and act != "identity" \
                    and _is_depthwise_next(self, after, co):
                return self.block(src, src_channels, (w.flatten(1), b), act, after)
            # a fused-MBConv block: dense k×k conv → BN → act → [SE] → 1×1 → BN [+ input]; a residual around the
            # dense conv must be one, else a k×k conv + act followed by a linear 1×1 is read as one when it is
            if len(us) != 1 or (k > 1 and act != "identity"):
                saved = (set(self.consumed), dict(self.skipped))
                try:
                    return self.block(src, src_channels, None, None, None, dense=(out, w, b, stride, pad))
                except _Mismatch:
                    self.consumed, self.skipped = saved
                    if len(us) != 1:  # else a conv [+ act] with a residual (timm's ConvBnAct with a skip)
                        add = self.residual(after, src)
                        if add is None or stride != 1 or co != ci or (pad[0] + pad[1], pad[2] + pad[3]) != (k - 1,) * 2:
                            raise
                        return add, ConvPart(w, b, stride, pad, act, skip=True)
            return after, ConvPart(w, b, stride, pad, act)
        if groups == co == src_channels and ci == 1:
            return self.block(src, src_channels, None, None, None, first=(out, w, b, stride, pad))
        raise _Mismatch(f"a convolution with groups {groups}, {src_channels}->{co} channels (dense or depthwise "
                        f"expected)")

    def block(self, src, cin, expand, expand_act, after_expand, first=None, dense=None):
        """An MBConv block: from its expand (expand, expand_act, after_expand), from its depthwise conv (first:
        no expand) or from the dense k×k conv of a fused-MBConv block (dense)."""
        if dense is not None:
            out, w, b, stride, pad = dense
            cexp = w.shape[0]
        elif first is None:
            out, w, b, stride, pad, groups = self.conv_bn(after_expand)
            cexp = expand[0].shape[0]
            if not (groups == cexp == w.shape[0] and w.shape[1] == 1):
                raise _Mismatch(f"a convolution with groups {groups} after the expand (depthwise expected)")
        else:
            out, w, b, stride, pad = first
            cexp = w.shape[0]
        conv = "dense conv of a fused-MBConv block" if dense is not None else "depthwise conv"
        d, act = self.act(out)
        if act == "identity":
            nxt = self.users(out)
            raise _Mismatch(f"{_op_name(nxt[0]) if len(nxt) == 1 else 'no activation'} after the {conv}'s "
                            f"BatchNorm, not an activation the fused kernels apply (SiLU, ReLU, ReLU6, Hardswish)")
        if expand_act is not None and expand_act != act:
            raise _Mismatch(f"the expand's activation ({expand_act}) differs from the depthwise conv's ({act})")
        k = w.shape[-1]
        if k % 2 != 1 or k > 7:
            raise _Mismatch(f"a {k}x{k} {conv} (odd, <= 7 fused)")
        if stride not in (1, 2):
            raise _Mismatch(f"a {conv} of stride {stride} (1 or 2 fused)")
        if max(pad) >= k:
            raise _Mismatch(f"a {conv} padded by {pad}, not less than its kernel {k}")
        se = self.se(d, cexp)
        y = d if se is None else se[0]
        pout, pw, pb, pstride, ppad, pgroups = self.conv_bn(y)
        if pw.shape[-1] != 1 or pstride != 1 or ppad != (0, 0, 0, 0) or pgroups != 1:
            raise _Mismatch("the projection is not a 1x1 conv")
        if self.act(pout)[1] != "identity":
            raise _Mismatch("an activation after the projection (a linear bottleneck has none)")
        add = self.residual(pout, src)
        skip = add is not None
        pout = pout if add is None else add
        se_part = se[1] if se is not None else None
        if dense is not None:
            expand, dw = (w, b), None
        else:
            expand, dw = None if expand is None else (expand[0], expand[1]), (w, b)
        try:
            part = _block(expand, dw, stride, pad, se_part, (pw, pb), skip, act)
        except Left as e:
            raise _Mismatch(str(e)) from None
        return pout, part


def _is_depthwise_next(walker: _Walker, after, channels: int) -> bool:
    n = walker.only_user(after, "an activation")
    while n.target in (_A.pad.default, _A.constant_pad_nd.default):
        us = walker.users(n)
        if len(us) != 1:
            return False
        n = us[0]
    if n.target not in _CONV:
        return False
    w = walker.tensors.get(walker.value(n.args[1]).name)
    groups = n.args[6] if len(n.args) > 6 else n.kwargs.get("groups", 1)
    if n.target == _A.convolution.default:
        groups = n.args[8]
    return w is not None and w.shape[1] == 1 and groups == channels == w.shape[0]


def _train_flag(n) -> bool:
    return bool(n.args[2] if len(n.args) > 2 else n.kwargs.get("train", False))


def _export(module: nn.Module, args: tuple, kwargs: dict):
    with torch.no_grad():
        return torch.export.export(module, tuple(args), dict(kwargs or {}), strict=False)


# Export results by structure: a module of the same class, submodules (types, extra_repr, plain attributes),
# tensor names and shapes, called on inputs of the same shapes, is read from the graph exported for the first
# one, with its own tensors (the walker resolves them by name). Floating-point numbers are not part of the key:
# the blocks of a stage differ in their drop-path rates (an attribute or extra_repr), which eval mode ignores, so
# a stage's repeated blocks share one export. A hint only: fuse() proves every swap (a cached graph with another
# BN eps or scale fails it), and reads a module whose cached reading fails its proof again from a fresh export
# (read(..., fresh=True)).
_CACHE: Dict[tuple, object] = {}
_CACHE_SIZE = 256


class _Graph:
    __slots__ = ("graph_module", "graph_signature", "constants")

    def __init__(self, graph_module, graph_signature, constants):
        self.graph_module, self.graph_signature, self.constants = graph_module, graph_signature, constants


def _plain(v) -> bool:
    return v is None or isinstance(v, (bool, int, float, str)) or (
        isinstance(v, tuple) and all(isinstance(x, (bool, int, float, str)) for x in v))


_FLOAT = re.compile(r"(?<![\w.])[-+]?(\d+\.\d*|\.\d+|\d+)([eE][-+]?\d+)?(?![\w.])")


def _no_floats(text: str) -> str:
    """extra_repr with its floating-point numbers (those written with a point or an exponent) as "f"."""
    return _FLOAT.sub(lambda m: "f" if ("." in m.group(0) or m.group(2)) else m.group(0), text)


def _structure(module: nn.Module, args: tuple, kwargs: dict) -> Optional[tuple]:
    def value(a):
        if isinstance(a, torch.Tensor):
            return ("T", tuple(a.shape), a.dtype, a.device.type)
        return a if _plain(a) else None

    sig = [type(module), tuple(value(a) for a in args), tuple(sorted((k, value(v)) for k, v in kwargs.items()))]
    for name, m in module.named_modules():
        attrs = tuple(sorted((k, "f" if isinstance(v, float) else v) for k, v in vars(m).items()
                             if not k.startswith("_") and _plain(v)))
        sig.append((name, type(m), _no_floats(m.extra_repr()), attrs,
                    tuple((n, tuple(t.shape), t.dtype) for n, t in list(m._parameters.items())
                          + list(m._buffers.items()) if t is not None)))
    try:
        hash(tuple(sig))
    except TypeError:
        return None
    return tuple(sig)


def _cached_export(module: nn.Module, args: tuple, kwargs: dict, fresh: bool):
    key = None if fresh else _structure(module, args, kwargs)
    if key is not None and key in _CACHE:
        _CACHE[key] = _CACHE.pop(key)  # (the most recently used last: the oldest is dropped first)
        return _CACHE[key]
    try:
        full = _export(module, args, kwargs)
        # what the walker reads, without the exported program's references to this module's weights
        ep = _Graph(full.graph_module, full.graph_signature, dict(getattr(full, "constants", {}) or {}))
    except Exception as e:  # anything export cannot trace is left, with its reason
        ep = _Mismatch(f"torch.export failed ({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''})")
    if key is not None:
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = ep
    return ep


def _walk(module: nn.Module, args: tuple, kwargs: dict, fresh: bool = False) -> Parts:
    ep = _cached_export(module, args, kwargs, fresh)
    if isinstance(ep, _Mismatch):
        raise ep
    w = _Walker(ep, module)
    tensor_inputs = [n for n in w.inputs if isinstance(n.meta.get("val"), torch.Tensor)]
    if len(tensor_inputs) != 1:
        raise _Mismatch(f"{len(tensor_inputs)} tensor inputs (one image expected)")
    src = tensor_inputs[0]
    shape = src.meta["val"].shape
    if len(shape) != 4:
        raise _Mismatch(f"an input of {len(shape)} dimensions (N, C, H, W expected)")
    outs = [a for a in next(n for n in w.gm.graph.nodes if n.op == "output").args[0]]
    if len(outs) != 1:
        raise _Mismatch(f"{len(outs)} outputs (one expected)")
    end = w.value(outs[0])
    parts: Parts = []
    node, channels = src, int(shape[1])
    while node is not end:
        node, part = w.part(node, channels)
        parts.append(part)
        channels = part.weight.shape[0] if isinstance(part, ConvPart) else part.project[0].shape[0]
        if len(parts) > 64:
            raise _Mismatch("more than 64 layers in a row")
    left = [n for n in w.gm.graph.nodes if n.op == "call_function" and n not in w.consumed and n not in w.skipped
            and n.target not in _IGNORE]
    if left:
        raise _Mismatch(f"{_op_name(left[0])} is not part of a conv / MBConv chain")
    if not parts:
        raise _Mismatch("no convolution")
    return parts


class _StandIn(nn.Module):
    """A child of a container in the container's graph (sibling_pairs): the child's output in the sample forward
    pass, read from its inputs (the graph shows them read, as the child would). Exporting a model's stem pair
    with its blocks standing in costs ~0.1 s instead of seconds."""

    def __init__(self, out: torch.Tensor):
        super().__init__()
        self.register_buffer("out", out, persistent=False)

    def forward(self, *args, **kwargs):
        y = self.out.clone()
        for a in torch.utils._pytree.tree_leaves((args, kwargs)):  # (tensors in lists and dicts too)
            if isinstance(a, torch.Tensor) and a.is_floating_point():
                y = y + a.sum() * 0
        return y


def _with_stand_ins(module: nn.Module, stand_ins: Dict[str, torch.Tensor]) -> nn.Module:
    """A shallow copy of ``module`` whose submodules at the paths in ``stand_ins`` are _StandIn of their outputs
    (the modules on the way to them shallow copies too; the original is not changed)."""
    copy_ = nn.Module.__new__(type(module))
    copy_.__dict__ = dict(module.__dict__)
    copy_._modules = type(module._modules)(module._modules)
    below: Dict[str, Dict[str, torch.Tensor]] = {}
    for path, out in stand_ins.items():
        head, _, rest = path.partition(".")
        if rest:
            below.setdefault(head, {})[rest] = out
        else:
            copy_._modules[head] = _StandIn(out)
    for head, inner in below.items():
        if head not in stand_ins:
            copy_._modules[head] = _with_stand_ins(module._modules[head], inner)
    return copy_


def sibling_pairs(module: nn.Module, args: tuple, kwargs: Optional[dict] = None,
                  stand_ins: Optional[Dict[str, torch.Tensor]] = None) -> List[tuple]:
    """(conv, bn[, act]) names of children of ``module`` that its forward calls back to back, read from its graph
    at its real input: a conv child called once whose output only a BatchNorm child (called once) reads, and the
    activation child that alone reads the BN's output, when there is one (transformers' top_conv, top_bn,
    top_activation). ``stand_ins``: {path: its output on this call} of modules below it (a model's blocks or
    stages, called once) the graph may take as given (the graph is exported with each as a _StandIn; with the
    modules themselves if that fails). [] when the graph cannot be had."""
    ep = _Mismatch("")
    if stand_ins:
        ep = _cached_export(_with_stand_ins(module, stand_ins), args, kwargs or {}, fresh=False)
    if isinstance(ep, _Mismatch):
        ep = _cached_export(module, args, kwargs or {}, fresh=False)
    if isinstance(ep, _Mismatch):
        return []
    target = {s.arg.name: s.target for s in ep.graph_signature.input_specs if s.target is not None}

    def child(n) -> Optional[str]:  # the direct child whose tensor the placeholder n is
        t = target.get(n.name) if getattr(n, "op", None) == "placeholder" else None
        return t.split(".")[0] if t is not None and t.count(".") == 1 else None

    def users(n):
        return [u for u in n.users if not (u.op == "call_function" and u.target in _IGNORE)]

    nodes = [n for n in ep.graph_module.graph.nodes if n.op == "call_function"]

    def module_of(n) -> str:  # the innermost module whose call made n ("" for the container's own code)
        stack = list((n.meta.get("nn_module_stack") or {}).values())
        return stack[-1][0] if stack else ""

    ops_of: Dict[str, int] = {}
    for n in nodes:
        ops_of[module_of(n)] = ops_of.get(module_of(n), 0) + 1
    calls: Dict[Optional[str], int] = {}
    for n in nodes:
        if n.target in _CONV or n.target in _BN:
            name = child(n.args[1] if n.target in _CONV else n.args[3])  # (a BN's running mean: always there)
            calls[name] = calls.get(name, 0) + 1
    found = []
    for n in nodes:
        if n.target not in _CONV:
            continue
        conv = child(n.args[1])
        us = users(n)
        if conv is None or calls[conv] != 1 or len(us) != 1 or us[0].target not in _BN:
            continue
        bn = child(us[0].args[3])
        if bn is None or calls.get(bn) != 1 or bn == conv:
            continue
        act = None
        after = users(us[0])
        if len(after) == 1 and after[0].op == "call_function" and (after[0].target in _ACT_OPS
                                                                   or after[0].target in _HARDTANH):
            path = module_of(after[0])
            # (an activation module the forward also calls elsewhere cannot become an Identity: that one op only)
            if path and "." not in path and path not in (conv, bn) and ops_of.get(path) == 1:
                act = path
        found.append((conv, bn, act) if act else (conv, bn))
    return found


def _pads_of(parts: Parts):
    return [p.pad for p in parts]


def probe_input(x: torch.Tensor) -> torch.Tensor:
    """A second input for a module first seen on x (N, C, H, W): batch 3, H + 1, W + 1, values from x (another
    parity of every size; the same statistics)."""
    y = F.pad(x, (0, 1, 0, 1), mode="replicate") if x.shape[-1] > 0 and x.shape[-2] > 0 else x
    parts = [y, y.flip(-1), y.flip(-2) * 0.5]
    return torch.cat([parts[i % 3][:1] for i in range(3)] if y.shape[0] else parts, 0)


def _in_sizes(parts: Parts, h: int, w: int):
    sizes = []
    for p in parts:
        sizes.append((h, w))
        k = p.kernel
        if p.pad == "same":
            h, w = -(-h // p.stride), -(-w // p.stride)
        else:
            t, b, l_, r = p.pad
            h, w = (h + t + b - k) // p.stride + 1, (w + l_ + r - k) // p.stride + 1
    return sizes


def _same_pads(k: int, stride: int, h: int, w: int):
    top, bottom, _ = pad_amounts_unchecked(h, k, stride, "same")
    left, right, _ = pad_amounts_unchecked(w, k, stride, "same")
    return (top, bottom, left, right)


def read(module: nn.Module, args: tuple, kwargs: Optional[dict] = None,
         probe: Optional[Tuple[tuple, dict]] = None, fresh: bool = False) -> Union[Parts, str]:
    """The chain of parts ``module`` computes on ``args`` / ``kwargs`` (its real input), or the reason it is not
    one. ``probe``: the same call at another shape (:func:`probe_input`), exported when the first graph's pads
    may depend on the input's size, to tell fixed pads from TensorFlow SAME. ``fresh``: export again rather than
    use the graph of a module of the same structure."""
    kwargs = kwargs or {}
    try:  # (exported as it is: a submodule left in training mode shows as one, and is refused)
        parts = _walk(module, args, kwargs, fresh)
        x = next(a for a in list(args) + list(kwargs.values()) if isinstance(a, torch.Tensor))
        # pads that may depend on the input's size: asymmetric ones, and any of a strided layer (TF SAME pads a
        # stride-2 layer symmetrically at an odd size, asymmetrically at an even one)
        ambiguous = [p for p in parts if p.pad[0] != p.pad[1] or p.pad[2] != p.pad[3] or p.stride > 1]
        if ambiguous:
            if probe is None:
                raise _Mismatch("its padding may depend on the input's size and no second input shape was given "
                                "to tell fixed pads from TensorFlow SAME")
            try:
                parts2 = _walk(module, *probe, fresh=fresh)
            except _Mismatch as e:
                raise _Mismatch(f"at a second input shape: {e}") from None
            x2 = next(a for a in list(probe[0]) + list(probe[1].values()) if isinstance(a, torch.Tensor))
            if len(parts2) != len(parts) or any(a.describe() != b.describe() for a, b in zip(parts, parts2)):
                raise _Mismatch("its graph at a second input shape is another chain")
            s1 = _in_sizes(parts, x.shape[-2], x.shape[-1])
            s2 = _in_sizes(parts2, x2.shape[-2], x2.shape[-1])
            for i, (a, b) in enumerate(zip(parts, parts2)):
                if a.pad == b.pad:
                    continue
                k = a.kernel
                if a.pad == _same_pads(k, a.stride, *s1[i]) and b.pad == _same_pads(k, b.stride, *s2[i]):
                    a.pad = "same"
                else:
                    raise _Mismatch(f"layer {i} pads {a.pad} at one input size and {b.pad} at another: neither "
                                    f"fixed nor TensorFlow SAME")
        return parts
    except _Mismatch as e:
        return str(e)
