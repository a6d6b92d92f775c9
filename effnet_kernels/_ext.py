"""Loads the compiled C++ module once; warns once, naming the build command, when it is missing."""
from __future__ import annotations

import warnings

BUILD_COMMAND = "pip install .  (from the effnet_kernels source tree; needs g++ and cmake)"

try:
    from . import _C  # type: ignore[attr-defined]
    IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    _C = None
    IMPORT_ERROR = exc
    warnings.warn(
        f"effnet_kernels: the compiled C++ module effnet_kernels._C is not available ({exc}); "
        f"CPU ops fall back to the pure-PyTorch reference (slow). Build it with: {BUILD_COMMAND}",
        RuntimeWarning,
        stacklevel=2,
    )


def has_cpp() -> bool:
    return _C is not None


def require_cpp(what: str):
    if _C is None:
        raise RuntimeError(f"{what} needs the compiled module effnet_kernels._C, which failed to import "
                           f"({IMPORT_ERROR}). Build it with: {BUILD_COMMAND}")
    return _C
