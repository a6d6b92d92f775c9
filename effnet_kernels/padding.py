"""The two padding conventions EfficientNet weights come with.

* ``"symmetric"`` — k//2 on every side (torchvision, timm ``efficientnet_*``);
* ``"same"`` — TensorFlow SAME (timm ``tf_efficientnet_*``, the original Google weights): the
  output is ceil(size / stride) and any odd total padding puts the extra pixel at the bottom/right.

For odd k both give the same output size; they differ only in where the padding goes when the stride
is 2 and the input size is even.
"""
from __future__ import annotations

from typing import Tuple

PADDINGS = ("symmetric", "same")


def check_padding(padding, name: str = "padding") -> str:
    if not isinstance(padding, str):
        raise TypeError(f"{name} must be one of {PADDINGS}, got {type(padding).__name__} {padding!r}")
    if padding not in PADDINGS:
        raise ValueError(f"{name} must be one of {PADDINGS}, got {padding!r}")
    return padding


def pad_amounts(size: int, kernel: int, stride: int, padding: str) -> Tuple[int, int, int]:
    """(pad before, pad after, output size) along one spatial axis."""
    if padding == "symmetric":
        p = kernel // 2
        return p, p, (size + 2 * p - kernel) // stride + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2, out
