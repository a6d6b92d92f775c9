"""Eager EfficientNet latency per φ and memory format (pytest-benchmark; batch 1, fp32)."""
import pytest
import torch

from effnet_kernels import efficientnet
from effnet_kernels.bench import FORMATS
from effnet_kernels.scaling import compound
from effnet_kernels.testing import randomize_bn_


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("phi", [0, 1, 2, 3])
def test_eager_latency(benchmark, phi, fmt):
    res = compound(phi).resolution
    model = randomize_bn_(efficientnet(phi)).eval().to(memory_format=FORMATS[fmt])
    x = torch.randn(1, 3, res, res).contiguous(memory_format=FORMATS[fmt])
    benchmark.extra_info.update(phi=phi, resolution=res, format=fmt, threads=torch.get_num_threads())
    with torch.inference_mode():
        benchmark.pedantic(model, args=(x,), warmup_rounds=1, rounds=5)
