"""Property-based fuzzing (hypothesis) of every public op (dwconv_bias_swish, its pooled sibling, dwconv_bn_swish,
squeeze_excite, se_gate, se_project) against float64 references:
random N, C, H, W (1, primes, C off every vector width, H or W below k), k, stride, padding, memory format,
non-contiguous and offset views.

Per op: the default dispatch (``backend=None``) on fp32 tensors — in eager mode on CPU the fast path into the
C++ kernels, the path users take (``backend="cpp"`` runs the same kernels on the same examples and is not
fuzzed separately) — with twice the profile's example count; the default dispatch on float64 tensors (the
registered op, which runs the reference in float64); and ``backend="torch"`` (the eager fp32 reference). Each
against float64 under the fixed bounds below (the SE gate's one escape is documented there). The depthwise
reference here is written independently of the package (its own SAME padding, a sum over taps).

The example count is bounded for CI by the "ci" profile (tests/conftest.py); `pytest tests/test_fuzz.py
--hypothesis-profile=long` searches deeper. The Triton kernels get the same properties through the interpreter
in tests/triton/test_triton_fuzz.py; the cases, the float64 reference and the bounds are in tests/helpers/fuzz.py.
"""
import torch
from hypothesis import given

from effnet_kernels import ops
from effnet_kernels._ext import has_cpp

from helpers.fuzz import DEFAULT_FUZZ, check_dw, check_se, dw_case, se_case


@DEFAULT_FUZZ
@given(case=dw_case())
def test_dwconv_ops_match_float64(case):
    check_dw(case, ops.dwconv_bias_swish, ops.dwconv_bias_swish_pool, ops.dwconv_bn_swish)


@given(case=dw_case())
def test_dwconv_ops_on_float64_inputs_match_float64(case):
    # The default dispatch with float64 tensors: the registered op, which runs the reference in float64. (Most of
    # this test's time is the process's first call of a registered op, ~1 s, paid once.)
    check_dw(case, ops.dwconv_bias_swish, ops.dwconv_bias_swish_pool, ops.dwconv_bn_swish, torch.float64)


@given(case=dw_case())
def test_torch_backend_dwconv_ops_match_float64(case):
    check_dw(case, lambda *a: ops.dwconv_bias_swish(*a, backend="torch"),
             lambda *a: ops.dwconv_bias_swish_pool(*a, backend="torch"),
             lambda *a, **kw: ops.dwconv_bn_swish(*a, **kw, backend="torch"))


@DEFAULT_FUZZ
@given(case=se_case())
def test_se_ops_match_float64(case):
    # Without the compiled module the default dispatch runs the eager reference: then no escape.
    check_se(case, ops.squeeze_excite, ops.se_gate, ops.se_project, like_eager=has_cpp())


@given(case=se_case())
def test_se_ops_on_float64_inputs_match_float64(case):
    # The default dispatch with float64 tensors (the pooled means stay fp32): the registered ops.
    check_se(case, ops.squeeze_excite, ops.se_gate, ops.se_project, dtype=torch.float64)


@given(case=se_case())
def test_torch_backend_se_ops_match_float64(case):
    check_se(case, lambda *a: ops.squeeze_excite(*a, backend="torch"), lambda *a: ops.se_gate(*a, backend="torch"),
             lambda *a: ops.se_project(*a, backend="torch"), like_eager=False)
