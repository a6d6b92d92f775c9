"""Squeeze-excitation: the fused stand-alone SE vs eager torchvision SqueezeExcitation and the copy floor,
and B0's fused blocks with vs without their SE (pytest-benchmark).

Shapes and setup are shared with `python -m effnet_kernels.bench.se` (effnet_kernels.bench.se).
"""
import pytest
import torch

from effnet_kernels.bench.se import BlockSetup, SeSetup, model_blocks
from effnet_kernels.scaling import se_layer_shapes

SHAPES = se_layer_shapes(range(8))
BLOCKS = model_blocks(0)


@pytest.mark.parametrize("provider", ["eager", "fused", "copy"])
@pytest.mark.parametrize("fmt", ["nchw", "channels_last"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "c{}_s{}_{}x{}".format(*s[:4]))
def test_se(benchmark, shape, fmt, provider):
    st = SeSetup(shape, 1, fmt)
    fn = {"eager": st.run_eager, "fused": st.run_fused, "copy": st.run_copy}[provider]
    benchmark.extra_info.update(shape=list(shape), format=fmt, provider=provider, bytes=st.bytes)
    with torch.inference_mode():
        benchmark(fn)


@pytest.mark.parametrize("se", [True, False], ids=["with-se", "without-se"])
@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=lambda i: f"b0-block{i}")
def test_b0_block(benchmark, index, se):
    block, h, w = BLOCKS[index]
    st = BlockSetup(block, h, w, 1, seed=index)
    benchmark.extra_info.update(block=index, se=se)
    with torch.inference_mode():
        benchmark(st.run_with_se if se else st.run_without_se)
