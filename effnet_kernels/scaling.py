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

**Your own coefficients.** ``compound(phi, alpha=…, beta=…, gamma=…, base_resolution=…)`` with any of the three
given (the others default to the paper's) is the pure-power family: depth α^φ, width β^φ, resolution
round(base_resolution·γ^φ), dropout as the rule above gives for that φ. The official table is *not* a pure
power of the paper's coefficients (it was rounded by hand): ``compound(3)`` is B3 with depth 1.4, while
``compound(3, alpha=1.2, beta=1.1, gamma=1.15)`` has depth 1.2³ = 1.728, width 1.331 and resolution 341.
:func:`arch_spec` and ``efficientnet`` take the same arguments and build that family with the same rounding.

Widths are rounded per stage with :func:`round_filters` (multiples of 8, never more than 10 % below
the scaled value) and block repeats with :func:`round_repeats` (ceil), as torchvision and timm do.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import List, NamedTuple, Optional, Tuple, Union

from .padding import _check_int

__all__ = [
    "ALPHA", "BETA", "GAMMA", "PRESETS", "Scaling", "compound", "round_filters", "round_repeats",
    "BlockSpec", "ArchSpec", "arch_spec", "scaled_arch", "Coefficients", "ModelCost", "model_cost",
    "DepthwiseShape", "depthwise_shapes", "FlopsGrowth", "flops_growth", "realised_multipliers",
]

ALPHA, BETA, GAMMA = 1.2, 1.1, 1.15  # depth, width, resolution bases per unit of φ
BASE_RESOLUTION = 224  # B0's input size
# Beyond these an architecture cannot be built on any machine: arch_spec refuses instead of allocating for ever.
MAX_BLOCKS, MAX_CHANNELS = 100_000, 1_000_000

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


class Coefficients(NamedTuple):
    """Custom compound-scaling coefficients: depth α, width β and resolution γ per unit of φ, and φ = 0's
    input size."""
    alpha: float
    beta: float
    gamma: float
    base_resolution: int


def _check_coefficient(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number >= 1 (or None for the paper's), got "
                        f"{type(value).__name__} {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < 1:
        raise ValueError(f"{name} must be a finite number >= 1 (a model that shrinks as phi grows is not compound "
                         f"scaling), got {value!r}")
    return v


def coefficients(alpha=None, beta=None, gamma=None, base_resolution=BASE_RESOLUTION):
    """The checked :class:`Coefficients`, or None when α, β and γ are all unset (the official table)."""
    base_resolution = _check_int(base_resolution, "base_resolution", 8)
    if alpha is None and beta is None and gamma is None:
        if base_resolution != BASE_RESOLUTION:
            raise ValueError(f"base_resolution must stay {BASE_RESOLUTION} with the official table (its resolutions "
                             f"are fixed), got {base_resolution!r}: give alpha, beta or gamma too (alpha={ALPHA} is "
                             f"the paper's) for the pure-power family at that size, or pass resolution= to "
                             f"model_cost and feed the model that size")
        return None
    return Coefficients(
        ALPHA if alpha is None else _check_coefficient(alpha, "alpha"),
        BETA if beta is None else _check_coefficient(beta, "beta"),
        GAMMA if gamma is None else _check_coefficient(gamma, "gamma"),
        int(base_resolution))


def _table(phi: float) -> Scaling:
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


def _powers(phi: float, co: Coefficients) -> Scaling:
    return Scaling(co.beta ** phi, co.alpha ** phi, int(round(co.base_resolution * co.gamma ** phi)),
                   _table(phi).dropout)


def compound(phi, alpha=None, beta=None, gamma=None, base_resolution: int = BASE_RESOLUTION) -> Scaling:
    """Width, depth, resolution and dropout for compound coefficient ``phi`` (any real φ ≥ 0).

    With ``alpha``, ``beta`` and ``gamma`` unset: integer φ = 0…7 give the official EfficientNet-B0…B7 table
    exactly; between entries each quantity is interpolated geometrically (continuous, monotone); past 7, each
    unit of φ multiplies depth by α = 1.2, width by β = 1.1 and resolution by γ = 1.15, and dropout stays 0.5.

    With any of them given (each a finite number ≥ 1; the others default to the paper's 1.2, 1.1, 1.15): pure
    powers — depth α^φ, width β^φ, resolution round(base_resolution·γ^φ) — and the table rule's dropout. This is
    not the table even with the paper's values: ``compound(3, alpha=1.2, beta=1.1, gamma=1.15).depth`` is
    1.728, the table's B3 1.4. See the module docstring for the full rule.
    """
    phi = _check_phi(phi)
    co = coefficients(alpha, beta, gamma, base_resolution)
    return _table(phi) if co is None else _powers(phi, co)


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

    name: str              # "b0"…"b7", "phi=<φ>" for other coefficients, "phi=<φ>,alpha=…" for custom ones
    phi: float
    scaling: Scaling
    stem_channels: int
    head_channels: int
    stages: Tuple[Tuple[BlockSpec, ...], ...]
    coefficients: Optional[Coefficients] = None  # custom α, β, γ; None: the official table's rule

    @property
    def layout(self) -> tuple:
        """What the built network is — stem, head, every block, resolution — without its name, φ or dropout:
        two specs with equal layouts build the same inference network (grid_search caches by it)."""
        return (self.stem_channels, self.head_channels, self.stages, self.resolution)

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


def arch_spec(arch: Union[str, float, int, ArchSpec], alpha=None, beta=None, gamma=None,
              base_resolution: int = BASE_RESOLUTION) -> ArchSpec:
    """Resolve ``arch`` — ``"b0"``…``"b7"`` or a real φ ≥ 0 — into an :class:`ArchSpec`; with ``alpha``,
    ``beta`` or ``gamma`` (see :func:`compound`) the φ of that custom family."""
    co = coefficients(alpha, beta, gamma, base_resolution)
    if isinstance(arch, ArchSpec):
        if co is not None:
            raise ValueError(f"arch must be a name or a phi when alpha, beta, gamma or base_resolution is given, "
                             f"got the ArchSpec {arch.name} (already scaled)")
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
    if co is not None:
        name = f"phi={phi:g},alpha={co.alpha:g},beta={co.beta:g},gamma={co.gamma:g}" + (
            f",base_resolution={co.base_resolution}" if co.base_resolution != BASE_RESOLUTION else "")
        return _build(name, phi, _powers(phi, co), co)
    return _build(name, phi, _table(phi), None)


def scaled_arch(width: float = 1.0, depth: float = 1.0, resolution: int = BASE_RESOLUTION, dropout: float = 0.2,
                phi: float = 0.0, name: Optional[str] = None) -> ArchSpec:
    """The B0 layout scaled by any ``width`` and ``depth`` multipliers at input size ``resolution`` (one
    dimension at a time, as :func:`effnet_kernels.scaling_profile` walks them), with the same rounding as
    :func:`arch_spec`. ``phi`` only chooses the default BatchNorm epsilon (as for the presets)."""
    sc = Scaling(_check_positive(width, "width"), _check_positive(depth, "depth"),
                 _check_int(resolution, "resolution", 8), _check_dropout(dropout))
    phi = _check_phi(phi)
    if name is None:
        name = f"width={sc.width:.4g},depth={sc.depth:.4g},resolution={sc.resolution}"
    elif not isinstance(name, str):
        raise TypeError(f"name must be a str or None, got {type(name).__name__} {name!r}")
    return _build(name, phi, sc, None)


def _check_dropout(p) -> float:
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0 <= float(p) < 1:
        raise ValueError(f"dropout must be a number in [0, 1), got {p!r}")
    return float(p)


def _build(name: str, phi: float, sc: Scaling, co: Optional[Coefficients]) -> ArchSpec:
    total = sum(math.ceil(s[5] * sc.depth) for s in B0_STAGES)  # what round_repeats gives, before any list
    widest = max(B0_HEAD, max(s[4] for s in B0_STAGES) * 6) * sc.width
    if total > MAX_BLOCKS or widest > MAX_CHANNELS:
        raise ValueError(f"{name}: the depth and width multipliers must give at most {MAX_BLOCKS} blocks and "
                         f"{MAX_CHANNELS} channels (what can be built), got depth x{sc.depth:.4g} and width "
                         f"x{sc.width:.4g}: {total} blocks, up to {widest:.0f} channels; lower phi or the coefficients")
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
        coefficients=co,
    )


class Multipliers(NamedTuple):
    """How much larger an architecture is than another after rounding: blocks, channels, input size."""
    depth: float       # block count ratio (after ceil rounding per stage)
    width: float       # geometric mean of the channel ratios of the stem, every stage's output and the head
    resolution: float  # input size ratio


def _widths(spec: ArchSpec) -> List[int]:
    return [spec.stem_channels] + [stage[-1].out_channels for stage in spec.stages] + [spec.head_channels]


def realised_multipliers(arch, base="b0") -> Multipliers:
    """The multipliers ``arch`` realises over ``base`` once the widths are rounded to multiples of 8 and the
    repeats up: what a fit of latency against depth, width and resolution must use (the nominal multipliers
    are not what runs)."""
    a, b = arch_spec(arch), arch_spec(base)
    ratios = [x / y for x, y in zip(_widths(a), _widths(b))]
    width = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
    return Multipliers(len(a.blocks) / len(b.blocks), width, a.resolution / b.resolution)


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


class FlopsGrowth(NamedTuple):
    """How fast multiply-adds grow per unit of φ for coefficients α, β, γ."""
    ideal: float      # α·β²·γ²: the growth if every layer scaled with depth, width² and resolution²
    measured: float   # model_cost's MACs at φ = 1 over φ = 0 (stem and head do not grow with depth; rounding)
    per_phi: Tuple[Tuple[float, float], ...]  # (φ, (MACs(φ) / MACs(0)) ** (1 / φ)): the per-unit growth over φ


def flops_growth(alpha=None, beta=None, gamma=None, base_resolution: int = BASE_RESOLUTION,
                 phis=(1, 2, 3, 4)) -> FlopsGrowth:
    """α·β²·γ² (the paper's FLOPs growth per unit of φ, ≈ 2 for its 1.2, 1.1, 1.15) against the growth
    :func:`model_cost` measures on the pure-power family of those coefficients (unset ones: the paper's)."""
    co = coefficients(ALPHA if alpha is None else alpha, beta, gamma, base_resolution)
    if not isinstance(phis, (tuple, list)) or not phis:
        raise TypeError(f"phis must be a non-empty tuple or list of phi > 0, got {phis!r}")
    base = model_cost(arch_spec(0, *co)).macs
    per_phi = []
    for phi in phis:
        phi = _check_phi(phi, "phis[]")
        if phi == 0:
            raise ValueError(f"phis must be > 0 (the growth per unit of phi is measured against phi = 0), got {phi!r}")
        per_phi.append((phi, (model_cost(arch_spec(phi, *co)).macs / base) ** (1 / phi)))
    return FlopsGrowth(ideal=co.alpha * co.beta ** 2 * co.gamma ** 2,
                       measured=model_cost(arch_spec(1, *co)).macs / base, per_phi=tuple(per_phi))


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
