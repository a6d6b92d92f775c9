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


def _torch_openmp_library():
    """The path of the OpenMP runtime torch's CPU ops run on, when torch uses OpenMP and it is loaded."""
    import os

    import torch

    if "OpenMP" not in torch.__config__.parallel_info().split("ATen parallel backend:")[-1].split("\n")[0]:
        return None
    found = []
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split(None, 5)  # address perms offset dev inode [path]
                if len(fields) < 6:
                    continue
                path = fields[5].strip()
                if path.endswith(" (deleted)"):
                    continue
                name = os.path.basename(path)
                if name.startswith(("libgomp", "libiomp5")) and ".so" in name and path not in found:
                    found.append(path)
    except OSError:  # not Linux
        return None
    # torch's own copy (torch/lib, or torch.libs in auditwheel builds) before any other runtime loaded here
    found.sort(key=lambda path: "torch" not in path)
    return found[0] if found else None


def _share_torch_threads() -> None:
    """Run the C++ kernels' threads on torch's OpenMP runtime (see set_openmp_runtime in threadpool.h):
    measured on 2 cores, a fused block whose kernels ran on our own pool between torch GEMMs took up to 2×
    as long, each team's spinning threads taking the cores from the other. EFFNET_THREADS=pool keeps the
    package's own pool."""
    import os

    if _C is None or os.environ.get("EFFNET_THREADS", "") == "pool":
        return
    library = _torch_openmp_library()
    if library is None:
        return
    try:
        _C.set_openmp_runtime(library)
    except ValueError as exc:  # not loaded after all, or no GOMP_parallel: keep the pool
        warnings.warn(f"effnet_kernels: keeping the package's thread pool ({exc})", RuntimeWarning, stacklevel=2)


_share_torch_threads()


def has_cpp() -> bool:
    return _C is not None


def require_cpp(what: str):
    if _C is None:
        raise RuntimeError(f"{what} needs the compiled module effnet_kernels._C, which failed to import "
                           f"({IMPORT_ERROR}). Build it with: {BUILD_COMMAND}")
    return _C
