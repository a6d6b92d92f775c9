"""effnet_kernels: fast EfficientNet inference with fused kernels (C++ SIMD on CPU, Triton on GPU).

    import effnet_kernels as ek
    model = ek.efficientnet("b0").eval()          # or a real phi: ek.efficientnet(2.5)
    ek.compound(3)                                 # Scaling(width=1.2, depth=1.4, resolution=300, dropout=0.3)
    ek.model_cost("b0")                            # ModelCost(params=5288548, macs=...)
    ek.fit_phi(latency_ms=20)                      # the largest phi whose fused model runs in 20 ms here
    ek.compound(3, alpha=1.4, beta=1.05, gamma=1.1) # your own coefficients: pure powers, not the table
    ek.scaling_profile()                           # what depth, width and resolution each cost on this device
    ek.grid_search(evaluate, cost="latency")       # the paper's step 1, with measured latency as the budget
    ours = ek.from_torchvision(torchvision_model)  # or ek.from_timm(timm_model)
"""
from __future__ import annotations

import platform as _platform

from ._ext import has_cpp
from . import padding, reference, scaling, models, testing, ops  # noqa: F401  (submodules as attributes)
from .models import EfficientNet, efficientnet, from_timm, from_torchvision
from .scaling import compound, model_cost, round_filters, round_repeats

__version__ = "0.1.0"

__all__ = [
    "EfficientNet", "efficientnet", "from_torchvision", "from_timm", "compound", "model_cost",
    "round_filters", "round_repeats", "has_cpp", "info", "fuse", "fuse_report", "refresh", "fit_phi",
    "scaling_profile", "grid_search", "__version__",
]


from .fuse import fuse, fuse_report, refresh  # noqa: E402
from .budget import fit_phi  # noqa: E402
from .balance import scaling_profile  # noqa: E402
from .grid import grid_search  # noqa: E402


def info() -> dict:
    """What this install can run: versions, the compiled module, the CPU kernel path (ISA), the backends
    per device and the thread count the kernels will use (torch's)."""
    import torch

    from ._ext import IMPORT_ERROR, _C

    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    try:
        from .cpu import isa_info
        isa = isa_info()
    except RuntimeError:
        isa = None
    return {
        "effnet_kernels": __version__,
        "torch": torch.__version__,
        "triton": triton_version,
        "python": _platform.python_version(),
        "machine": _platform.machine(),
        "cpp_module": _C is not None,
        "cpp_module_error": None if IMPORT_ERROR is None else str(IMPORT_ERROR),
        "cpp_arch": getattr(_C, "arch", None),
        "isa": None if isa is None else isa["default"],  # the CPU kernel path in use
        "isa_supported": None if isa is None else isa["supported"],
        "isa_note": None if isa is None else isa["note"],  # why a supported path was passed over
        "backends": {"cpu": ops.available_backends("cpu"),
                     **({"cuda": ops.available_backends("cuda")} if torch.cuda.is_available() else {})},
        "threads": torch.get_num_threads(),
        # where the C++ kernels' threads come from: "openmp" (torch's runtime, the default) or "pool"
        "parallel_backend": None if isa is None else isa["parallel_backend"],
        "cuda": torch.cuda.is_available(),
    }
