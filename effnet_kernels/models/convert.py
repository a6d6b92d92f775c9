"""Weight converters: torchvision's ``efficientnet_b*`` and timm's ``efficientnet_b*`` / ``tf_efficientnet_b*``
into this package's EfficientNet. Each maps our state-dict prefixes to the source family's, block by block,
and refuses a state dict whose keys or shapes do not match."""
from __future__ import annotations

from typing import Dict, Iterable, List, Mapping, Optional, Tuple

import torch
import torch.nn as nn

from ..padding import check_padding
from ..scaling import PRESETS, ArchSpec, arch_spec
from .efficientnet import EfficientNet, _check_bn_eps

__all__ = ["from_torchvision", "from_timm"]


_BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _conv_bn(ours: str, conv: str, bn: str) -> List[Tuple[str, str]]:
    return [(f"{ours}.conv.weight", f"{conv}.weight")] + [(f"{ours}.bn.{k}", f"{bn}.{k}") for k in _BN_KEYS]


def _se(ours: str, reduce: str, expand: str) -> List[Tuple[str, str]]:
    return [(f"{ours}.reduce.{k}", f"{reduce}.{k}") for k in ("weight", "bias")] + \
           [(f"{ours}.expand.{k}", f"{expand}.{k}") for k in ("weight", "bias")]


def _torchvision_keys(spec: ArchSpec) -> List[Tuple[str, str]]:
    keys = _conv_bn("stem", "features.0.0", "features.0.1")
    for s, stage in enumerate(spec.stages):
        for i, b in enumerate(stage):
            ours, src = f"blocks.{s}.{i}", f"features.{s + 1}.{i}.block"
            j = 0
            if b.expand_ratio != 1:
                keys += _conv_bn(f"{ours}.expand", f"{src}.0.0", f"{src}.0.1")
                j = 1
            keys += _conv_bn(f"{ours}.dw", f"{src}.{j}.0", f"{src}.{j}.1")
            keys += _se(f"{ours}.se", f"{src}.{j + 1}.fc1", f"{src}.{j + 1}.fc2")
            keys += _conv_bn(f"{ours}.project", f"{src}.{j + 2}.0", f"{src}.{j + 2}.1")
    n = len(spec.stages) + 1
    keys += _conv_bn("head", f"features.{n}.0", f"features.{n}.1")
    keys += [("classifier.weight", "classifier.1.weight"), ("classifier.bias", "classifier.1.bias")]
    return keys


def _timm_keys(spec: ArchSpec) -> List[Tuple[str, str]]:
    keys = _conv_bn("stem", "conv_stem", "bn1")
    for s, stage in enumerate(spec.stages):
        for i, b in enumerate(stage):
            ours, src = f"blocks.{s}.{i}", f"blocks.{s}.{i}"
            se = _se(f"{ours}.se", f"{src}.se.conv_reduce", f"{src}.se.conv_expand")
            if b.expand_ratio == 1:  # timm's DepthwiseSeparableConv
                keys += _conv_bn(f"{ours}.dw", f"{src}.conv_dw", f"{src}.bn1") + se
                keys += _conv_bn(f"{ours}.project", f"{src}.conv_pw", f"{src}.bn2")
            else:  # timm's InvertedResidual
                keys += _conv_bn(f"{ours}.expand", f"{src}.conv_pw", f"{src}.bn1")
                keys += _conv_bn(f"{ours}.dw", f"{src}.conv_dw", f"{src}.bn2") + se
                keys += _conv_bn(f"{ours}.project", f"{src}.conv_pwl", f"{src}.bn3")
    keys += _conv_bn("head", "conv_head", "bn2")
    keys += [("classifier.weight", "classifier.weight"), ("classifier.bias", "classifier.bias")]
    return keys


_FAMILIES = {"torchvision": _torchvision_keys, "timm": _timm_keys}


def _expected_shapes(spec: ArchSpec, num_classes: int) -> Dict[str, torch.Size]:
    with torch.device("meta"):
        model = EfficientNet(spec, num_classes)
    return {k: v.shape for k, v in model.state_dict().items()}


def _num_classes(sd: Mapping[str, torch.Tensor], family: str) -> int:
    key = "classifier.1.weight" if family == "torchvision" else "classifier.weight"
    if key not in sd:
        some = ", ".join(repr(k) for k in list(sd)[:3]) + (", …" if len(sd) > 3 else "")
        raise ValueError(f"source must be a {family} EfficientNet-B0…B7 state dict, which has {key!r}; got a "
                         f"state dict of {len(sd)} keys without it ({some or 'empty'})")
    return int(sd[key].shape[0])


