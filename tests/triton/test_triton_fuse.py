"""fuse(model) through the GPU path: the registered ops with backend="triton" (the Triton depthwise and SE
kernels) and torch convolutions for the stem / expand / head, against the source model in float64.

On CUDA: the model on the GPU in fp32 and fp16 (the 2x-eager-error rule). Without a GPU: the same path on
CPU tensors through Triton's interpreter (TRITON_INTERPRET=1, scripts/test.sh): B0's first four blocks at a
small resolution."""
import copy
import dataclasses

import pytest
import torch

import effnet_kernels as ek
from effnet_kernels import swapped
from effnet_kernels.testing import randomize_bn_, rel_error

from helpers.triton import CUDA, DEVICE, needs_triton  # noqa: F401  (autouse fixture)


SIZE = (2, 3, 33, 31) if CUDA else (2, 3, 19, 17)


@pytest.fixture(scope="module")
def model():
    arch = ek.scaling.arch_spec("b0")
    if not CUDA:  # the interpreter runs every program instance in Python: B0's first four blocks only
        s = arch.stages  # (expand 1; stride 2; residual; k5 stride 2)
        arch = dataclasses.replace(arch, stages=(s[0], s[1], s[2][:1]))
    return randomize_bn_(ek.efficientnet(arch, padding="same").eval(), calibration_size=(4,) + SIZE[1:])


@pytest.mark.parametrize("dtype", [torch.float32] + ([torch.float16] if CUDA else []))
def test_fused_model_on_the_triton_path(model, dtype):
    x = torch.randn(*SIZE, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        ref = copy.deepcopy(model).double()(x.double())
        src = copy.deepcopy(model).to(DEVICE, dtype)
        eager_err = rel_error(src(x.to(DEVICE, dtype)).float().cpu(), ref)
        fused = ek.fuse(src, example_inputs=x.to(DEVICE, dtype))
        for m in fused.modules():
            if isinstance(m, swapped.FusedUnit):
                m.ops_backend = "triton"
        out = fused(x.to(DEVICE, dtype).contiguous(memory_format=torch.channels_last))
    assert out.device.type == DEVICE and out.dtype == dtype and out.shape == (2, 1000)
    err = rel_error(out.float().cpu(), ref)
    bound = max(1e-4, 2 * eager_err) if dtype == torch.float32 else 2 * eager_err
    assert err <= bound, f"{dtype}: fused (Triton path) vs float64 {err:.3g} > {bound:.3g}"


def test_swapped_blocks_on_the_triton_path():
    """Swapped modules of another library's model (timm's first three tf_ blocks, SAME padding, in an
    nn.Sequential) through the GPU path: each FusedMBConv runs the registered ops with backend="triton",
    within 4x the eager model's own error against float64."""
    import timm

    src = timm.create_model("tf_efficientnet_b0", features_only=True).eval()
    part = torch.nn.Sequential(src.conv_stem, src.bn1, src.blocks[0], src.blocks[1]).eval()
    randomize_bn_(part, calibration_size=(4,) + SIZE[1:])
    x = torch.randn(*SIZE, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        ref = copy.deepcopy(part).double()(x.double())
        part = part.to(DEVICE)
        eager_err = rel_error(part(x.to(DEVICE)).float().cpu(), ref)
        fused = ek.fuse(part, example_inputs=x.to(DEVICE))  # (sampled at the size it runs, as the other tests)
        assert len(ek.fuse_report(fused).swapped) == 3  # blocks 0.0, 1.0, 1.1 (a Sequential's conv + BN is left)
        for m in fused.modules():
            if isinstance(m, swapped.FusedUnit):
                m.ops_backend = "triton"
        out = fused(x.to(DEVICE))
    assert out.is_contiguous()  # an NCHW input: NCHW out, as eager
    assert rel_error(out.float().cpu(), ref) <= 4 * max(eager_err, 1e-7)


@pytest.mark.parametrize("name,blocks", [("mobilenetv3_large_100", 3), ("tf_efficientnet_lite0", 2)])
def test_cousin_blocks_on_the_triton_path(name, blocks):
    """The MBConv cousins' blocks through the GPU path: MobileNetV3's (ReLU and Hardswish, a ReLU /
    hardsigmoid SE) and EfficientNet-Lite's (ReLU6, no SE, SAME padding), each FusedMBConv's depthwise op and
    SE projection on the Triton kernels with their activation parameters, within 4x the eager model's own error
    against float64."""
    import timm

    src = timm.create_model(name, features_only=True).eval()
    stages = [b for s in src.blocks for b in s]
    picks = {"mobilenetv3_large_100": stages[4:7],  # ReLU + SE (hardsigmoid), twice; Hardswish, stride 2
             "tf_efficientnet_lite0": stages[1:3]}[name]
    part = torch.nn.Sequential(*picks).eval()
    cin = picks[0].conv_pw.in_channels if hasattr(picks[0], "conv_pw") and hasattr(picks[0], "conv_pwl") else \
        picks[0].conv_dw.in_channels
    # (MobileNetV3's three blocks expand to 120-240 channels: on the interpreter at batch 1 and 9 x 7, a
    # fifth of the program instances of batch 2 at 13 x 11)
    size = (2, cin, 13, 11) if CUDA or name != "mobilenetv3_large_100" else (1, cin, 9, 7)
    randomize_bn_(part, calibration_size=(4,) + size[1:])
    x = torch.randn(*size, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        ref = copy.deepcopy(part).double()(x.double())
        part = part.to(DEVICE)
        eager_err = rel_error(part(x.to(DEVICE)).float().cpu(), ref)
        fused = ek.fuse(part, example_inputs=x.to(DEVICE))  # (sampled at the size it runs, as the other tests)
        units = [m for m in fused.modules() if isinstance(m, swapped.FusedMBConv)]
        assert len(units) == blocks
        for m in units:
            m.ops_backend = "triton"
        out = fused(x.to(DEVICE))
    assert rel_error(out.float().cpu(), ref) <= 4 * max(eager_err, 1e-7)
