"""Helpers for tests and benchmarks: realistic random BN statistics and the error measure.

A default-initialised EfficientNet outputs logits of ~1e-14 (BN with unit variance after kaiming
init shrinks activations block after block), which hides every numerical bug. Randomising BN
running statistics and affine parameters gives logits of order 1.
"""
from __future__ import annotations

import torch
import torch.nn as nn


@torch.no_grad()
def randomize_bn_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm random running stats and affine params (in place); returns ``model``."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            c = m.num_features

            def rnd(lo, hi):
                return (torch.rand(c, generator=g) * (hi - lo) + lo).to(m.running_mean)

            m.running_mean.copy_((torch.randn(c, generator=g) * 0.1).to(m.running_mean))
            m.running_var.copy_(rnd(0.5, 1.5))
            if m.affine:
                m.weight.copy_(rnd(0.8, 1.6))
                m.bias.copy_((torch.randn(c, generator=g) * 0.1).to(m.bias))
    return model


def rel_error(y: torch.Tensor, ref: torch.Tensor) -> float:
    """‖y − ref‖₂ / ‖ref‖₂ in float64 (norm-wise; per-element ratios blow up near zero)."""
    y, ref = y.detach().double(), ref.detach().double()
    den = ref.norm().item()
    num = (y - ref).norm().item()
    return num / den if den > 0 else num


def max_abs_error(y: torch.Tensor, ref: torch.Tensor) -> float:
    return (y.detach().double() - ref.detach().double()).abs().max().item() if ref.numel() else 0.0
