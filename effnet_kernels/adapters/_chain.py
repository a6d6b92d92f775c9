"""What the adapters share: the checks that a container's fused children may run as one chain (no hooks, a
global mean before a classifier), the classifier swapped for a :class:`~effnet_kernels.swapped.FusedHead` only
when the chain then runs it, each container's engines, and the fused subclasses (built once per base class,
found by pickle through :mod:`effnet_kernels.adapters`)."""
from __future__ import annotations

from typing import Callable, Dict, Iterable, Optional

import torch
import torch.nn as nn

from ..swapped import FusedHead, _Engine, run_chain

# the module whose __getattr__ gives pickle the fused subclasses by name
PICKLE_MODULE = "effnet_kernels.adapters"
_CLASSES: Dict[tuple, type] = {}


def hookless(m: nn.Module) -> bool:
    return not (m._forward_hooks or m._forward_pre_hooks or getattr(m, "_forward_hooks_with_kwargs", None))


def is_avg_pool_1x1(pool: nn.Module) -> bool:
    """pool is a hook-free nn.AdaptiveAvgPool2d to 1 x 1."""
    return type(pool) is nn.AdaptiveAvgPool2d and pool.output_size in (1, (1, 1)) and hookless(pool)


def head_after(classifier: nn.Module, pool_is_mean: bool, identities: Iterable[nn.Module]) -> Optional[FusedHead]:
    """classifier when it is a hook-free FusedHead after a global mean (``pool_is_mean``: the adapter's check of
    its pooling) and modules that are identities now, else None."""
    if type(classifier) is not FusedHead or not hookless(classifier) or not pool_is_mean:
        return None
    for m in identities:
        if not hookless(m) or not (type(m) is nn.Identity or (type(m) is nn.Dropout and not m.training)):
            return None
    return classifier


def with_head(container: nn.Module, attr: str, plan: Callable[[], object]) -> bool:
    """Swap container.<attr> (a hook-free nn.Linear: a whole classifier's) for a FusedHead when ``plan()`` then
    runs it in the chain; else leave it. Whether it did."""
    parent, _, name = attr.rpartition(".")
    owner = container.get_submodule(parent) if parent else container
    linear = getattr(owner, name, None)
    if type(linear) is not nn.Linear or not hookless(linear):
        return False
    head = FusedHead(linear, "Linear").to(device=linear.weight.device)
    setattr(owner, name, head)
    if plan() is None:
        setattr(owner, name, linear)
        return False
    return True


def engine(self: nn.Module, key: str = "_effnet_chain") -> _Engine:
    """The container's engine (``key``: one for each chain it runs, e.g. with and without its classifier)."""
    e = self.__dict__.get(key)
    if e is None:
        e = self.__dict__[key] = _Engine()
    return e


def chain_method(plan: Callable, name: str, key: str = "_effnet_chain", **plan_kwargs) -> Callable:
    """A ``name`` method (forward, forward_features) that runs ``plan(self, **plan_kwargs)``'s units as one chain on
    engine ``key``, or the library's own method when the plan does not apply now (None) or under torch.compile."""
    def method(self, x):
        units = None if torch.compiler.is_compiling() else plan(self, **plan_kwargs)
        if units is None:
            return getattr(self._effnet_base, name)(self, x)
        return run_chain(engine(self, key), units, x)
    method.__name__ = name
    return method


def _getstate(self):
    state = self.__dict__.copy()
    state.pop("_effnet_chain", None)  # the engines are rebuilt from the fused modules' buffers
    state.pop("_effnet_head_chain", None)
    return state


def fused_class(base: type, name: str, methods: Dict[str, Callable], doc: str) -> type:
    """The subclass of ``base`` named ``name`` with ``methods`` replaced (one per base class): what fuse() gives
    a container whose fused children run as one chain; ``_effnet_base.<method>`` is the library's own, for the
    calls the chain cannot take (hooks added later, a child replaced, torch.compile)."""
    cls = _CLASSES.get((base, name))
    if cls is None:
        cls = type(name, (base,), {**methods, "__getstate__": _getstate, "_effnet_base": base,
                                   "__module__": PICKLE_MODULE, "__qualname__": name, "__doc__": doc})
        _CLASSES[base, name] = cls
    return cls
