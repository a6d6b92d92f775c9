"""Helpers for tests, benchmarks and fit_phi: realistic random BN statistics, a calibrated random model of any
φ, the error measures.

A default-initialised EfficientNet outputs logits of ~1e-14 (BN with unit variance after kaiming
init shrinks activations block after block), which hides every numerical bug. Randomising BN
running statistics and affine parameters gives logits of order 1.
"""
from __future__ import annotations

import torch
import torch.nn as nn


@torch.no_grad()
def randomize_bn_(model: nn.Module, seed: int = 0, calibration_size=(2, 3, 224, 224)) -> nn.Module:
    """Give every BatchNorm random affine parameters and realistic running statistics (in place).

    Independent random statistics either drown the signal (the logits stop depending on the input)
    or blow it up layer after layer, so: γ ~ U(0.5, 1.5) and β ~ 0.2·N(0, 1) first, then the running
    statistics are calibrated on one random batch (each BN sees batch statistics, as in training),
    then perturbed (var × U(0.8, 1.25), mean + 0.1·N(0, 1)·std) so they are not exactly the batch's.
    Set ``calibration_size=None`` to skip calibration (stats then start from mean 0, var 1).
    Returns ``model``.
    """
    g = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def rand(bn, lo, hi):
        return (torch.rand(bn.num_features, generator=g) * (hi - lo) + lo).to(bn.running_mean)

    def randn(bn, scale):
        return (torch.randn(bn.num_features, generator=g) * scale).to(bn.running_mean)

    for bn in bns:
        if bn.affine:
            bn.weight.copy_(rand(bn, 0.5, 1.5))
            bn.bias.copy_(randn(bn, 0.2))
    if calibration_size is not None and bns:
        was_training = [m.training for m in model.modules()]
        momenta = [bn.momentum for bn in bns]
        model.eval()
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average: one batch sets the statistics exactly
            bn.train()
        p = next(model.parameters())
        model(torch.randn(calibration_size, generator=g).to(device=p.device, dtype=p.dtype))
        for bn, momentum in zip(bns, momenta):
            bn.momentum = momentum
        for m, t in zip(model.modules(), was_training):
            m.training = t
    for bn in bns:
        std = bn.running_var.clamp_min(1e-12).sqrt()
        bn.running_mean.add_(randn(bn, 0.1) * std)
        bn.running_var.mul_(rand(bn, 0.8, 1.25))
    return model


def rel_error(y: torch.Tensor, ref: torch.Tensor) -> float:
    """‖y − ref‖₂ / ‖ref‖₂ in float64 (norm-wise; per-element ratios blow up near zero)."""
    y, ref = y.detach().double(), ref.detach().double()
    den = ref.norm().item()
    num = (y - ref).norm().item()
    return num / den if den > 0 else num


def max_abs_error(y: torch.Tensor, ref: torch.Tensor) -> float:
    return (y.detach().double() - ref.detach().double()).abs().max().item() if ref.numel() else 0.0


def build_model(phi, device="cpu", dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.nn.Module:
    """efficientnet(phi) in eval mode with calibrated random BN statistics, on ``device`` in ``dtype``: the same
    model for the same (phi, seed) in every run (the caller's global RNG is left as it was)."""
    from .models import efficientnet
    from .scaling import compound

    res = compound(phi).resolution
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = efficientnet(phi).eval()
    model = randomize_bn_(model, seed=seed, calibration_size=(1, 3, res, res))
    return model.to(device, dtype)


def denormals_survive() -> bool:
    """False when this thread flushes subnormals (FTZ/DAZ set by someone)."""
    return (torch.tensor([1e-39]) * 0.5).item() != 0.0
