"""Adapters: the only code in the package that knows a library's containers.

``fuse()`` reads and swaps blocks by what they compute (:mod:`effnet_kernels.graph`), whatever their class. One
thing the graph of a block cannot say is which container forward calls which blocks in a row and returns which
maps; knowing it lets a whole backbone run as **one** engine chain (one call, NHWC all the way, only the returned
maps written out) instead of one call per swapped module. That is all an adapter does, one per library:

* :mod:`.timm` — ``EfficientNet`` / ``MobileNetV3`` classifiers and their ``features_only`` backbones;
* :mod:`.torchvision` — ``EfficientNet`` (V1, V2); MNASNet's flat ``layers``;
* :mod:`.efficientnet_pytorch` — ``EfficientNet`` (``extract_features``, ``extract_endpoints``);
* :mod:`.effnet` — this package's own ``EfficientNet``;
* any ``nn.Sequential`` of fused modules (:class:`~effnet_kernels.swapped.FusedSequential`), generic.

A container no adapter knows (transformers' encoder loop, a detector's own backbone) keeps its forward: each
swapped block is then one engine call (docs/design.md measures what that costs). An adapted container gets a
subclass of its class (same attributes, ``isinstance`` still true) whose forward runs the chain while nothing
has changed its plan (a hook, a replaced child, training mode, torch.compile), and the library's own forward
otherwise."""
from __future__ import annotations

from typing import Optional, Tuple

import torch.nn as nn

from . import effnet, efficientnet_pytorch, timm, torchvision

ADAPTERS = (effnet, torchvision, efficientnet_pytorch, timm)

__all__ = ["ADAPTERS", "adapt", "flat_sequentials"]


def adapt(m: nn.Module) -> Optional[str]:
    """Give ``m`` the subclass that runs its fused children as one chain when an adapter knows its class and they
    are all fused: a description of the chain, else None."""
    for a in ADAPTERS:
        got = a.adapt(m)
        if got is not None:
            return got
    return None


def flat_sequentials(m: nn.Module) -> Tuple[str, ...]:
    """Names of m's flat nn.Sequential children whose conv + BN [+ act] runs are read one run at a time."""
    return torchvision.flat_sequentials(m)


def __getattr__(name: str):
    # pickle finds the fused subclasses by name: build one (importing its library) when a fresh process asks
    if name.startswith("Fused"):
        for a in ADAPTERS:
            try:
                cls = a.pickled(name)
            except ImportError:
                cls = None
            if cls is not None:
                return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
