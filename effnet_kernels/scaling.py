"""Compound scaling (Tan & Le 2019) and the EfficientNet architecture as data.

One coefficient φ scales depth, width and input resolution together. φ = 0…7 are the official
EfficientNet-B0…B7, whose multipliers come from the reference implementation's table (they are
rounded, not exact powers of α, β, γ). The rule for any real φ ≥ 0:

* **integer φ in 0…7** — the official table, exactly (``compound(3)`` is B3);
* **between two table entries** — geometric interpolation of each quantity: for φ = i + t with
  0 < t < 1, ``q(φ) = q(i)^(1-t) · q(i+1)^t``. Width, depth and dropout are continuous and monotone
  non-decreasing in φ; the resolution is that value rounded to the nearest pixel (monotone, and it
  moves by at most one pixel for a small change of φ);
* **past B7** — each extra unit of φ multiplies depth by α = 1.2, width by β = 1.1 and resolution by
  γ = 1.15 (α·β²·γ² ≈ 2: FLOPs roughly double per unit); dropout stays at B7's 0.5.

Widths are rounded per stage with :func:`round_filters` (multiples of 8, never more than 10 % below
the scaled value) and block repeats with :func:`round_repeats` (ceil), as torchvision and timm do.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import List, NamedTuple, Tuple, Union

from .padding import _check_int

__all__ = [
    "ALPHA", "BETA", "GAMMA", "PRESETS", "Scaling", "compound", "round_filters", "round_repeats",
    "BlockSpec", "ArchSpec", "arch_spec", "ModelCost", "model_cost", "DepthwiseShape", "depthwise_shapes",
]

ALPHA, BETA, GAMMA = 1.2, 1.1, 1.15  # depth, width, resolution bases per unit of φ

# Official B0…B7: (width multiplier, depth multiplier, resolution, dropout).
_TABLE = (
    (1.0, 1.0, 224, 0.2),
    (1.0, 1.1, 240, 0.2),
    (1.1, 1.2, 260, 0.3),
    (1.2, 1.4, 300, 0.3),
    (1.4, 1.8, 380, 0.4),
    (1.6, 2.2, 456, 0.4),
    (1.8, 2.6, 528, 0.5),
    (2.0, 3.1, 600, 0.5),
)
PRESETS = tuple(f"b{i}" for i in range(len(_TABLE)))

# The B0 stage table: (expand ratio, kernel, stride, input channels, output channels, repeats).
# Every stage's blocks use squeeze-excitation with a squeeze width of 1/4 of the block's *input*
# channels. Stem: 3x3 stride-2 conv to 32 channels; head: 1x1 conv to 1280 channels.
B0_STAGES = (
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
)
B0_STEM, B0_HEAD, SE_RATIO, STOCHASTIC_DEPTH = 32, 1280, 0.25, 0.2


class Scaling(NamedTuple):
    width: float       # channel multiplier
    depth: float       # block-repeat multiplier
    resolution: int    # default input height = width, in pixels
    dropout: float     # dropout before the classifier (training only)


def _check_phi(phi, name: str = "phi") -> float:
    if isinstance(phi, bool) or not isinstance(phi, numbers.Real):
        raise TypeError(f"{name} must be a real number >= 0, got {type(phi).__name__} {phi!r}")
    value = float(phi)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite real number >= 0, got {phi!r}")
    return value


def compound(phi) -> Scaling:
    """Width, depth, resolution and dropout for compound coefficient ``phi`` (any real φ ≥ 0).

    Integer φ = 0…7 give the official EfficientNet-B0…B7 table exactly; between entries each
    quantity is interpolated geometrically (continuous, monotone); past 7, each unit of φ multiplies
    depth by α = 1.2, width by β = 1.1 and resolution by γ = 1.15, and dropout stays 0.5.
    See the module docstring for the full rule.
    """
    phi = _check_phi(phi)
    last = len(_TABLE) - 1
    if phi >= last:
        w, d, r, p = _TABLE[last]
        extra = phi - last
        if extra == 0:
            return Scaling(w, d, r, p)
        return Scaling(w * BETA ** extra, d * ALPHA ** extra, int(round(r * GAMMA ** extra)), p)
    i = int(math.floor(phi))
    t = phi - i
    if t == 0:
        return Scaling(*_TABLE[i])
    lo, hi = _TABLE[i], _TABLE[i + 1]
    geo = [a * (b / a) ** t for a, b in zip(lo, hi)]  # = a^(1-t)·b^t, exactly a when a == b
    return Scaling(geo[0], geo[1], int(round(geo[2])), geo[3])


def _check_positive(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a positive real number, got {type(value).__name__} {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def _check_bool(value, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return value


def round_filters(channels: int, width: float = 1.0, divisor: int = 8) -> int:
    """``channels * width`` rounded to a multiple of ``divisor``, never more than 10 % below it.

    The same rule as torchvision's and timm's ``make_divisible`` (weights stay loadable).
    """
    channels = _check_int(channels, "channels", 1)
    width = _check_positive(width, "width")
    divisor = _check_int(divisor, "divisor", 1)
    v = channels * width
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def round_repeats(repeats: int, depth: float = 1.0) -> int:
    """``ceil(repeats * depth)``: the number of blocks in a stage after depth scaling."""
    repeats = _check_int(repeats, "repeats", 1)
    depth = _check_positive(depth, "depth")
    return int(math.ceil(repeats * depth))


@dataclass(frozen=True)
class BlockSpec:
    """One MBConv block: channels, kernel, stride, squeeze width and stochastic-depth rate."""

    in_channels: int
    out_channels: int
    expand_ratio: int
    mid_channels: int      # channels of the depthwise conv (= in_channels when expand_ratio == 1)
    kernel: int
    stride: int
    se_channels: int       # squeeze width: SE_RATIO x the block's input channels
    drop_prob: float       # stochastic depth rate (training only)

    @property
    def has_skip(self) -> bool:
        return self.stride == 1 and self.in_channels == self.out_channels


@dataclass(frozen=True)
class ArchSpec:
    """A whole EfficientNet as data: the scaling, stem/head widths and every block per stage."""

    name: str              # "b0"…"b7", or "phi=<φ>" for other coefficients
    phi: float
    scaling: Scaling
    stem_channels: int
    head_channels: int
    stages: Tuple[Tuple[BlockSpec, ...], ...]

    @property
    def blocks(self) -> Tuple[BlockSpec, ...]:
        return tuple(b for stage in self.stages for b in stage)

    @property
    def resolution(self) -> int:
        return self.scaling.resolution

    @property
    def default_bn_eps(self) -> float:
        # torchvision's presets: B0-B4 use BatchNorm's default 1e-5, B5-B7 (and beyond) 1e-3.
        return 1e-3 if self.phi >= 5 else 1e-5


def arch_spec(arch: Union[str, float, int, ArchSpec]) -> ArchSpec:
    """Resolve ``arch`` — ``"b0"``…``"b7"`` or a real φ ≥ 0 — into an :class:`ArchSpec`."""
    if isinstance(arch, ArchSpec):
        return arch
    if isinstance(arch, str):
        key = arch.strip().lower()
        if key not in PRESETS:
            raise ValueError(f"arch must be one of {', '.join(PRESETS)} or a real phi >= 0, got {arch!r}")
        phi = float(PRESETS.index(key))
        name = key
    else:
        phi = _check_phi(arch, "arch")
        name = f"b{int(phi)}" if phi.is_integer() and phi < len(_TABLE) else f"phi={phi:g}"
    sc = compound(phi)
    total = sum(round_repeats(s[5], sc.depth) for s in B0_STAGES)
    stages, index = [], 0
    for expand, kernel, stride, cin, cout, repeats in B0_STAGES:
        in_ch, out_ch = round_filters(cin, sc.width), round_filters(cout, sc.width)
        blocks = []
        for j in range(round_repeats(repeats, sc.depth)):
            b_in = in_ch if j == 0 else out_ch
            blocks.append(BlockSpec(
                in_channels=b_in,
                out_channels=out_ch,
                expand_ratio=expand,
                mid_channels=round_filters(b_in * expand) if expand != 1 else b_in,
                kernel=kernel,
                stride=stride if j == 0 else 1,
                se_channels=max(1, int(b_in * SE_RATIO)),
                drop_prob=STOCHASTIC_DEPTH * index / total,
            ))
            index += 1
        stages.append(tuple(blocks))
    last = stages[-1][-1].out_channels
    return ArchSpec(
        name=name, phi=phi, scaling=sc,
        stem_channels=round_filters(B0_STEM, sc.width),
        # torchvision: 4 x the last stage's width; timm: round_filters(1280). Equal at every preset.
        head_channels=4 * last,
        stages=tuple(stages),
    )


class ModelCost(NamedTuple):
    params: int   # learnable parameters (conv/linear weights and biases, BN affine)
    macs: int     # multiply-adds of the convolutions and the classifier, batch 1


def _out(size: int, stride: int) -> int:
    # Symmetric k//2 padding and TensorFlow SAME give the same output size for odd k: ceil(size/stride).
    return -(-size // stride)


def _resolution_hw(resolution, default: int) -> Tuple[int, int]:
    if resolution is None:
        return default, default
    if isinstance(resolution, (tuple, list)):
        if len(resolution) != 2:
            raise ValueError(f"resolution must be an int or an (height, width) pair, got {resolution!r}")
        return _check_int(resolution[0], "resolution[0]", 1), _check_int(resolution[1], "resolution[1]", 1)
    r = _check_int(resolution, "resolution", 1)
    return r, r


def model_cost(arch, resolution=None, num_classes: int = 1000) -> ModelCost:
    """Parameters and multiply-adds of ``efficientnet(arch)``, computed from the architecture.

    ``resolution`` is an int or (height, width), by default the arch's own. MACs count every conv
    (stem, expand, depthwise, SE reduce/expand, project, head) and the classifier, for one image.
    """
    spec = arch_spec(arch)
    num_classes = _check_int(num_classes, "num_classes", 1)
    h, w = _resolution_hw(resolution, spec.resolution)
    params = macs = 0

    def conv(cin, cout, k, stride, groups=1, bias=False, bn=True):
        nonlocal params, macs, h, w
        h, w = _out(h, stride), _out(w, stride)
        weights = cout * (cin // groups) * k * k
        params += weights + (cout if bias else 0) + (2 * cout if bn else 0)
        macs += weights * h * w

    conv(3, spec.stem_channels, 3, 2)
    for b in spec.blocks:
        if b.expand_ratio != 1:
            conv(b.in_channels, b.mid_channels, 1, 1)
        conv(b.mid_channels, b.mid_channels, b.kernel, b.stride, groups=b.mid_channels)
        # SE: two 1x1 convs with bias on the pooled (1x1) activations.
        params += 2 * b.mid_channels * b.se_channels + b.se_channels + b.mid_channels
        macs += 2 * b.mid_channels * b.se_channels
        conv(b.mid_channels, b.out_channels, 1, 1)
    conv(spec.blocks[-1].out_channels, spec.head_channels, 1, 1)
    params += spec.head_channels * num_classes + num_classes
    macs += spec.head_channels * num_classes
    return ModelCost(params=params, macs=macs)


class DepthwiseShape(NamedTuple):
    channels: int
    height: int     # input height of the depthwise conv
    width: int      # input width
    kernel: int
    stride: int


def depthwise_shapes(arch, resolution=None, distinct: bool = False) -> Tuple[DepthwiseShape, ...]:
    """The depthwise-conv layer shapes of ``efficientnet(arch)`` at ``resolution`` (default: the arch's),
    in network order; ``distinct=True`` drops repeats. Shared by tests and benchmarks."""
    spec = arch_spec(arch)
    h, w = _resolution_hw(resolution, spec.resolution)
    distinct = _check_bool(distinct, "distinct")
    h, w = _out(h, 2), _out(w, 2)  # after the stride-2 stem
    shapes = []
    for b in spec.blocks:
        shape = DepthwiseShape(b.mid_channels, h, w, b.kernel, b.stride)
        if not distinct or shape not in shapes:
            shapes.append(shape)
        h, w = _out(h, b.stride), _out(w, b.stride)
    return tuple(shapes)


class SEShape(NamedTuple):
    channels: int   # the block's depthwise (mid) channels: what the SE pools and scales
    squeeze: int    # squeeze width (reduce conv's output channels)
    height: int     # the depthwise conv's output height (the SE's input)
    width: int
    out_channels: int  # the projection conv's output channels (the block's output)


def se_shapes(arch, resolution=None, distinct: bool = False) -> Tuple[SEShape, ...]:
    """The squeeze-excitation shapes of ``efficientnet(arch)`` at ``resolution`` (default: the arch's), in
    network order, with the projection that follows; ``distinct=True`` drops repeats."""
    spec = arch_spec(arch)
    h, w = _resolution_hw(resolution, spec.resolution)
    distinct = _check_bool(distinct, "distinct")
    h, w = _out(h, 2), _out(w, 2)
    shapes = []
    for b in spec.blocks:
        h, w = _out(h, b.stride), _out(w, b.stride)
        shape = SEShape(b.mid_channels, b.se_channels, h, w, b.out_channels)
        if not distinct or shape not in shapes:
            shapes.append(shape)
    return tuple(shapes)


def dw_layer_shapes(phis) -> List[DepthwiseShape]:
    """Distinct depthwise layer shapes over the given φ, in order of first appearance."""
    out: List[DepthwiseShape] = []
    for phi in phis:
        for s in depthwise_shapes(phi, distinct=True):
            if s not in out:
                out.append(s)
    return out


def se_layer_shapes(phis) -> List[SEShape]:
    """Distinct SE shapes over the given φ, in order of first appearance."""
    return list(dict.fromkeys(s for phi in phis for s in se_shapes(phi, distinct=True)))
