"""Property-based fuzzing of the Triton kernels (backend="triton") against float64: the same random cases as
tests/test_fuzz.py (N, C, H, W including 1 and primes, k, stride, padding, memory formats, non-contiguous and
offset views). On CUDA the tensors go to the GPU; without one, Triton's interpreter runs them (a third of the
CPU example count: the interpreter is slow). The checks are tests/test_fuzz.py's: the float64 references
(the depthwise one pads with its own SAME rule), and for the SE gate the escape to 2x the eager fp32
reference's error, the eager reference being an independent computation here (torch on the CPU)."""
from hypothesis import given, settings

from conftest import TRITON_INTERPRET
from helpers.fuzz import check_se, close64, dw_case, dw_inputs, dw_ref64, se_case
from helpers.triton import DEVICE, needs_triton  # noqa: F401  (autouse fixture)

from effnet_kernels import triton as tk

# The Triton kernels keep the bounds they had (1e-5 norm-wise, 1e-4 of the largest magnitude element-wise; the
# SE gate's 1e-6 and its escape are test_fuzz's): the CPU measurement behind test_fuzz's TOL / ELEM does not
# cover the GPU's kernels.
TRITON_TOL, TRITON_ELEM = 1e-5, 1e-4
FUZZ = settings(max_examples=max(1, settings.default.max_examples // 3)) if TRITON_INTERPRET else settings()


def dev(t):
    return None if t is None else t.to(DEVICE)


@FUZZ
@given(case=dw_case())
def test_triton_dwconv_matches_float64(case):
    x, w, b = dw_inputs(case)
    ref, ref_pool = dw_ref64(x, w, b, case["stride"], case["padding"])
    y, pooled = tk.dwconv_bias_swish(dev(x), dev(w), dev(b), case["stride"], case["padding"], pool=True)
    assert y.shape == ref.shape and close64(y.cpu(), ref, TRITON_TOL, elem=TRITON_ELEM), case
    assert close64(pooled.cpu(), ref_pool, TRITON_TOL, elem=TRITON_ELEM), case


@FUZZ
@given(case=se_case())
def test_triton_se_matches_float64(case):
    def on_device(fn):
        return lambda *args: fn(*map(dev, args)).cpu()

    check_se(case, on_device(tk.squeeze_excite), on_device(tk.se_gate), on_device(tk.se_project), like_eager=True,
             tol=TRITON_TOL, elem=TRITON_ELEM)
