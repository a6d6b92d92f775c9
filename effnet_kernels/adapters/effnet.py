"""This package's own EfficientNet (:mod:`effnet_kernels.models`) as one chain: ``forward_features`` (stem,
stages, head) and ``forward`` (then the global mean, the eval dropout and the classifier)."""
from __future__ import annotations

from typing import List, Optional

import torch.nn as nn

from ..swapped import FusedUnit, _chain_units
from ._chain import chain_method, fused_class, head_after, hookless, is_avg_pool_1x1, with_head


def plan(module: nn.Module, head: bool = False):
    """The chain units of a fully fused EfficientNet; ``head``: with its classifier (a FusedHead after a global
    mean and an eval dropout), else None."""
    if not hookless(module):
        return None
    units: List[FusedUnit] = []
    for name in ("stem", "blocks", "head"):
        sub = _chain_units(getattr(module, name))
        if not sub:
            return None
        units += sub
    if head:
        cls = head_after(module.classifier, is_avg_pool_1x1(module.pool), [module.dropout])
        if cls is None:
            return None
        units.append(cls)
    return units


def efficientnet_class(base: type) -> type:
    return fused_class(base, "FusedOursEfficientNet", {"forward_features": chain_method(plan, "forward_features"),
                        "forward": chain_method(plan, "forward", "_effnet_head_chain", head=True)},
                       "effnet_kernels' EfficientNet with forward_features (stem, stages, head) and forward run as "
                       "one fused chain.")


def adapt(m: nn.Module) -> Optional[str]:
    from ..models import EfficientNet
    if type(m) is not EfficientNet:
        return None
    units = plan(m)
    if units is None:
        return None
    head = with_head(m, "classifier", lambda: plan(m, head=True))
    m.__class__ = efficientnet_class(EfficientNet)
    return (f"one chain: the stem, {len(units) - 2} blocks and the head (forward_features)"
            + (", the global mean and the classifier (forward)" if head else ""))


def pickled(name: str) -> Optional[type]:
    if name != "FusedOursEfficientNet":
        return None
    from ..models import EfficientNet
    return efficientnet_class(EfficientNet)
