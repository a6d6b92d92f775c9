"""Property-based fuzzing of the Triton kernels (backend="triton") against float64: the same random cases as
tests/test_fuzz.py (N, C, H, W including 1 and primes, k, stride, padding, memory formats, non-contiguous and
offset views). On CUDA the tensors go to the GPU; without one, Triton's interpreter runs them (a third of the
CPU example count: the interpreter is slow)."""
import pytest
import torch
from hypothesis import given, settings

from effnet_kernels import reference

from conftest import TRITON_INTERPRET
from test_fuzz import check_se, close64, dw_case, dw_inputs, se_case
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
    def on_device(fn):
        return lambda *args: fn(*map(dev, args)).cpu()

    check_se(case, on_device(tk.squeeze_excite), on_device(tk.se_gate), on_device(tk.se_project))
