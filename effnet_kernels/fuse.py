"""``fuse(model)``: an EfficientNet as fused inference kernels — first cut (CPU, fp32).

Work in progress (the swap-in issue): this version takes this package's :class:`~effnet_kernels.models.
EfficientNet` at any φ, and torchvision's / timm's EfficientNets through :func:`~effnet_kernels.from_torchvision`
and :func:`~effnet_kernels.from_timm`; it runs on the CPU in fp32, channels_last end to end. Every weight
is folded (BatchNorm into the convolutions, in float64) and packed once, here, never per forward:

* stem: 3×3 stride-2 conv (torch's, BN folded) + Swish;
* each MBConv block: expand 1×1 as one GEMM on the NHWC view with the bias as its accumulate input, then
  Swish in place; :func:`~effnet_kernels.ops.dwconv_bias_swish_pool` (depthwise + BN + Swish, the SE pool
  in the same pass); the SE gate folded into the projection GEMM, with the residual as its accumulate input
  (:class:`effnet_kernels._cpu.SeProjection`);
* head 1×1 + Swish as a GEMM, global mean, classifier. Stochastic depth and dropout are identity.
Not yet: GPU, fp16/bf16, torch.compile / export of the fused model, refusing training mode on the result.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import ops
from ._cpu import SeProjection
from .models import ConvBNAct, EfficientNet, MBConv
from .padding import pad_amounts
from .reference import fold_bn

__all__ = ["fuse", "FusedEfficientNet"]


def _folded(m: ConvBNAct):
    bn = m.bn
    w, b = fold_bn(m.conv.weight.detach().double(), bn.weight.detach().double(), bn.bias.detach().double(),
                   bn.running_mean.double(), bn.running_var.double(), bn.eps)
    return w.float(), b.float()


def _gemm_nhwc(x: torch.Tensor, weight_t: torch.Tensor, bias: torch.Tensor, swish: bool) -> torch.Tensor:
    """1×1 conv as one GEMM on the channels_last view: (N·H·W, Cin) × (Cin, Cout) + bias (+ Swish)."""
    n, cin, h, w = x.shape
    cout = weight_t.shape[1]
    if not x.is_contiguous(memory_format=torch.channels_last):
        x = x.contiguous(memory_format=torch.channels_last)
    out = torch.empty_strided((n, cout, h, w), (h * w * cout, 1, w * cout, cout))
    torch.addmm(bias, x.permute(0, 2, 3, 1).reshape(-1, cin), weight_t, out=out.permute(0, 2, 3, 1).view(-1, cout))
    return F.silu(out, inplace=True) if swish else out


class _FusedBlock(nn.Module):
    def __init__(self, block: MBConv, padding: str):
        super().__init__()
        self.stride, self.padding, self.skip = block.spec.stride, padding, block.has_skip
        self.has_expand = block.expand is not None
        if self.has_expand:
            we, be = _folded(block.expand)
            self.register_buffer("expand_weight_t", we.reshape(we.shape[0], -1).t().contiguous())
            self.register_buffer("expand_bias", be)
        wd, bd = _folded(block.dw)
        self.register_buffer("dw_weight", wd.contiguous())
        self.register_buffer("dw_bias", bd)
        wp, bp = _folded(block.project)
        se = block.se
        self.se_projection = SeProjection(se.reduce.weight.detach(), se.reduce.bias.detach(),
                                          se.expand.weight.detach(), se.expand.bias.detach(),
                                          wp.reshape(wp.shape[0], -1), bp)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = _gemm_nhwc(x, self.expand_weight_t, self.expand_bias, True) if self.has_expand else x
        y, pooled = ops.dwconv_bias_swish_pool(e, self.dw_weight, self.dw_bias, self.stride, self.padding)
        return self.se_projection(y, pooled, x if self.skip else None)


class FusedEfficientNet(nn.Module):
    """The fused inference model :func:`fuse` returns (CPU, fp32, channels_last)."""

    def __init__(self, model: EfficientNet):
        super().__init__()
        self.padding = model.padding
        ws, bs = _folded(model.stem)
        self.register_buffer("stem_weight", ws.contiguous(memory_format=torch.channels_last))
        self.register_buffer("stem_bias", bs)
        self.blocks = nn.ModuleList(_FusedBlock(b, model.padding) for stage in model.blocks for b in stage)
        wh, bh = _folded(model.head)
        self.register_buffer("head_weight_t", wh.reshape(wh.shape[0], -1).t().contiguous())
        self.register_buffer("head_bias", bh)
        self.register_buffer("classifier_weight", model.classifier.weight.detach().clone())
        self.register_buffer("classifier_bias", model.classifier.bias.detach().clone())
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        if self.padding == "same":
            top, bottom, _ = pad_amounts(x.shape[-2], 3, 2, "same")
            left, right, _ = pad_amounts(x.shape[-1], 3, 2, "same")
            x = F.conv2d(F.pad(x, (left, right, top, bottom)), self.stem_weight, self.stem_bias, 2)
        else:
            x = F.conv2d(x, self.stem_weight, self.stem_bias, 2, 1)
        x = F.silu(x, inplace=True)
        for block in self.blocks:
            x = block(x)
        x = _gemm_nhwc(x, self.head_weight_t, self.head_bias, True)
        return F.linear(x.mean((2, 3)), self.classifier_weight, self.classifier_bias)


def fuse(model: nn.Module, inplace: bool = False) -> FusedEfficientNet:
    """A fused inference model with the same outputs as ``model`` (see the module docstring for what this
    first cut covers). torchvision / timm models go through the converters first."""
    if not isinstance(model, EfficientNet):
        from .models import from_timm, from_torchvision
        name = type(model).__module__
        if name.startswith("torchvision"):
            model = from_torchvision(model)
        elif name.startswith("timm"):
            model = from_timm(model)
        else:
            raise TypeError(f"fuse() takes effnet_kernels.EfficientNet, torchvision.models.efficientnet_b0…b7 or "
                            f"timm efficientnet_b0…b7 / tf_efficientnet_b0…b7, got {type(model).__name__} "
                            f"from {name}")
    if model.training:
        raise ValueError("fuse() needs a model in eval mode (BatchNorm running statistics): call model.eval() "
                         "first")
    p = next(model.parameters())
    if p.device.type != "cpu" or p.dtype != torch.float32:
        raise ValueError(f"this first fuse() runs fp32 CPU models, got {p.dtype} on {p.device}")
    with torch.no_grad():
        return FusedEfficientNet(model)
