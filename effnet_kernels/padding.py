"""The two padding conventions EfficientNet weights come with.

* ``"symmetric"`` — k//2 on every side (torchvision, timm ``efficientnet_*``);
* ``"same"`` — TensorFlow SAME (timm ``tf_efficientnet_*``, the original Google weights): the
  output is ceil(size / stride) and any odd total padding puts the extra pixel at the bottom/right.

For odd k both give the same output size; they differ only in where the padding goes when the stride
is 2 and the input size is even.
"""
from __future__ import annotations

import numbers
from typing import Tuple

PADDINGS = ("symmetric", "same")


def check_padding(padding, name: str = "padding") -> str:
    if not isinstance(padding, str):
        raise TypeError(f"{name} must be one of {PADDINGS}, got {type(padding).__name__} {padding!r}")
    if padding not in PADDINGS:
        raise ValueError(f"{name} must be one of {PADDINGS}, got {padding!r}")
    return padding


def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int >= {minimum}, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(value)


def pad_amounts(size: int, kernel: int, stride: int, padding: str) -> Tuple[int, int, int]:
    """(pad before, pad after, output size) along one spatial axis: ``size`` >= 1, odd ``kernel`` >= 1,
    ``stride`` >= 1."""
    size, stride = _check_int(size, "size", 1), _check_int(stride, "stride", 1)
    kernel = _check_int(kernel, "kernel", 1)
    if kernel % 2 != 1:
        raise ValueError(f"kernel must be odd (both conventions centre the window), got {kernel}")
    return pad_amounts_unchecked(size, kernel, stride, check_padding(padding))


def pad_amounts_unchecked(size, kernel: int, stride: int, padding: str) -> Tuple[int, int, int]:
    """pad_amounts without the checks, for callers that validated already (``size`` may be a SymInt under
    torch.compile / torch.export)."""
    if padding == "symmetric":
        p = kernel // 2
        return p, p, (size + 2 * p - kernel) // stride + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2, out
