"""End to end per φ: eager NCHW, eager channels_last, torch.compile, ONNX Runtime (when installed) and the
fused model (pytest-benchmark; batch 1, fp32 on the CPU, fp16 with CUDA graphs on a GPU).

Models and providers are built by the same code as `effnet-bench` (effnet_kernels.bench.e2e.make_providers).
Select with -k, e.g. `pytest benchmarks/test_e2e.py --benchmark-only -k "fused or eager_cl"`.
"""
import pytest
import torch

from effnet_kernels.bench.e2e import PROVIDERS, make_providers
from effnet_kernels.testing import build_model
from effnet_kernels.timing import default_device
from effnet_kernels.scaling import compound

DEVICE = default_device()
DTYPE = torch.float16 if DEVICE.type == "cuda" else torch.float32


@pytest.fixture(scope="module", params=range(8), ids=lambda p: f"b{p}")
def model_and_input(request):
    phi = request.param
    res = compound(phi).resolution
    return phi, build_model(phi, DEVICE, DTYPE), torch.randn(1, 3, res, res).to(DEVICE, DTYPE)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_e2e(benchmark, model_and_input, provider):
    phi, model, x = model_and_input
    made = make_providers(model, x, [provider], graphs=DEVICE.type == "cuda")
    if provider in made["skipped"]:
        pytest.skip(made["skipped"][provider])
    assert not made["errors"], made["errors"]
    fn = made["calls"][provider]
    if DEVICE.type == "cuda":
        call = fn
        fn = lambda: (call(), torch.cuda.synchronize(DEVICE))  # noqa: E731  (time the GPU work, not the launch)
    benchmark.extra_info.update(phi=phi, provider=provider, device=str(DEVICE), dtype=str(DTYPE))
    with torch.inference_mode():
        benchmark.pedantic(fn, warmup_rounds=1, rounds=5 if phi < 5 else 3)
