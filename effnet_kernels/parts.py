"""The parts ``fuse()`` reads a module as (:mod:`effnet_kernels.graph`) and swaps in
(:mod:`effnet_kernels.swapped`), their BatchNorms folded into the convolutions in float64:

* :class:`ConvPart` — a dense k×k conv + BatchNorm (+ an activation, + its input): a stem, a head;
* :class:`BlockPart` — an MBConv block and its cousins: [expand 1×1 + BN + act] → depthwise k×k + BN + act →
  [squeeze-excitation (reduce, inner act, expand, gate)] → projection 1×1 + BN [+ the input]; or a fused-MBConv
  block (EfficientNetV2's early stages): dense k×k expand + BN + act → [SE] → projection 1×1 + BN [+ the input].

The activations the kernels apply (:data:`effnet_kernels.reference.ACTS`): SiLU (EfficientNet), ReLU
(MNASNet, MobileNetV3), ReLU6 (MobileNetV2, EfficientNet-Lite), Hardswish (MobileNetV3), none; SE gates
sigmoid and hardsigmoid (MobileNetV3's, with ReLU inside).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple, Union

import torch

__all__ = ["ConvPart", "BlockPart", "Part", "Pad", "Left"]

# A layer's padding: "same" (TensorFlow SAME from each input's size) or explicit (top, bottom, left, right).
Pad = Union[str, Tuple[int, int, int, int]]


class Left(Exception):
    """A module read as a part that the fused kernels cannot take; the message is the reason ``fuse_report``
    gives."""

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


@dataclass
class _Se:
    weights: Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
    inner: str
    gate: str


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
