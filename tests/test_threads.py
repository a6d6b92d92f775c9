"""The C++ kernels' threads: on torch's OpenMP runtime when torch uses OpenMP (the default), else the
package's pool; the same results, bit for bit, on either."""
import os
import subprocess
import sys

import torch

from effnet_kernels import ops
from effnet_kernels._ext import _C, _torch_openmp_library

from conftest import skip_or_fail


def test_kernels_share_torchs_openmp_threads():
    if _C is None:
        skip_or_fail("effnet_kernels._C is not built")
    library = _torch_openmp_library()
    if library is None:
        skip_or_fail(f"torch does not run on OpenMP here: {torch.__config__.parallel_info()}")
    assert _C.parallel_backend() == "openmp"
    assert _C.isa_info()["parallel_backend"] == "openmp"
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 96, 29, 31, generator=g).contiguous(memory_format=torch.channels_last)
    w, b = torch.randn(96, 1, 5, 5, generator=g), torch.randn(96, generator=g)
    sew = (torch.randn(24, 96, generator=g) / 10, torch.randn(24, generator=g), torch.randn(96, 24, generator=g) / 5,
           torch.randn(96, generator=g))
    runs = []
    for backend in (library, "", library):
        _C.set_openmp_runtime(backend)
        y, pooled = ops.dwconv_bias_swish_pool(x, w, b, 2)
        runs.append((y, pooled, ops.squeeze_excite(y, *sew)))
    assert _C.parallel_backend() == "openmp"
    for a, c in zip(runs[0], runs[1]):
        assert torch.equal(a, c)


def test_env_keeps_the_pool(tmp_path):
    if _C is None:
        skip_or_fail("effnet_kernels._C is not built")
    code = "import effnet_kernels._ext as e; print(e._C.parallel_backend())"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "EFFNET_THREADS": "pool"},
                         capture_output=True, text=True, check=True,
                         cwd=tmp_path)  # (not the source tree, whose package has no compiled module)
    assert out.stdout.strip() == "pool"
