"""Which C++ ISA path the CPU kernels run: the C++ default, or one forced for a block (tests)."""
from __future__ import annotations

import contextlib

from .._ext import require_cpp

forced = ""  # "" = the C++ default (EFFNET_ISA if set, else the best path that passes its self-tests)


def isa_info() -> dict:
    return dict(require_cpp("isa_info").isa_info())


@contextlib.contextmanager
def use_isa(isa: str):
    """Force one ISA path (a name of ``isa_info()["supported"]``) for the CPU kernels inside the block."""
    global forced
    supported = isa_info()["supported"]
    if isa not in supported:
        raise ValueError(f"isa must be one of the paths this CPU supports {supported}, got {isa!r}")
    previous, forced = forced, isa
    try:
        yield
    finally:
        forced = previous
