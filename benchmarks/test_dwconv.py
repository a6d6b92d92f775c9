"""Fused depthwise conv + BN + Swish vs eager and the copy floor, per layer shape (pytest-benchmark).

Shapes and setup are shared with `python -m effnet_kernels.bench.dwconv` (effnet_kernels.bench.dwconv.DwSetup).
"""
import pytest
import torch

from effnet_kernels.bench.dwconv import DwSetup
from effnet_kernels.scaling import dw_layer_shapes

SHAPES = dw_layer_shapes(range(8))


@pytest.mark.parametrize("provider", ["eager", "fused", "copy"])
@pytest.mark.parametrize("fmt", ["nchw", "channels_last"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "c{}_{}x{}_k{}_s{}".format(*s))
def test_dwconv(benchmark, shape, fmt, provider):
    st = DwSetup(shape, 1, fmt)
    fn = {"eager": st.run_eager, "fused": st.run_fused, "copy": st.run_copy}[provider]
    benchmark.extra_info.update(shape=list(shape), format=fmt, provider=provider, bytes=st.in_bytes + st.out_bytes)
    with torch.inference_mode():
        benchmark(fn)
