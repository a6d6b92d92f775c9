"""torch ↔ C++ bridge for the CPU kernels: allocates outputs, packs weights once, passes pointers.

The C++ core is torch-free: it receives data addresses, shapes and element strides. The thread count is
torch's (``torch.get_num_threads()``), read on every call. By op: ``dwconv`` (depthwise + bias + Swish
[+ pool]), ``se`` (squeeze-excitation, its gate, the SE folded into the projection), ``layers`` (prepared
layers: SeProjection, Conv1x1); ``_cache`` holds every cache, ``_isa`` the ISA choice. Arguments are
validated by ``effnet_kernels.ops._validate`` (the same checks every backend runs).
"""
from ._cache import clear_caches
from ._isa import isa_info, use_isa
from .dwconv import dwconv_bias_swish, try_fast
from .layers import Conv1x1, SeProjection
from .se import se_apply, se_gate, se_project, squeeze_excite, try_fast_se, try_fast_se_project

__all__ = ["clear_caches", "isa_info", "use_isa", "dwconv_bias_swish", "try_fast", "Conv1x1", "SeProjection",
           "se_apply", "se_gate", "se_project", "squeeze_excite", "try_fast_se", "try_fast_se_project"]
