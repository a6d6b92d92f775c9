"""Helpers for tests, benchmarks and fit_phi: realistic random BN statistics, a calibrated random model of any
φ, the error measures.

A default-initialised EfficientNet outputs logits of ~1e-14 (BN with unit variance after kaiming
init shrinks activations block after block), which hides every numerical bug. Randomising BN
running statistics and affine parameters gives logits of order 1.
"""
from __future__ import annotations

from typing import Dict, Optional

import math
import torch
import torch.nn as nn


@torch.no_grad()
def randomize_bn_(model: nn.Module, seed: int = 0, calibration_size=(2, 3, 224, 224),
                  scale: Optional[Dict[nn.Module, float]] = None) -> nn.Module:
    """Give every BatchNorm random affine parameters and realistic running statistics (in place).

    Independent random statistics either drown the signal (the logits stop depending on the input)
    or blow it up layer after layer, so: γ ~ U(0.5, 1.5) and β ~ 0.2·N(0, 1) first, then the running
    statistics are calibrated on one random batch (each BN sees batch statistics, as in training),
    then perturbed (var × U(0.8, 1.25), mean + 0.1·N(0, 1)·std) so they are not exactly the batch's.
    Set ``calibration_size=None`` to skip calibration (stats then start from mean 0, var 1). ``scale`` maps
    BatchNorms to a factor for their γ and β (applied before calibration, so the layers after them are
    calibrated to the scaled values). Returns ``model``.
    """
    g = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def rand(bn, lo, hi):
        return (torch.rand(bn.num_features, generator=g) * (hi - lo) + lo).to(bn.running_mean)

    def randn(bn, scale):
        return (torch.randn(bn.num_features, generator=g) * scale).to(bn.running_mean)

    for bn in bns:
        if bn.affine:
            k = (scale or {}).get(bn, 1.0)
            bn.weight.copy_(rand(bn, 0.5, 1.5) * k)
            bn.bias.copy_(randn(bn, 0.2) * k)
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


RESIDUAL_BN_SCALE = 0.25


