"""efficientnet_pytorch's EfficientNet as one chain.

Its ``extract_features`` / ``extract_endpoints`` call the stem, each block and the head from a Python loop, with
its one shared Swish module after the stem's and the head's conv + BN pair (each swapped as a FusedConv without
an activation: the Swish is called twice, so it cannot fold into either). When all of them are fused and its
Swish is a SiLU, the model gets a subclass whose two methods run the stem (+ SiLU), every block and the head
(+ SiLU) as one chain and write out only what they return (``forward`` calls ``extract_features``). Hooks on the
swapped modules or on ``_swish`` fall back to the library's own loop."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from ..swapped import FusedConv, FusedMBConv, WithActivation, _chain_units, run_chain_outputs
from ._chain import engine, fused_class, hookless


def _is_silu(m: nn.Module) -> bool:
    if type(m) is nn.SiLU:
        return True
    try:
        from efficientnet_pytorch.utils import MemoryEfficientSwish, Swish
    except ImportError:
        return False
    return type(m) in (Swish, MemoryEfficientSwish)


def plan(module: nn.Module):
    """The chain units (stem + SiLU, blocks, head + SiLU) of a fully fused EfficientNet whose _swish is a SiLU,
    else None."""
    if not hookless(module):
        return None
    stem, head, act = module._conv_stem, module._conv_head, module._swish
    if not (isinstance(stem, FusedConv) and isinstance(head, FusedConv)) or stem.act != "identity" \
            or head.act != "identity":
        return None
    if _chain_units(stem) is None or _chain_units(head) is None or not _is_silu(act) or not hookless(act) \
            or _chain_units(module._bn0) != [] or _chain_units(module._bn1) != []:
        return None
    blocks = []
    for b in module._blocks:
        if not isinstance(b, FusedMBConv) or _chain_units(b) is None:
            return None
        blocks.append(b)
    return [WithActivation(stem, "silu"), *blocks, WithActivation(head, "silu")]


def _chain(self):
    units = None if torch.compiler.is_compiling() else plan(self)
    return (None, None) if units is None else (units, engine(self))


def _extract_features(self, inputs):
    units, e = _chain(self)
    if units is None:
        return self._effnet_base.extract_features(self, inputs)
    return run_chain_outputs(e, units, inputs, [len(units) - 1])[0]


def _layer_h(units, i: int, h: int) -> int:
    """Output height of chain layer i for an input of height h (torch-free padding arithmetic)."""
    for u in units[:i + 1]:
        m = u.unit if isinstance(u, WithActivation) else u
        k, s, pad = m.kernel, m.stride, m.pad
        h = -(-h // s) if pad == "same" else (h + pad[0] + pad[1] - k) // s + 1
    return h


def _extract_endpoints(self, inputs):
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(f"inputs must be a torch.Tensor, got {type(inputs).__name__}")
    units, e = _chain(self)
    if units is None:
        return self._effnet_base.extract_endpoints(self, inputs)
    # the library's rule: the output before each block that shrinks the map, the last block's, the head's
    sizes = [_layer_h(units, i, inputs.shape[-2]) for i in range(len(units))]
    nb = len(units) - 2
    layers = []
    for i in range(1, nb + 1):  # block i - 1 of the library's loop is layer i
        if sizes[i - 1] > sizes[i]:
            layers.append(i - 1)
        elif i == nb:
            layers.append(i)
    layers.append(nb + 1)
    outs = run_chain_outputs(e, units, inputs, layers)
    return {f"reduction_{k + 1}": t for k, t in enumerate(outs)}


def efficientnet_class(base: type) -> type:
    return fused_class(base, "FusedLukemelasEfficientNet",
                       {"extract_features": _extract_features, "extract_endpoints": _extract_endpoints},
                       "efficientnet_pytorch's EfficientNet with its stem, blocks and head run as one fused chain.")


def adapt(m: nn.Module) -> Optional[str]:
    if not type(m).__module__.startswith("efficientnet_pytorch."):
        return None
    from efficientnet_pytorch.model import EfficientNet
    if type(m) is not EfficientNet:
        return None
    units = plan(m)
    if units is None:
        return None
    m.__class__ = efficientnet_class(EfficientNet)
    return f"one chain: the stem, {len(units) - 2} blocks and the head (extract_features, extract_endpoints)"


def pickled(name: str) -> Optional[type]:
    if name != "FusedLukemelasEfficientNet":
        return None
    from efficientnet_pytorch.model import EfficientNet
    return efficientnet_class(EfficientNet)
