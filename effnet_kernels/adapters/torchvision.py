"""torchvision's EfficientNet (V1 and V2) as one chain, and MNASNet's flat ``layers``.

``EfficientNet.forward`` runs ``features``, ``avgpool``, flatten and ``classifier`` (Dropout, Linear): with
``features`` fused whole (a FusedSequential) the model gets a subclass whose forward runs the features, the global
mean and the classifier as one chain (torchvision's own forward when a hook or a replaced child says otherwise).
MNASNet lays its stem, first separable block and head out flat in one ``nn.Sequential``: its conv + BN [+ act]
runs are read there (a plain ``nn.Sequential`` elsewhere is not: a decoder's conv + BN is not this package's
layer)."""
from __future__ import annotations

from typing import Optional, Tuple

import torch.nn as nn

from ..swapped import _chain_units
from ._chain import chain_method, fused_class, head_after, hookless, is_avg_pool_1x1, with_head


def _is_torchvision(m: nn.Module) -> bool:
    return type(m).__module__.startswith("torchvision.")


def plan(module: nn.Module):
    """Its features' chain units, then its classifier (Sequential(Dropout, FusedHead)) after the global mean;
    else None."""
    if not hookless(module):
        return None
    units = _chain_units(module.features)
    seq = module.classifier
    if not units or type(seq) is not nn.Sequential or len(seq) != 2 or not hookless(seq):
        return None
    head = head_after(seq[1], is_avg_pool_1x1(module.avgpool), [seq[0]])
    return None if head is None else units + [head]


def efficientnet_class(base: type) -> type:
    return fused_class(base, "FusedTvEfficientNet", {"forward": chain_method(plan, "forward", "_effnet_head_chain")},
                       "torchvision's EfficientNet with its features, global mean and classifier run as one fused "
                       "chain.")


def adapt(m: nn.Module) -> Optional[str]:
    if not _is_torchvision(m):
        return None
    try:
        from torchvision.models.efficientnet import EfficientNet
    except ImportError:
        return None
    if type(m) is not EfficientNet:
        return None
    units = _chain_units(m.features) if hookless(m) else None
    if units and with_head(m, "classifier.1", lambda: plan(m)):
        m.__class__ = efficientnet_class(EfficientNet)
        return f"one chain: features ({len(units)} layers), the global mean and the classifier (forward)"
    return None


def flat_sequentials(m: nn.Module) -> Tuple[str, ...]:
    """Names of m's flat nn.Sequential children whose conv + BN [+ act] runs fuse (MNASNet's ``layers``)."""
    if not _is_torchvision(m) or type(m).__name__ != "MNASNet":
        return ()
    from torchvision.models.mnasnet import MNASNet
    return ("layers",) if type(m) is MNASNet else ()


def pickled(name: str) -> Optional[type]:
    if name != "FusedTvEfficientNet":
        return None
    from torchvision.models.efficientnet import EfficientNet
    return efficientnet_class(EfficientNet)