def build_model(phi, device="cpu", dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.nn.Module:
    """efficientnet(phi) in eval mode with calibrated random BN statistics, on ``device`` in ``dtype``: the same
    model for the same (phi, seed) in every run (the caller's global RNG is left as it was). ``phi`` may be an
    :class:`~effnet_kernels.scaling.ArchSpec` (then calibrated at its resolution)."""
    from .models import efficientnet
    from .scaling import arch_spec

    spec = arch_spec(phi)
    res = spec.resolution
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = efficientnet(spec).eval()
    # The last stage's BatchNorm statistics from at least as many values per channel as B0 at 224 gives them
    # (7x7, batch 1). Calibrated on the 4 values of a 2x2 plane (a 48-pixel input, batch 1), a deep random model
    # is chaotic: a 1e-6 change of the input moved its output by 50 %, fp32 eager as far from float64 as any.
    smallest = math.ceil(res / 32) ** 2
    # The residual branches' last BatchNorm at a quarter of the others' scale, as in trained networks (timm
    # initialises it to zero): at full scale a deep random model blows up and turns chaotic (at 40 blocks the
    # logits' std was 2e3 and a 1e-7 change of the input moved the output by 20-35 %, fp32 eager 56 % from
    # float64); at a quarter the output moves as much as the input at every depth.
    from .models.efficientnet import MBConv
    scale = {m.project.bn: RESIDUAL_BN_SCALE for m in model.modules() if isinstance(m, MBConv) and m.has_skip}
    model = randomize_bn_(model, seed=seed, calibration_size=(math.ceil(49 / smallest), 3, res, res), scale=scale)
    return model.to(device, dtype)


def denormals_survive() -> bool:
    """False when this thread flushes subnormals (FTZ/DAZ set by someone)."""
    return (torch.tensor([1e-39]) * 0.5).item() != 0.0


# ---- real models from the libraries people use, and models that contain them ----------------------------

class UNet(nn.Module):
    """A small U-Net around an EfficientNet encoder, as segmentation libraries build them: the encoder's
    feature maps (a timm ``features_only`` model's list, or efficientnet_pytorch's ``extract_endpoints``),
    an eager decoder (upsample, concatenate the skip, 3x3 conv + BN + ReLU per level) and a 1x1 mask head.
    The deepest map goes through a global-context step that calls ``.view()`` on it for an NCHW input, as
    attention and pooling code written for NCHW does: it fails on a channels_last tensor, so an encoder that
    hands back another memory format than eager's is caught."""

    def __init__(self, encoder: nn.Module, channels, classes: int = 2, endpoints: bool = False):
        super().__init__()
        self.encoder, self.endpoints = encoder, endpoints
        chans = list(channels)
        self.context = nn.Conv2d(chans[-1], chans[-1], 1)
        ups, c = [], chans[-1]
        for skip in reversed(chans[:-1]):
            ups.append(nn.Sequential(nn.Conv2d(c + skip, skip, 3, padding=1, bias=False), nn.BatchNorm2d(skip),
                                     nn.ReLU(inplace=True)))
            c = skip
        self.decoder = nn.ModuleList(ups)
        self.mask = nn.Conv2d(c, classes, 1)

    def features(self, x):
        if self.endpoints:
            return list(self.encoder.extract_endpoints(x).values())[:-1]  # drop the head's reduction_6
        return list(self.encoder(x))

    def forward(self, x):
        feats = self.features(x)
        d = feats[-1]
        n, c, h, w = d.shape
        # .view(): what a channels_last d cannot do; on a channels_last input (where eager hands back
        # channels_last maps too) the decoder reshapes instead
        flat = d.view(n, c * h * w) if x.is_contiguous() else d.reshape(n, c * h * w)
        ctx = self.context(flat.view(n, c, h * w).mean(-1).view(n, c, 1, 1))
        d = d + ctx
        for up, skip in zip(self.decoder, reversed(feats[:-1])):
            d = nn.functional.interpolate(d, size=skip.shape[-2:], mode="nearest")
            d = up(torch.cat([d, skip], 1))
        return self.mask(d)


class Encoder(nn.Module):
    """The encoder half of a :class:`UNet`: its forward returns the feature maps the decoder reads."""

    def __init__(self, unet: UNet):
        super().__init__()
        self.unet = unet

    def forward(self, x):
        return self.unet.features(x)


def spec_phi(spec: str) -> Optional[float]:
    """The φ of the EfficientNet-B0…B7 a :func:`model_from_spec` spec builds (B3 → 3); None for one of its
    cousins (EfficientNet-Lite, MobileNetV2 / V3, MNASNet: not on the compound-scaling path); a ValueError for
    anything else."""
    import re

    if spec.startswith("ek:"):
        return float(spec.split(":")[1])
    m = re.search(r"efficientnet[-_]b(\d)", spec)
    if m is not None:
        return float(m.group(1))
    if re.search(r"efficientnet_lite\d|mobilenet|mnasnet", spec) is None:
        raise ValueError(f"spec {spec!r} names no EfficientNet-B0…B7 nor one of its cousins (EfficientNet-Lite, "
                         f"MobileNetV2 / V3, MNASNet)")
    return None


def _timm(name: str, **kw) -> nn.Module:
    import timm
    return timm.create_model(name, pretrained=False, **kw)


def _lukemelas(name: str, image_size=None) -> nn.Module:
    from efficientnet_pytorch import EfficientNet as LukemelasEfficientNet
    kw = {} if image_size is None else {"image_size": image_size}
    return LukemelasEfficientNet.from_name(name, **kw)


def model_from_spec(spec: str, seed: int = 0, calibration_size=(2, 3, 128, 128)):
    """``(model, resolution)``: a randomly initialised, BN-calibrated eval model for ``spec`` and the input
    size it was designed for:

    * ``ek:PHI`` — this package's EfficientNet (``ek:0``, ``ek:2.5``);
    * ``timm:NAME`` — a timm classifier; ``timm:NAME:features`` its ``features_only`` backbone,
      ``timm:NAME:features:1,3`` with those ``out_indices``;
    * ``tv:NAME`` — a torchvision classifier; ``tv:NAME:features`` its ``.features``;
    * ``lukemelas:NAME`` — efficientnet_pytorch's ``EfficientNet.from_name(NAME)`` (static SAME padding
      for its image size); ``lukemelas:NAME:SIZE`` built for another image size;
    * ``unet:timm:NAME`` / ``unet:lukemelas:NAME`` — :class:`UNet` with that encoder;
      ``unet-encoder:...`` — the same U-Net's encoder alone (:class:`Encoder`: what it hands the decoder).
    """
    if not isinstance(spec, str):
        raise TypeError(f"spec must be a str such as 'timm:efficientnet_b0:features', got {type(spec).__name__}")
    parts = spec.split(":")
    lib, rest = parts[0], parts[1:]
    torch.manual_seed(seed)
    if lib == "ek" and len(rest) == 1:
        from .scaling import compound
        phi = float(rest[0])
        model = build_model(int(phi) if phi.is_integer() else phi, seed=seed)
        return model, compound(phi).resolution
    if lib == "timm" and 1 <= len(rest) <= 3 and (len(rest) == 1 or rest[1] == "features"):
        kw = {}
        if len(rest) >= 2:
            kw["features_only"] = True
        if len(rest) == 3:
            kw["out_indices"] = tuple(int(i) for i in rest[2].split(","))
        model = _timm(rest[0], **kw)
        res = _timm(rest[0]).pretrained_cfg.get("input_size", (3, 224, 224))[-1] if kw else \
            model.pretrained_cfg.get("input_size", (3, 224, 224))[-1]
    elif lib == "tv" and 1 <= len(rest) <= 2 and (len(rest) == 1 or rest[1] == "features"):
        import torchvision
        model = getattr(torchvision.models, rest[0])()
        res = _tv_resolution(rest[0])
        if len(rest) == 2:
            model = model.features
    elif lib == "lukemelas" and 1 <= len(rest) <= 2:
        size = int(rest[1]) if len(rest) == 2 else None
        model = _lukemelas(rest[0], size)
        res = size or model._global_params.image_size
    elif lib in ("unet", "unet-encoder") and len(rest) == 2 and rest[0] in ("timm", "lukemelas"):
        if rest[0] == "timm":
            enc = _timm(rest[1], features_only=True)
            model = UNet(enc, enc.feature_info.channels())
            res = 256
        else:
            enc = _lukemelas(rest[1], 256)
            with torch.no_grad():
                chans = [t.shape[1] for t in enc.eval().extract_endpoints(torch.zeros(1, 3, 64, 64)).values()][:-1]
            model = UNet(enc, chans, endpoints=True)
            res = 256
        if lib == "unet-encoder":
            randomize_bn_(model.eval(), seed=seed, calibration_size=calibration_size)
            return Encoder(model).eval(), int(res)
    else:
        raise ValueError(f"spec must be ek:PHI, timm:NAME[:features[:I,J]], tv:NAME[:features], "
                         f"lukemelas:NAME[:SIZE] or unet[-encoder]:timm|lukemelas:NAME, got {spec!r}")
    model.eval()
    randomize_bn_(model, seed=seed, calibration_size=calibration_size)
    return model.eval(), int(res)


def _tv_resolution(name: str) -> int:
    from .scaling import PRESETS, compound
    tail = name.rsplit("_", 1)[-1]
    return compound(PRESETS.index(tail)).resolution if tail in PRESETS else 224
