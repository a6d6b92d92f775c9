"""Eager EfficientNet (any φ) built from MBConv blocks, weight-compatible with torchvision and timm.

The blocks keep the parts the fused kernels replace as their own submodules: ``block.dw`` (depthwise
conv + BN + Swish) and ``block.se`` (squeeze-excitation).
"""
from __future__ import annotations

import math
import numbers
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..padding import pad_amounts_unchecked, check_padding
from ..scaling import ArchSpec, BlockSpec, arch_spec

__all__ = ["ConvBNAct", "SqueezeExcite", "MBConv", "EfficientNet", "efficientnet", "stochastic_depth"]


class ConvBNAct(nn.Module):
    """Conv2d (no bias) + BatchNorm2d + optional SiLU, with symmetric or TensorFlow SAME padding."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1,
                 act: bool = True, padding: str = "symmetric", bn_eps: float = 1e-5) -> None:
        super().__init__()
        # Stride 1 with odd k: SAME is symmetric, so only strided SAME convs pad at run time.
        self.dynamic_pad = padding == "same" and stride > 1 and kernel > 1
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, stride,
                              padding=0 if self.dynamic_pad else kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=bn_eps)
        self.act = nn.SiLU(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dynamic_pad:
            k, s = self.conv.kernel_size[0], self.conv.stride[0]
            top, bottom, _ = pad_amounts_unchecked(x.shape[-2], k, s, "same")
            left, right, _ = pad_amounts_unchecked(x.shape[-1], k, s, "same")
            x = F.pad(x, (left, right, top, bottom))
        return self.act(self.bn(self.conv(x)))


class SqueezeExcite(nn.Module):
    """x * sigmoid(expand(silu(reduce(mean_hw(x))))), reduce/expand being 1x1 convs with bias."""

    def __init__(self, channels: int, squeeze_channels: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeeze_channels, 1)
        self.expand = nn.Conv2d(squeeze_channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        s = torch.sigmoid(self.expand(F.silu(self.reduce(s))))
        return x * s


def stochastic_depth(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Drop whole samples of a residual branch with probability p (identity at inference)."""
    if not training or p == 0.0:
        return x
    keep = 1.0 - p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
    return x * mask.div_(keep)


class MBConv(nn.Module):
    """Mobile inverted bottleneck: [expand 1x1] → depthwise k×k → SE → project 1x1 (+ residual)."""

    def __init__(self, spec: BlockSpec, padding: str = "symmetric", bn_eps: float = 1e-5) -> None:
        super().__init__()
        self.spec = spec
        mid = spec.mid_channels
        self.expand = (ConvBNAct(spec.in_channels, mid, 1, bn_eps=bn_eps)
                       if spec.expand_ratio != 1 else None)
        self.dw = ConvBNAct(mid, mid, spec.kernel, spec.stride, groups=mid, padding=padding, bn_eps=bn_eps)
        self.se = SqueezeExcite(mid, spec.se_channels)
        self.project = ConvBNAct(mid, spec.out_channels, 1, act=False, bn_eps=bn_eps)
        self.has_skip = spec.has_skip
        self.drop_prob = spec.drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x if self.expand is None else self.expand(x)
        y = self.project(self.se(self.dw(y)))
        if self.has_skip:
            y = stochastic_depth(y, self.drop_prob, self.training) + x
        return y


class EfficientNet(nn.Module):
    """EfficientNet for any compound coefficient; build it with :func:`efficientnet`."""

    def __init__(self, spec: ArchSpec, num_classes: int = 1000, padding: str = "symmetric",
                 bn_eps: float = 1e-5) -> None:
        if not isinstance(spec, ArchSpec):
            raise TypeError(f"spec must be an effnet_kernels.scaling.ArchSpec (scaling.arch_spec('b0')), got "
                            f"{type(spec).__name__} {spec!r}: use efficientnet({spec!r}) to build from a name or phi")
        num_classes = _check_num_classes(num_classes)
        padding = check_padding(padding)
        bn_eps = _check_bn_eps(bn_eps)
        super().__init__()
        self.spec, self.padding, self.bn_eps, self.num_classes = spec, padding, bn_eps, num_classes
        self.stem = ConvBNAct(3, spec.stem_channels, 3, 2, padding=padding, bn_eps=bn_eps)
        self.blocks = nn.Sequential(*[
            nn.Sequential(*[MBConv(b, padding, bn_eps) for b in stage]) for stage in spec.stages
        ])
        self.head = ConvBNAct(spec.blocks[-1].out_channels, spec.head_channels, 1, bn_eps=bn_eps)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(spec.scaling.dropout)
        self.classifier = nn.Linear(spec.head_channels, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's initialisation (the weights are usually loaded over it anyway).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                r = 1.0 / math.sqrt(m.out_features)
                nn.init.uniform_(m.weight, -r, r)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.pool(self.forward_features(x)), 1)
        return self.classifier(self.dropout(x))

    def extra_repr(self) -> str:
        return f"arch={self.spec.name}, padding={self.padding!r}, bn_eps={self.bn_eps:g}"


def _check_num_classes(num_classes) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 1:
        raise ValueError(f"num_classes must be an int >= 1, got {num_classes!r}")
    return int(num_classes)


def _check_bn_eps(bn_eps) -> float:
    if isinstance(bn_eps, bool) or not isinstance(bn_eps, numbers.Real):
        raise TypeError(f"bn_eps must be a positive float or None, got {type(bn_eps).__name__} {bn_eps!r}")
    if not math.isfinite(bn_eps) or bn_eps <= 0:
        raise ValueError(f"bn_eps must be a positive finite float, got {bn_eps!r}")
    return float(bn_eps)


def efficientnet(arch="b0", num_classes: int = 1000, padding: str = "symmetric",
                 bn_eps: Optional[float] = None, *, alpha=None, beta=None, gamma=None,
                 base_resolution: int = 224) -> EfficientNet:
    """Build an eager EfficientNet.

    arch: ``"b0"``…``"b7"``, a real compound coefficient φ ≥ 0 (see :mod:`effnet_kernels.scaling`) or an
        :class:`~effnet_kernels.scaling.ArchSpec`.
    alpha, beta, gamma, base_resolution: custom compound-scaling coefficients (see
        :func:`~effnet_kernels.scaling.compound`): the φ of the pure-power family depth α^φ, width β^φ,
        resolution round(base_resolution·γ^φ) instead of the official table.
    padding: ``"symmetric"`` (torchvision, timm ``efficientnet_*``) or ``"same"`` (TensorFlow SAME, for
        timm's ``tf_efficientnet_*`` weights).
    bn_eps: BatchNorm epsilon; ``None`` follows torchvision's presets (1e-5 for φ < 5, else 1e-3).
    """
    spec = arch_spec(arch, alpha=alpha, beta=beta, gamma=gamma, base_resolution=base_resolution)
    num_classes = _check_num_classes(num_classes)
    padding = check_padding(padding)
    eps = spec.default_bn_eps if bn_eps is None else _check_bn_eps(bn_eps)
    return EfficientNet(spec, num_classes, padding, eps)
