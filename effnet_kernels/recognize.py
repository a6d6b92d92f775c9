"""The parts ``fuse()`` swaps in, and the class-based reading it falls back on.

``fuse()`` reads a module by what it computes (:mod:`effnet_kernels.graph`, its ``torch.export`` graph). This
module holds the parts that reading produces and two things the graph does not give: the extractors by
**exact class** (``type(m) is C``) used for a module ``torch.export`` cannot trace, and the conv + BN siblings
of known containers (:data:`PAIR_CONTAINERS`) and flat runs (:data:`FLAT_SEQUENTIALS`), which live in their
parent's forward. Whatever reads a module, the swap is proven against it (:mod:`effnet_kernels.proof`). A part,
its BatchNorms folded into the convolutions in float64:

* :class:`ConvPart` — a dense k×k conv + BatchNorm (+ an activation): a stem, a head;
* :class:`BlockPart` — an MBConv block and its cousins: [expand 1×1 + BN + act] → depthwise k×k + BN + act →
  [squeeze-excitation (reduce, inner act, expand, gate)] → projection 1×1 + BN [+ the input].

The activations the kernels apply (:data:`effnet_kernels.reference.ACTS`): SiLU (EfficientNet), ReLU
(MNASNet, MobileNetV3), ReLU6 (MobileNetV2, EfficientNet-Lite), Hardswish (MobileNetV3), none; SE gates
sigmoid and hardsigmoid (MobileNetV3's, with ReLU inside). A module that looks like one of these but computes
something the kernels do not (another activation such as GELU, expand and depthwise activations that differ,
a grouped conv, a BatchNorm in training mode, dilation, ...) is *left*, with the reason. The classes
recognised out of the box (see :data:`REGISTRY`):

========================  ===================================================================
this package              ``models.MBConv``, ``models.ConvBNAct`` (stem, head)
torchvision               ``MBConv``, ``Conv2dNormActivation`` (stem, head), MobileNetV2's and MobileNetV3's
                          ``InvertedResidual``, MNASNet's ``_InvertedResidual`` (and the flat stem, first
                          separable block and head in ``MNASNet.layers``)
timm                      ``_efficientnet_blocks.InvertedResidual`` / ``DepthwiseSeparableConv`` /
                          ``ConvBnAct`` (with ``SqueezeExcite``, ``BatchNormAct2d``, ``Conv2dSame``)
efficientnet_pytorch      ``MBConvBlock`` (``Conv2dStaticSamePadding`` / ``Conv2dDynamicSamePadding``,
                          ``Swish`` / ``MemoryEfficientSwish``)
========================  ===================================================================

plus, inside the EfficientNet containers whose forward is known to call them back to back (timm's
``EfficientNet`` / ``EfficientNetFeatures`` / ``MobileNetV3`` / ``MobileNetV3Features`` / flattened feature
wrappers, efficientnet_pytorch's ``EfficientNet``), a stem or head conv followed by its BatchNorm (timm's ``conv_stem`` + ``bn1``, ``conv_head`` + ``bn2``;
efficientnet_pytorch's ``_conv_stem`` + ``_bn0``, ``_conv_head`` + ``_bn1``).

A library that vendors a copy of one of these blocks under its own class name registers it:
``register_block(MyInvertedResidual, like=timm.models._efficientnet_blocks.InvertedResidual)`` reads it as
the original; ``register_block(MyBlock, extract=fn)`` with ``fn(module) -> BlockPart | ConvPart`` (raising
:class:`Left` with a reason for an instance it cannot take) adds a new one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple, Union

import torch
import torch.nn as nn

__all__ = ["ConvPart", "BlockPart", "Left", "register_block", "registered", "recognize", "REGISTRY",
           "PAIR_CONTAINERS"]

# A layer's padding: "same" (TensorFlow SAME from each input's size) or explicit (top, bottom, left, right).
Pad = Union[str, Tuple[int, int, int, int]]


class Left(Exception):
    """Raised by an extractor for a module it recognises by class but cannot fuse; the message is the reason
    ``fuse_report`` gives."""


_ACT_LABELS = {"silu": "SiLU", "relu": "ReLU", "relu6": "ReLU6", "hardswish": "Hardswish", "identity": ""}


def act_label(act: str) -> str:
    """" +ReLU6" for a description ("" for identity)."""
    return f" +{_ACT_LABELS[act]}" if _ACT_LABELS.get(act) else ""


@dataclass
class ConvPart:
    """A dense conv with BN folded (float64): weight (cout, cin, k, k), bias (cout,), then ``act`` (a name of
    :data:`effnet_kernels.reference.ACTS`; "identity": none); ``skip``: then adds its input (stride 1, the same
    channels and size: timm's ConvBnAct with a skip, EfficientNetV2's first stage)."""
    weight: torch.Tensor
    bias: torch.Tensor
    stride: int
    pad: Pad
    act: str
    kind: str = "conv"
    skip: bool = False

    @property
    def kernel(self) -> int:
        return self.weight.shape[-1]

    def describe(self) -> str:
        co, ci, k, _ = self.weight.shape
        return f"conv {k}x{k}/{self.stride} {ci}->{co}" + act_label(self.act) + (" +skip" if self.skip else "")


@dataclass
class BlockPart:
    """An MBConv block with every BN folded (float64). expand: (cexp, cin) weight + bias, or None;
    dw (cexp, 1, k, k) + bias; se: reduce (squeeze, cexp), expand (cexp, squeeze) with biases, or None (no
    SE); project (cout, cexp) + bias; ``skip``: the block adds its input. ``act``: after the expand and the
    depthwise conv; ``se_inner`` / ``se_gate``: the SE's activation between its convs and its gate.
    A fused-MBConv block (EfficientNetV2's early stages) has ``dw`` None and a dense k×k expand, weight
    (cexp, cin, k, k), of ``stride`` and ``pad``; the SE and the projection read its output."""
    expand: Optional[Tuple[torch.Tensor, torch.Tensor]]
    dw: Optional[Tuple[torch.Tensor, torch.Tensor]]
    stride: int
    pad: Pad
    se: Optional[Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]
    project: Tuple[torch.Tensor, torch.Tensor]
    skip: bool
    act: str = "silu"
    se_inner: str = "silu"
    se_gate: str = "sigmoid"
    kind: str = "block"

    @property
    def dense(self) -> bool:
        return self.dw is None

    @property
    def kernel(self) -> int:
        return (self.expand if self.dense else self.dw)[0].shape[-1]

    def describe(self) -> str:
        cexp, k = self.project[0].shape[1], self.kernel
        cin = self.expand[0].shape[1] if self.expand is not None else cexp
        se = "" if self.se is None else (" SE" if (self.se_inner, self.se_gate) == ("silu", "sigmoid") else
                                         f" SE({self.se_inner}/{self.se_gate})")
        return (("FusedMBConv" if self.dense else "MBConv") + f" k{k}/{self.stride} {cin}->{cexp}->"
                f"{self.project[0].shape[0]}" + act_label(self.act)
                + (se if self.se is not None else " no SE") + (" +skip" if self.skip else ""))


Part = Union[ConvPart, BlockPart]
Extractor = Callable[[nn.Module], Part]

# exact class -> extractor
REGISTRY: Dict[type, Extractor] = {}


def register_block(cls: type, extract: Optional[Extractor] = None, like: Optional[type] = None) -> None:
    """Recognise modules of exactly ``cls``: read as the registered class ``like`` (a vendored copy with the
    same attributes), or by ``extract(module) -> BlockPart | ConvPart`` (raise :class:`Left` to leave one)."""
    if not isinstance(cls, type) or not issubclass(cls, nn.Module):
        raise TypeError(f"cls must be an nn.Module subclass, got {cls!r}")
    if (extract is None) == (like is None):
        raise ValueError("register_block needs exactly one of extract= (a function) and like= (a registered class)")
    if like is not None:
        _load_library_extractors()
        if like not in REGISTRY:
            raise ValueError(f"like must be a registered class, got {like!r}; registered: "
                             f"{', '.join(_qualname(c) for c in REGISTRY)}")
        extract = REGISTRY[like]
    if not callable(extract):
        raise TypeError(f"extract must be callable, got {type(extract).__name__}")
    REGISTRY[cls] = extract


def registered() -> List[str]:
    """The classes recognised (qualified names)."""
    _load_library_extractors()
    return [_qualname(c) for c in REGISTRY]


def _qualname(c: type) -> str:
    return f"{c.__module__}.{c.__qualname__}"


def recognize(module: nn.Module) -> Union[Part, str, None]:
    """The part ``module`` fuses into; a reason (str) when its class is known but this instance cannot be
    fused; None when its class is not recognised."""
    _load_library_extractors()
    fn = REGISTRY.get(type(module))
    if fn is None:
        return None
    try:
        return fn(module)
    except Left as e:
        return str(e)
    except (AttributeError, TypeError, ValueError, IndexError) as e:  # a version of the library laid out otherwise
        return f"could not read it as {type(module).__name__} ({type(e).__name__}: {e})"


# ---- checks shared by the extractors ----------------------------------------------------------------------

def _name(m) -> str:
    return type(m).__name__


def _is_silu(m: nn.Module) -> bool:
    return type(m) in _SILU_TYPES


def act_of(m: Optional[nn.Module]) -> Optional[str]:
    """The kernels' name for activation module m (None / an identity: "identity"), or None when they have none."""
    if m is None:
        return "identity"
    t = type(m)
    for name, types in (("silu", _SILU_TYPES), ("relu", _RELU_TYPES), ("relu6", _RELU6_TYPES),
                        ("hardswish", _HARDSWISH_TYPES)):
        if t in types:
            return name
    if t in _IDENTITY_TYPES or (t in _EVAL_IDENTITY_TYPES and not m.training):
        return "identity"
    return None


def _act(m: Optional[nn.Module], where: str) -> str:
    """act_of(m), or Left naming what the kernels apply."""
    a = act_of(m)
    if a is None:
        raise Left(f"{where} activation is {_name(m)}, not one the fused kernels apply (SiLU, ReLU, ReLU6, "
                   f"Hardswish, none)")
    return a


def _gate(m: Optional[nn.Module], where: str) -> str:
    if m is None or type(m) in _SIGMOID_TYPES:
        return "sigmoid"
    if type(m) in _HARDSIGMOID_TYPES:
        return "hardsigmoid"
    raise Left(f"{where} gate is {_name(m)}, not a sigmoid or hardsigmoid")


def _same_act(a: str, b: str, where: str) -> str:
    if a != b:
        raise Left(f"{where}: the expand conv's activation ({a}) differs from the depthwise conv's ({b}); the "
                   f"fused block applies one")
    return a


def _require_identity(m: Optional[nn.Module], where: str) -> None:
    """m is an identity: nn.Identity, or a dropout / drop-path / stochastic depth in eval mode."""
    if m is None or type(m) in _IDENTITY_TYPES:
        return
    if type(m) in _EVAL_IDENTITY_TYPES:
        if m.training:
            raise Left(f"{where} ({_name(m)}) is in training mode")
        return
    raise Left(f"{where} is {_name(m)}, not an identity at inference")


def _conv_pad(conv: nn.Module, k: int) -> Pad:
    """The padding a recognised conv applies (dynamic SAME or explicit amounts)."""
    if type(conv) in _DYNAMIC_SAME_CONVS:
        if tuple(conv.padding) != (0, 0):
            raise Left(f"{_name(conv)} with extra padding {conv.padding}")
        return "same"
    if isinstance(conv.padding, str):
        if conv.padding == "valid":
            base = (0, 0, 0, 0)
        else:  # torch's padding="same" (stride 1): the extra pixel of an even total goes after
            total = k - 1
            base = (total // 2, total - total // 2) * 2
    else:
        ph, pw = conv.padding
        base = (ph, ph, pw, pw)
    static = getattr(conv, "static_padding", None)
    if static is not None and type(static) is not nn.Identity:  # efficientnet_pytorch's Conv2dStaticSamePadding
        if type(static) is not nn.ZeroPad2d:
            raise Left(f"{_name(conv)}.static_padding is {_name(static)}")
        left, right, top, bottom = static.padding
        base = (base[0] + top, base[1] + bottom, base[2] + left, base[3] + right)
    return base


def _conv(conv: nn.Module, where: str, *, depthwise: bool = False, pointwise: bool = False):
    """(weight fp64, bias fp64 or None, stride, pad) of a recognised conv, checked."""
    if type(conv) not in _CONV_TYPES:
        raise Left(f"{where} is {_name(conv)}, not a plain convolution")
    w = conv.weight
    co, ci_g, kh, kw = w.shape
    if kh != kw:
        raise Left(f"{where} has a {kh}x{kw} kernel (square only)")
    if tuple(conv.dilation) != (1, 1):
        raise Left(f"{where} is dilated {tuple(conv.dilation)}")
    if conv.padding_mode != "zeros":
        raise Left(f"{where} pads with {conv.padding_mode!r}, not zeros")
    sh, sw = conv.stride
    if sh != sw:
        raise Left(f"{where} has stride {conv.stride} (equal strides only)")
    if depthwise:
        if not (conv.groups == co == conv.in_channels and ci_g == 1):
            raise Left(f"{where} is not depthwise (groups {conv.groups}, {conv.in_channels}->{co} channels)")
        if kh % 2 != 1 or kh > 7:
            raise Left(f"{where} has kernel {kh} (odd, <= 7 fused)")
        if sh not in (1, 2):
            raise Left(f"{where} has stride {sh} (1 or 2 fused)")
    elif conv.groups != 1:
        raise Left(f"{where} is a grouped conv (groups {conv.groups})")
    if pointwise and (kh != 1 or sh != 1):
        raise Left(f"{where} is {kh}x{kh} stride {sh}, not a 1x1 stride-1 conv")
    pad = _conv_pad(conv, kh)
    if depthwise and pad != "same" and max(pad) >= kh:
        raise Left(f"{where} pads by {pad}, not less than its kernel {kh} (fused depthwise kernels need pad < k)")
    if pointwise and pad != (0, 0, 0, 0) and pad != "same":
        raise Left(f"{where} pads a 1x1 conv by {pad}")
    b = conv.bias.detach().double() if conv.bias is not None else None
    return w.detach().double(), b, int(sh), pad


def _bn(bn: nn.Module, where: str):
    """(scale, shift, act module or None) of an inference BatchNorm (timm's BatchNormAct2d carries its act)."""
    if type(bn) not in _BN_TYPES:
        raise Left(f"{where} is {_name(bn)}, not a BatchNorm2d")
    if bn.training:
        raise Left(f"{where} is in training mode (batch statistics, nothing to fold): call .eval()")
    if not bn.track_running_stats or bn.running_mean is None or bn.running_var is None:
        raise Left(f"{where} keeps no running statistics")
    var, mean = bn.running_var.detach().double(), bn.running_mean.detach().double()
    gamma = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(var)
    scale = gamma / torch.sqrt(var + bn.eps)
    act = None
    if hasattr(bn, "act"):  # timm BatchNormAct2d
        _require_identity(getattr(bn, "drop", None), f"{where}.drop")
        act = bn.act
    return scale, beta - mean * scale, act


def _fold(conv_w, conv_b, scale, shift):
    w = conv_w * scale.reshape(-1, *([1] * (conv_w.dim() - 1)))
    b = shift if conv_b is None else conv_b * scale + shift
    return w, b


def _conv_bn_act(conv, bn, where_conv, where_bn, *, act: Optional[nn.Module] = None, depthwise=False,
                 pointwise=False):
    """Fold conv + BN: (weight, bias, stride, pad, activation name) — the activation ``act``, or the BN's own
    (timm's BatchNormAct2d), "identity" when there is none."""
    w, b, stride, pad = _conv(conv, where_conv, depthwise=depthwise, pointwise=pointwise)
    if bn.num_features != w.shape[0]:
        raise Left(f"{where_bn} has {bn.num_features} channels, {where_conv} gives {w.shape[0]}")
    scale, shift, bn_act = _bn(bn, where_bn)
    if act is not None and bn_act is not None and act_of(bn_act) != "identity":
        raise Left(f"{where_bn} applies {_name(bn_act)} and {_name(act)} follows it")
    a = _act(act if act is not None else bn_act, where_bn)
    w, b = _fold(w, b, scale, shift)
    return w, b, stride, pad, a


def _conv_bn(conv, bn, where_conv, where_bn, *, act: Optional[nn.Module] = None, want_act: bool,
             depthwise=False, pointwise=False):
    """Fold conv + BN: (weight, bias, stride, pad, activation name); with want_act an activation must follow
    (one the kernels apply), without it none (a projection)."""
    w, b, stride, pad, a = _conv_bn_act(conv, bn, where_conv, where_bn, act=act, depthwise=depthwise,
                                        pointwise=pointwise)
    if want_act and a == "identity":
        raise Left(f"{where_bn} has no activation after it")
    if not want_act and a != "identity":
        raise Left(f"{where_bn} activation is {a}, not an identity (a projection has none)")
    return w, b, stride, pad, a


@dataclass
class _Se:
    weights: Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
    inner: str
    gate: str


def _se(reduce_conv, expand_conv, act, gate, where: str) -> _Se:
    """An SE: reduce 1x1 (bias) -> act -> expand 1x1 (bias) -> gate, its weights as matrices. The reduce
    conv reads the block's expanded channels whatever its own rounding of the squeeze width (EfficientNet's
    from the block's input, MobileNetV3's from the expanded channels): the shapes say it."""
    rw, rb, _, _ = _conv(reduce_conv, f"{where} reduce", pointwise=True)
    ew, eb, _, _ = _conv(expand_conv, f"{where} expand", pointwise=True)
    if rb is None or eb is None:
        raise Left(f"{where} convs have no bias")
    inner = _act(act, f"{where}")
    g = _gate(gate, where)
    if ew.shape[1] != rw.shape[0] or ew.shape[0] != rw.shape[1]:
        raise Left(f"{where} shapes do not chain ({tuple(rw.shape)}, {tuple(ew.shape)})")
    return _Se((rw.flatten(1), rb, ew.flatten(1), eb), inner, g)


def _block(expand, dw, stride, pad, se: Optional[_Se], project, skip, act: str = "silu") -> BlockPart:
    """dw None: a fused-MBConv block (expand: the dense k×k conv, kept 4-D)."""
    if dw is None and (expand is None or expand[0].dim() != 4):
        raise Left("a fused-MBConv block needs its dense k×k expand conv")
    cexp = (dw if dw is not None else expand)[0].shape[0]
    cin = expand[0].shape[1] if expand is not None else cexp
    if expand is not None and expand[0].shape[0] != cexp:
        raise Left(f"expand gives {expand[0].shape[0]} channels, the depthwise conv takes {cexp}")
    if se is not None and se.weights[0].shape[1] != cexp:
        raise Left(f"SE takes {se.weights[0].shape[1]} channels, the depthwise conv gives {cexp}")
    if project[0].shape[1] != cexp:
        raise Left(f"projection takes {project[0].shape[1]} channels, the depthwise conv gives {cexp}")
    if skip and (stride != 1 or cin != project[0].shape[0]):
        raise Left("a residual with stride or channel change")
    if dw is not None and expand is not None:
        expand = (expand[0].flatten(1), expand[1])
    return BlockPart(expand, dw, stride, pad,
                     se.weights if se is not None else None, (project[0].flatten(1), project[1]), bool(skip), act,
                     se.inner if se is not None else "silu", se.gate if se is not None else "sigmoid")


# ---- this package ---------------------------------------------------------------------------------------

def _ours_convbnact(m) -> ConvPart:
    w, b, stride, pad, act = _conv_bn_act(m.conv, m.bn, "conv", "bn", act=m.act)
    if m.dynamic_pad:
        pad = "same"
    if m.conv.groups != 1:
        raise Left("a grouped ConvBNAct (a depthwise conv is fused inside its MBConv)")
    return ConvPart(w, b, stride, pad, act)


def _ours_mbconv(m) -> BlockPart:
    if m.training and m.drop_prob:
        raise Left("stochastic depth in training mode: call .eval()")
    expand, ea = None, None
    if m.expand is not None:
        w, b, _, _, ea = _conv_bn(m.expand.conv, m.expand.bn, "expand.conv", "expand.bn", act=m.expand.act,
                                  want_act=True, pointwise=True)
        expand = (w, b)
    w, b, stride, pad, act = _conv_bn(m.dw.conv, m.dw.bn, "dw.conv", "dw.bn", act=m.dw.act, want_act=True,
                                      depthwise=True)
    if ea is not None:
        _same_act(ea, act, "expand")
    if m.dw.dynamic_pad:
        pad = "same"
    se = _se(m.se.reduce, m.se.expand, nn.SiLU(), None, "se")
    pw, pb, _, _, _ = _conv_bn(m.project.conv, m.project.bn, "project.conv", "project.bn", act=m.project.act,
                               want_act=False, pointwise=True)
    return _block(expand, (w, b), stride, pad, se, (pw, pb), m.has_skip, act)


# ---- torchvision ----------------------------------------------------------------------------------------

def _tv_cna(m, where: str, want_act: bool, **kw):
    """torchvision Conv2dNormActivation: Sequential(conv, BN[, act]) -> (w, b, stride, pad, act name)."""
    if type(m) is not _TV_CNA:
        raise Left(f"{where} is {_name(m)}, not a Conv2dNormActivation")
    kids = list(m)
    if len(kids) not in (2, 3):
        raise Left(f"{where} has {len(kids)} layers (conv, BN, act expected)")
    act = kids[2] if len(kids) == 3 else nn.Identity()
    return _conv_bn(kids[0], kids[1], f"{where}.0", f"{where}.1", act=act, want_act=want_act, **kw)


def _tv_conv_norm_act(m) -> ConvPart:
    kids = list(m)
    if type(m) is not _TV_CNA or len(kids) not in (2, 3):
        raise Left(f"has {len(kids)} layers (conv, BN, act expected)")
    act = kids[2] if len(kids) == 3 else nn.Identity()
    w, b, stride, pad, a = _conv_bn_act(kids[0], kids[1], "0", "1", act=act)
    return ConvPart(w, b, stride, pad, a)


def _tv_expand_dw(layers, where: str, has_expand: bool):
    """torchvision's [expand CNA,] depthwise CNA at the head of a block's layers: (expand or None, (w, b), stride,
    pad, act, index of the layer after the depthwise one)."""
    expand, ea, j = None, None, 0
    if has_expand:
        w, b, _, _, ea = _tv_cna(layers[0], f"{where}.0", True, pointwise=True)
        expand, j = (w, b), 1
    w, b, stride, pad, act = _tv_cna(layers[j], f"{where}.{j}", True, depthwise=True)
    if ea is not None:
        _same_act(ea, act, f"{where}.0")
    return expand, (w, b), stride, pad, act, j + 1


def _tv_mbconv(m) -> BlockPart:
    _require_identity(m.stochastic_depth, "stochastic_depth")
    layers = list(m.block)
    if len(layers) not in (3, 4):
        raise Left(f"block has {len(layers)} layers (3 or 4 expected)")
    expand, (w, b), stride, pad, act, j = _tv_expand_dw(layers, "block", len(layers) == 4)
    j -= 1
    se_m = layers[j + 1]
    if type(se_m) is not _TV_SE:
        raise Left(f"block.{j + 1} is {_name(se_m)}, not a SqueezeExcitation")
    se = _se(se_m.fc1, se_m.fc2, se_m.activation, se_m.scale_activation, f"block.{j + 1}")
    pw, pb, _, _, _ = _tv_cna(layers[j + 2], f"block.{j + 2}", False, pointwise=True)
    return _block(expand, (w, b), stride, pad, se, (pw, pb), m.use_res_connect, act)


def _tv_mobilenet_v3_block(m) -> BlockPart:
    """torchvision MobileNetV3's InvertedResidual: [expand CNA] -> depthwise CNA -> [SE] -> projection CNA."""
    layers = list(m.block)
    first = list(layers[0])[0] if layers and type(layers[0]) is _TV_CNA and len(layers[0]) else None
    # a dense 1x1 first: the expand conv
    expand, (w, b), stride, pad, act, i = _tv_expand_dw(layers, "block",
                                                        len(layers) >= 3 and getattr(first, "groups", None) == 1)
    i -= 1
    se = None
    if i + 1 < len(layers) and type(layers[i + 1]) is _TV_SE:
        se_m = layers[i + 1]
        se = _se(se_m.fc1, se_m.fc2, se_m.activation, se_m.scale_activation, f"block.{i + 1}")
        i += 1
    if i + 2 != len(layers):
        raise Left(f"block has {len(layers)} layers, not [expand,] depthwise, [SE,] projection")
    pw, pb, _, _, _ = _tv_cna(layers[i + 1], f"block.{i + 1}", False, pointwise=True)
    return _block(expand, (w, b), stride, pad, se, (pw, pb), m.use_res_connect, act)


def _tv_mobilenet_v2_block(m) -> BlockPart:
    """torchvision MobileNetV2's InvertedResidual: conv = [expand CNA,] depthwise CNA, Conv2d 1x1, BN."""
    layers = list(m.conv)
    if len(layers) not in (3, 4):
        raise Left(f"conv has {len(layers)} layers (3 or 4 expected)")
    expand, (w, b), stride, pad, act, j = _tv_expand_dw(layers, "conv", len(layers) == 4)
    j -= 1
    pw, pb, _, _, _ = _conv_bn(layers[j + 1], layers[j + 2], f"conv.{j + 1}", f"conv.{j + 2}", want_act=False,
                               pointwise=True)
    return _block(expand, (w, b), stride, pad, None, (pw, pb), m.use_res_connect, act)


def flat_block(mods, where: str, skip: bool) -> BlockPart:
    """A block laid out flat as [conv 1x1, BN, act,] depthwise conv, BN, act, conv 1x1, BN (MNASNet's)."""
    if len(mods) not in (5, 8):
        raise Left(f"{where} has {len(mods)} layers (5 or 8 expected)")
    expand, ea, i = None, None, 0
    if len(mods) == 8:
        w, b, _, _, ea = _conv_bn(mods[0], mods[1], f"{where}.0", f"{where}.1", act=mods[2], want_act=True,
                                  pointwise=True)
        expand, i = (w, b), 3
    w, b, stride, pad, act = _conv_bn(mods[i], mods[i + 1], f"{where}.{i}", f"{where}.{i + 1}", act=mods[i + 2],
                                      want_act=True, depthwise=True)
    if ea is not None:
        _same_act(ea, act, f"{where}.0")
    pw, pb, _, _, _ = _conv_bn(mods[i + 3], mods[i + 4], f"{where}.{i + 3}", f"{where}.{i + 4}", want_act=False,
                               pointwise=True)
    return _block(expand, (w, b), stride, pad, None, (pw, pb), skip, act)


def _tv_mnasnet_block(m) -> BlockPart:
    return flat_block(list(m.layers), "layers", m.apply_residual)


def flat_runs(seq: nn.Sequential) -> List[Tuple[int, int, Union[Part, str]]]:
    """The runs of a flat nn.Sequential (MNASNet's ``layers``) that fuse: (first index, end index, part or
    reason) for a depthwise conv + BN + act + 1x1 conv + BN (a separable block without SE) and a dense conv +
    BN [+ act]; other children are not runs."""
    kids = list(seq)
    out = []
    i = 0
    while i < len(kids):
        m = kids[i]
        if type(m) not in _CONV_TYPES or i + 1 >= len(kids) or type(kids[i + 1]) not in _BN_TYPES:
            i += 1
            continue
        depthwise = m.groups > 1 and m.groups == m.in_channels == m.out_channels
        try:
            if depthwise:
                part = flat_block(kids[i:i + 5], str(i), skip=False)
                out.append((i, i + 5, part))
                i += 5
                continue
            has_act = i + 2 < len(kids) and act_of(kids[i + 2]) not in (None, "identity")
            w, b, stride, pad, a = _conv_bn_act(m, kids[i + 1], str(i), str(i + 1),
                                                act=kids[i + 2] if has_act else None)
            end = i + (3 if has_act else 2)
            out.append((i, end, ConvPart(w, b, stride, pad, a)))
            i = end
        except Left as e:
            out.append((i, i + 1, str(e)))
            i += 1
    return out


# ---- timm -----------------------------------------------------------------------------------------------

def _timm_se(m, where="se") -> Optional[_Se]:
    if type(m) in _IDENTITY_TYPES:
        return None  # no squeeze-excitation (EfficientNet-Lite, MobileNetV2, MNASNet)
    if type(m) is not _TIMM_SE:
        raise Left(f"{where} is {_name(m)}, not timm's SqueezeExcite")
    return _se(m.conv_reduce, m.conv_expand, m.act1, m.gate, where)


def _timm_common(m):
    if getattr(m, "conv_s2d", None) is not None:
        raise Left("space-to-depth stem (s2d) is not fused")
    _require_identity(m.aa, "aa (anti-aliasing)")
    _require_identity(m.drop_path, "drop_path")


def _timm_inverted_residual(m) -> BlockPart:
    _timm_common(m)
    w, b, _, _, ea = _conv_bn(m.conv_pw, m.bn1, "conv_pw", "bn1", want_act=True, pointwise=True)
    dw, db, stride, pad, act = _conv_bn(m.conv_dw, m.bn2, "conv_dw", "bn2", want_act=True, depthwise=True)
    _same_act(ea, act, "bn1")
    se = _timm_se(m.se)
    pw, pb, _, _, _ = _conv_bn(m.conv_pwl, m.bn3, "conv_pwl", "bn3", want_act=False, pointwise=True)
    return _block((w, b), (dw, db), stride, pad, se, (pw, pb), m.has_skip, act)


def _timm_depthwise_separable(m) -> BlockPart:
    _timm_common(m)
    dw, db, stride, pad, act = _conv_bn(m.conv_dw, m.bn1, "conv_dw", "bn1", want_act=True, depthwise=True)
    se = _timm_se(m.se)
    pw, pb, _, _, _ = _conv_bn(m.conv_pw, m.bn2, "conv_pw", "bn2", want_act=False, pointwise=True)
    return _block(None, (dw, db), stride, pad, se, (pw, pb), m.has_skip, act)


def _timm_conv_bn_act(m) -> ConvPart:
    _require_identity(m.aa, "aa (anti-aliasing)")
    if m.has_skip:
        raise Left("ConvBnAct with a residual is not fused")
    w, b, stride, pad, act = _conv_bn_act(m.conv, m.bn1, "conv", "bn1")
    return ConvPart(w, b, stride, pad, act)


# ---- efficientnet_pytorch -------------------------------------------------------------------------------

def _ep_mbconv(m) -> BlockPart:
    if m.training:
        raise Left("in training mode (its drop connect): call .eval()")
    args = m._block_args
    if act_of(m._swish) != "silu":
        raise Left(f"_swish activation is {_name(m._swish)}, not SiLU")
    expand = None
    if args.expand_ratio != 1:
        w, b, _, _, _ = _conv_bn(m._expand_conv, m._bn0, "_expand_conv", "_bn0", act=m._swish, want_act=True,
                                 pointwise=True)
        expand = (w, b)
    dw, db, stride, pad, act = _conv_bn(m._depthwise_conv, m._bn1, "_depthwise_conv", "_bn1", act=m._swish,
                                        want_act=True, depthwise=True)
    se = _se(m._se_reduce, m._se_expand, m._swish, None, "_se_reduce/_se_expand") if m.has_se else None
    pw, pb, _, _, _ = _conv_bn(m._project_conv, m._bn2, "_project_conv", "_bn2", want_act=False, pointwise=True)
    # exactly the block's own condition (its stride arrives as [s] for a stage's first block, and [1] != 1)
    skip = bool(m.id_skip and args.stride == 1 and args.input_filters == args.output_filters)
    return _block(expand, (dw, db), stride, pad, se, (pw, pb), skip, act)


# ---- the registry, filled on first use (the libraries are optional) -------------------------------------

_SILU_TYPES: set = {nn.SiLU}
_RELU_TYPES: set = {nn.ReLU}
_RELU6_TYPES: set = {nn.ReLU6}
_HARDSWISH_TYPES: set = {nn.Hardswish}
_SIGMOID_TYPES: set = {nn.Sigmoid}
_HARDSIGMOID_TYPES: set = {nn.Hardsigmoid}
_IDENTITY_TYPES: set = {nn.Identity}
_EVAL_IDENTITY_TYPES: set = {nn.Dropout}  # identities in eval mode
_CONV_TYPES: set = {nn.Conv2d}
_DYNAMIC_SAME_CONVS: set = set()
_BN_TYPES: set = {nn.BatchNorm2d}
_TV_CNA = _TV_SE = _TIMM_SE = None
# container class -> [(conv attribute, BN attribute[, activation attribute])] its forward calls back to back:
# the stems and heads of the EfficientNet classes; ADJACENT_CONTAINERS: timm's flattened feature wrappers, whose forward calls
# their children in order (their conv_stem + bn1). A plain nn.Sequential's conv + BN is not an EfficientNet
# layer (a decoder's): it stays as it is.
PAIR_CONTAINERS: Dict[type, List[Tuple[str, ...]]] = {}
ADJACENT_CONTAINERS: set = set()
# container class -> names of its flat nn.Sequential children whose conv + BN [+ act] runs fuse (flat_runs):
# torchvision MNASNet's ``layers`` (stem conv, first separable block and head conv laid out flat).
FLAT_SEQUENTIALS: Dict[type, Tuple[str, ...]] = {}
_loaded = False


def _load_library_extractors() -> None:
    global _loaded, _TV_CNA, _TV_SE, _TIMM_SE
    if _loaded:
        return
    _loaded = True
    from .models.efficientnet import ConvBNAct, MBConv
    REGISTRY.setdefault(MBConv, _ours_mbconv)
    REGISTRY.setdefault(ConvBNAct, _ours_convbnact)
    try:
        from torchvision.models.efficientnet import MBConv as TvMBConv
        from torchvision.ops.misc import Conv2dNormActivation, SqueezeExcitation
        from torchvision.ops import StochasticDepth
        _TV_CNA, _TV_SE = Conv2dNormActivation, SqueezeExcitation
        _EVAL_IDENTITY_TYPES.add(StochasticDepth)
        REGISTRY.setdefault(TvMBConv, _tv_mbconv)
        REGISTRY.setdefault(Conv2dNormActivation, _tv_conv_norm_act)
        from torchvision.models import mnasnet as tv_mnasnet, mobilenetv2 as tv_m2, mobilenetv3 as tv_m3
        REGISTRY.setdefault(tv_m2.InvertedResidual, _tv_mobilenet_v2_block)
        REGISTRY.setdefault(tv_m3.InvertedResidual, _tv_mobilenet_v3_block)
        REGISTRY.setdefault(tv_mnasnet._InvertedResidual, _tv_mnasnet_block)
        FLAT_SEQUENTIALS[tv_mnasnet.MNASNet] = ("layers",)
    except ImportError:
        pass
    try:
        from timm.layers import BatchNormAct2d, Conv2dSame, DropPath
        from timm.layers import activations as ta
        from timm.models import _efficientnet_blocks as tb
        from timm.models import efficientnet as te
        from timm.models import _features as tf
        from timm.layers import activations_me as tam
        _SILU_TYPES.update(getattr(ta, n) for n in ("SiLU", "Swish") if hasattr(ta, n))
        _SILU_TYPES.update(getattr(tam, n) for n in ("SwishMe",) if hasattr(tam, n))
        _SIGMOID_TYPES.update(getattr(ta, n) for n in ("Sigmoid",) if hasattr(ta, n))
        # timm's own hard_swish / hard_sigmoid (used when torch's are not chosen): x * (relu6(x + 3) / 6) and
        # relu6(x + 3) / 6, eager's functions to rounding
        _HARDSWISH_TYPES.update(getattr(m, n) for m in (ta, tam) for n in ("HardSwish", "HardSwishMe")
                                if hasattr(m, n))
        _HARDSIGMOID_TYPES.update(getattr(m, n) for m in (ta, tam) for n in ("HardSigmoid", "HardSigmoidMe")
                                  if hasattr(m, n))
        _EVAL_IDENTITY_TYPES.add(DropPath)
        _CONV_TYPES.add(Conv2dSame)
        _DYNAMIC_SAME_CONVS.add(Conv2dSame)
        _BN_TYPES.add(BatchNormAct2d)
        _TIMM_SE = tb.SqueezeExcite
        REGISTRY.setdefault(tb.InvertedResidual, _timm_inverted_residual)
        REGISTRY.setdefault(tb.DepthwiseSeparableConv, _timm_depthwise_separable)
        REGISTRY.setdefault(tb.ConvBnAct, _timm_conv_bn_act)
        PAIR_CONTAINERS[te.EfficientNet] = [("conv_stem", "bn1"), ("conv_head", "bn2")]
        PAIR_CONTAINERS[te.EfficientNetFeatures] = [("conv_stem", "bn1")]
        from timm.models import mobilenetv3 as tm3
        PAIR_CONTAINERS[tm3.MobileNetV3] = [("conv_stem", "bn1")]  # (its conv_head runs on the pooled features)
        PAIR_CONTAINERS[tm3.MobileNetV3Features] = [("conv_stem", "bn1", "act1")]  # (its act1 follows bn1)
        for name in ("FeatureListNet", "FeatureDictNet", "FeatureHookNet"):
            if hasattr(tf, name):
                ADJACENT_CONTAINERS.add(getattr(tf, name))
    except ImportError:
        pass
    try:
        from efficientnet_pytorch import model as em, utils as eu
        _SILU_TYPES.update({eu.Swish, eu.MemoryEfficientSwish})
        _CONV_TYPES.update({eu.Conv2dStaticSamePadding, eu.Conv2dDynamicSamePadding})
        _DYNAMIC_SAME_CONVS.add(eu.Conv2dDynamicSamePadding)
        REGISTRY.setdefault(em.MBConvBlock, _ep_mbconv)
        PAIR_CONTAINERS[em.EfficientNet] = [("_conv_stem", "_bn0"), ("_conv_head", "_bn1")]
    except ImportError:
        pass


def conv_bn_pair(conv: nn.Module, bn: nn.Module, act: Optional[nn.Module] = None) -> Union[ConvPart, str, None]:
    """A conv and the BatchNorm its container applies right after it (the BN may carry an activation, as
    timm's BatchNormAct2d; ``act``: the activation module the container applies after the BN): the folded
    part, a reason, or None when the two are not a conv and a BN."""
    _load_library_extractors()
    if type(conv) not in _CONV_TYPES or type(bn) not in _BN_TYPES:
        return None
    try:
        w, b, stride, pad, act = _conv_bn_act(conv, bn, "conv", "bn", act=act)
        return ConvPart(w, b, stride, pad, act)
    except Left as e:
        return str(e)
