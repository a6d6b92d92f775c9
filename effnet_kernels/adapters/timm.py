"""timm's EfficientNet and MobileNetV3 containers as one chain.

``EfficientNet`` / ``MobileNetV3`` (classifiers: every timm EfficientNet, Lite, MobileNetV2, MNASNet, ...):
``forward_features`` calls conv_stem, bn1, the stages (and EfficientNet's conv_head, bn2) one after the other;
swapped module by module that is several chains handing each other NCHW tensors. Fully fused, the model gets a
subclass whose ``forward_features`` runs them as one chain, and an EfficientNet's ``forward`` the global mean and
its classifier too. ``EfficientNetFeatures`` / ``MobileNetV3Features`` (``features_only=True``) loop over their
stages and keep the outputs in ``_stage_out_idx``: the subclass runs the stem and every block as one chain and
writes out only the kept maps. Anything that makes the plan inapplicable at call time (feature hooks, gradient
checkpointing, a child replaced, a hook on one) falls back to timm's own forward over the swapped modules."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from ..swapped import FusedUnit, _chain_units, run_chain_outputs
from ._chain import chain_method, engine, fused_class, head_after, hookless, is_avg_pool_1x1
from ._chain import with_head as add_head


def _stem_and_stages(module: nn.Module):
    """[stem, block units...] and the layer index where each stage ends, when the stem (+ bn1, act1 folded) and
    every stage are fused and nothing on the way is hooked; else None."""
    if getattr(module, "grad_checkpointing", False) or not hookless(module):
        return None
    stem = module.conv_stem
    if not isinstance(stem, FusedUnit) or _chain_units(stem) is None or _chain_units(module.bn1) != []:
        return None
    act = getattr(module, "act1", None)  # MobileNetV3Features: folded into the stem, else not a chain
    if act is not None and _chain_units(act) != []:
        return None
    if not hookless(module.blocks):
        return None
    units, ends = [stem], [0]
    for stage in module.blocks:
        sub = _chain_units(stage)
        if not sub:
            return None
        units += sub
        ends.append(len(units) - 1)
    return units, ends


def features_plan(module: nn.Module):
    """(units, layer index of each kept feature map) of a fully fused EfficientNetFeatures / MobileNetV3Features,
    else None."""
    if getattr(module, "feature_hooks", None) is not None:
        return None
    got = _stem_and_stages(module)
    if got is None:
        return None
    units, ends = got
    return units, [ends[i] for i in sorted(module._stage_out_idx) if i < len(ends)]  # (stages cut off: none)


def _global_mean(pool: nn.Module) -> bool:
    """SelectAdaptivePool2d('avg', flatten=True) around an AdaptiveAvgPool2d(1), nothing hooked."""
    inner = getattr(pool, "pool", None)
    return (type(pool).__name__ == "SelectAdaptivePool2d" and getattr(pool, "pool_type", None) == "avg"
            and hookless(pool) and inner is not None and is_avg_pool_1x1(inner)
            and getattr(pool, "flatten", None) is not None and hookless(pool.flatten))


def classifier_plan(module: nn.Module, with_head: bool = False):
    """The chain units of a fully fused EfficientNet / MobileNetV3 (stem, stages, EfficientNet's head conv);
    ``with_head``: an EfficientNet's with its classifier (a FusedHead after the global mean), else None."""
    got = _stem_and_stages(module)
    if got is None:
        return None
    units = got[0]
    if hasattr(module, "bn2"):  # EfficientNet: its head conv is part of forward_features
        head = module.conv_head
        if not isinstance(head, FusedUnit) or _chain_units(head) is None or _chain_units(module.bn2) != []:
            return None
        units.append(head)
    if with_head:
        if not hasattr(module, "bn2"):  # (MobileNetV3's conv_head runs on the pooled features)
            return None
        cls = head_after(module.classifier, _global_mean(module.global_pool), [])
        if cls is None or getattr(module, "drop_rate", 0.0) and module.training:
            return None
        units.append(cls)
    return units


def _features_forward(self, x):
    plan = None if torch.compiler.is_compiling() else features_plan(self)
    if plan is None:
        return self._effnet_base.forward(self, x)
    units, layers = plan
    return run_chain_outputs(engine(self), units, x, layers)


def features_class(base: type) -> type:
    return fused_class(base, f"Fused{base.__name__}", {"forward": _features_forward},
                       f"timm's {base.__name__} with its stem and stages run as one fused chain.")


def classifier_class(base: type) -> type:
    return fused_class(base, f"Fused{base.__name__}Chain",
                       {"forward_features": chain_method(classifier_plan, "forward_features"),
                        "forward": chain_method(classifier_plan, "forward", "_effnet_head_chain", with_head=True)},
                       f"timm's {base.__name__} with forward_features (and forward) run as one fused chain.")


def _classes():
    from timm.models.efficientnet import EfficientNet, EfficientNetFeatures
    from timm.models.mobilenetv3 import MobileNetV3, MobileNetV3Features
    return EfficientNet, EfficientNetFeatures, MobileNetV3, MobileNetV3Features


def adapt(m: nn.Module) -> Optional[str]:
    if not type(m).__module__.startswith("timm."):
        return None
    try:
        efficientnet, efficientnet_features, mobilenetv3, mobilenetv3_features = _classes()
    except ImportError:
        return None
    base = type(m)
    if base in (efficientnet_features, mobilenetv3_features):
        plan = features_plan(m)
        if plan is None:
            return None
        m.__class__ = features_class(base)
        units, layers = plan
        return f"one chain: the stem and {len(units) - 1} blocks, feature maps after layers {layers}"
    if base in (efficientnet, mobilenetv3):
        units = classifier_plan(m)
        if units is None:
            return None
        cls = base is efficientnet and add_head(m, "classifier", lambda: classifier_plan(m, True))
        m.__class__ = classifier_class(base)
        head = " and the head" if hasattr(m, "bn2") else ""
        return (f"one chain: the stem, {len(units) - 1 - bool(head)} blocks{head} (forward_features)"
                + (", the global mean and the classifier (forward)" if cls else ""))
    return None


def pickled(name: str) -> Optional[type]:
    """The fused subclass pickle asks for by ``name``, when it is one of this adapter's."""
    efficientnet, efficientnet_features, mobilenetv3, mobilenetv3_features = _classes()
    make = {"FusedEfficientNetFeatures": (features_class, efficientnet_features),
            "FusedMobileNetV3Features": (features_class, mobilenetv3_features),
            "FusedEfficientNetChain": (classifier_class, efficientnet),
            "FusedMobileNetV3Chain": (classifier_class, mobilenetv3)}.get(name)
    return None if make is None else make[0](make[1])
