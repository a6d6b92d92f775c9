"""Property-based fuzzing of the Triton kernels (backend="triton") against float64: the same random cases as
tests/test_fuzz.py (N, C, H, W including 1 and primes, k, stride, padding, memory formats, non-contiguous and
offset views). On CUDA the tensors go to the GPU; without one, Triton's interpreter runs them (a third of the
CPU example count: the interpreter is slow)."""
import pytest
import torch
from hypothesis import given, settings

from effnet_kernels import reference

from conftest import TRITON_INTERPRET
from test_fuzz import close64, dw_case, dw_inputs, se_case, se_inputs
from triton_common import DEVICE, needs_triton  # noqa: F401  (autouse fixture)

from effnet_kernels import triton as tk

FUZZ = settings(max_examples=max(1, settings.default.max_examples // 3)) if TRITON_INTERPRET else settings()


def dev(t):
    return None if t is None else t.to(DEVICE)


@FUZZ
@given(case=dw_case())
def test_triton_dwconv_matches_float64(case):
    x, w, b = dw_inputs(case)
    ref, ref_pool = reference.dwconv_bias_swish_pool(x.double(), w.double(), b.double(), case["stride"], case["padding"])
    y, pooled = tk.dwconv_bias_swish(dev(x), dev(w), dev(b), case["stride"], case["padding"], pool=True)
    assert y.shape == ref.shape and close64(y.cpu(), ref) and close64(pooled.cpu(), ref_pool), case


@FUZZ
@given(case=se_case())
def test_triton_se_matches_float64(case):
    x, se, proj, res = se_inputs(case)
    se64 = [t.double() for t in se]
    y = tk.squeeze_excite(dev(x), *map(dev, se))
    assert close64(y.cpu(), reference.squeeze_excite(x.double(), *se64), 1e-6), case
    pooled = x.double().mean((2, 3)).float()
    out = tk.se_project(dev(x), dev(pooled), *map(dev, se), *map(dev, proj), dev(res))
    ref = reference.se_project(x.double(), pooled.double(), *se64, *[t.double() for t in proj],
                               None if res is None else res.double())
    assert out.shape == ref.shape and close64(out.cpu(), ref), case
