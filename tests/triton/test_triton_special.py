"""Special values through the Triton kernels (the interpreter without a GPU): the same cases as
tests/test_special_values.py — NaN and ±inf propagate as eager PyTorch's do, ±1e30 saturates Swish and the
SE gate, denormals are not flushed."""
import pytest
import torch

from effnet_kernels import triton as tk

from helpers.special import (DW_CASES, PROJECT_SIZES, SE_SIZES, assert_like_eager, check_dw, check_gate, dw_case,
                             gate_case, project_case, se_case)
from helpers.triton import CUDA, DEVICE, needs_triton  # noqa: F401  (autouse fixture)

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the interpreter's numpy: exp overflow, inf*0


def on(*ts):
    return [None if t is None else t.to(DEVICE) for t in ts]


# The interpreter runs a depthwise kernel at ~1 s per case: two cases and the vector-tail channel count there.
@pytest.mark.parametrize("k,stride,padding", DW_CASES if CUDA else DW_CASES[:2])
@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
def test_dwconv_and_pool(k, stride, padding, fmt):
    for c in (19, 32) if CUDA else (19,):
        x, w, b, ref, bound = dw_case(c, k, stride, padding, fmt, seed=c + k + stride)
        y, pooled = tk.dwconv_bias_swish(*on(x, w, b), stride, padding, pool=True)
        check_dw(y, pooled, ref, bound, f"c={c}")


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
def test_squeeze_excite(fmt):
    for c, s in SE_SIZES:
        x, weights, ref = se_case(c, s, fmt)
        assert_like_eager(tk.squeeze_excite(*on(x, *weights)), ref, x.abs(), what=f"c={c}")


def test_se_gate():
    for c, s in SE_SIZES:
        pooled, weights, ref = gate_case(c, s)
        check_gate(tk.se_gate(*on(pooled, *weights)), ref, f"c={c}")


@pytest.mark.parametrize("where", ["y", "pooled", "residual"])
def test_se_project(where):
    for cin, cout, s in PROJECT_SIZES:
        args, ref, bound = project_case(cin, cout, s, torch.channels_last, where)
        assert_like_eager(tk.se_project(*on(*args)), ref, bound, what=f"{where} cin={cin}")