def _mismatches(sd: Mapping[str, torch.Tensor], spec: ArchSpec, family: str, num_classes: int) -> List[str]:
    mapping = _FAMILIES[family](spec)
    shapes = _expected_shapes(spec, num_classes)
    problems = []
    for ours, theirs in mapping:
        if theirs not in sd:
            problems.append(f"missing key {theirs!r}")
        elif tuple(sd[theirs].shape) != tuple(shapes[ours]):
            problems.append(f"{theirs!r} has shape {tuple(sd[theirs].shape)}, expected {tuple(shapes[ours])}")
    extra = set(sd) - {theirs for _, theirs in mapping}
    problems += [f"unexpected key {k!r}" for k in sorted(extra)]
    return problems


def _convert(sd: Mapping[str, torch.Tensor], family: str, arch, padding: str,
             bn_eps: Optional[float]) -> EfficientNet:
    """Find the arch whose keys and shapes ``sd`` matches and load it (bn_eps None: the arch's preset)."""
    if not isinstance(sd, Mapping):
        raise TypeError(f"source must be a {family} EfficientNet module or its state dict, got {type(sd).__name__}")
    if arch is not None:
        arch = arch_spec(arch)  # a bad arch is named as such before the state dict is looked at
    num_classes = _num_classes(sd, family)
    candidates: Iterable = PRESETS if arch is None else [arch]
    first_problems = None
    for candidate in candidates:
        spec = arch_spec(candidate)
        problems = _mismatches(sd, spec, family, num_classes)
        if not problems:
            eps = spec.default_bn_eps if bn_eps is None else bn_eps
            model = EfficientNet(spec, num_classes, padding, eps)
            model.load_state_dict({ours: sd[theirs] for ours, theirs in _FAMILIES[family](spec)})
            return model
        if first_problems is None:
            first_problems = (spec.name, problems)
    guess = [p for p in PRESETS if not _mismatches(sd, arch_spec(p), family, num_classes)] if arch is not None else []
    name, problems = first_problems
    what = f"EfficientNet-{name}" if arch is not None else f"any {family} EfficientNet of {', '.join(PRESETS)}"
    hint = f"; it matches {guess[0]}: pass arch={guess[0]!r}" if guess else ""
    shown = "; ".join(problems[:3]) + (f"; … {len(problems) - 3} more" if len(problems) > 3 else "")
    raise ValueError(f"source must be a state dict of {what}, got one that does not match ({shown}){hint}")


def _first_bn_eps(module: nn.Module) -> float:
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            return float(m.eps)
    raise ValueError(f"source module {type(module).__name__} has no BatchNorm layer: not an EfficientNet")


def from_torchvision(source, arch=None, bn_eps: Optional[float] = None) -> EfficientNet:
    """Load a torchvision ``efficientnet_b0``…``b7`` (module or state dict) into :class:`EfficientNet`.

    ``arch`` is inferred from the weights' shapes when ``None``. BN eps is read from a module; for a
    state dict it defaults to torchvision's preset for the arch (1e-5 for B0–B4, 1e-3 for B5–B7).
    """
    if isinstance(source, nn.Module):
        if type(source).__name__ != "EfficientNet" or not hasattr(source, "features"):
            raise TypeError(f"source must be a torchvision EfficientNet (efficientnet_b0…b7) or its state dict, "
                            f"got {type(source).__name__}")
        eps = _first_bn_eps(source)
        sd = source.state_dict()
    else:
        sd, eps = source, None
    if bn_eps is not None:
        eps = _check_bn_eps(bn_eps)
    model = _convert(sd, "torchvision", arch, "symmetric", eps)
    return model.eval() if isinstance(source, nn.Module) and not source.training else model


def from_timm(source, arch=None, padding: Optional[str] = None, bn_eps: Optional[float] = None) -> EfficientNet:
    """Load a timm ``efficientnet_b*`` / ``tf_efficientnet_b*`` (module or state dict).

    From a module, padding (``"same"`` for the tf_ variants) and BN eps are read off the model. A state
    dict carries neither: pass ``padding="same", bn_eps=1e-3`` for tf_ weights (defaults: symmetric, 1e-5,
    as timm's ``efficientnet_b*``).
    """
    if isinstance(source, nn.Module):
        if not hasattr(source, "conv_stem") or not hasattr(source, "blocks"):
            raise TypeError(f"source must be a timm EfficientNet (efficientnet_b*/tf_efficientnet_b*) or its "
                            f"state dict, got {type(source).__name__}")
        found_pad = "same" if "Same" in type(source.conv_stem).__name__ else "symmetric"
        found_eps = _first_bn_eps(source)
        if padding is not None and check_padding(padding) != found_pad:
            raise ValueError(f"padding={padding!r} contradicts the source model, which uses {found_pad!r} padding")
        padding = found_pad
        eps = found_eps if bn_eps is None else _check_bn_eps(bn_eps)
        sd = source.state_dict()
    else:
        padding = check_padding(padding) if padding is not None else "symmetric"
        eps = 1e-5 if bn_eps is None else _check_bn_eps(bn_eps)
        sd = source
    model = _convert(sd, "timm", arch, padding, eps)
    return model.eval() if isinstance(source, nn.Module) and not source.training else model

