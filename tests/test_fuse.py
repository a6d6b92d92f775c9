"""fuse(): the first cut (CPU, fp32) — outputs match the source model (randomized BN statistics), for this
package's model at integer and fractional φ, and torchvision's / timm's through the converters."""
import pytest
import torch

import effnet_kernels as ek
from effnet_kernels.fuse import FusedEfficientNet, fuse
from effnet_kernels.testing import randomize_bn_, rel_error

from conftest import import_or_skip


def check(model, size=(2, 3, 97, 113), channels_last=False):
    randomize_bn_(model.eval(), calibration_size=(2, 3) + size[2:])
    fused = fuse(model)
    assert isinstance(fused, FusedEfficientNet)
    x = torch.randn(*size, generator=torch.Generator().manual_seed(1))
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        ref, out = model(x), fused(x)
    assert ref.abs().mean() > 1e-2, "logits too small to compare: BN statistics not randomized?"
    err = rel_error(out, ref)
    assert err <= 1e-4, f"fused vs source: rel err {err:.3g}"
    return fused


@pytest.mark.parametrize("arch,padding", [("b0", "symmetric"), (0.5, "same"), ("b3", "same")])
def test_ours(arch, padding):
    check(ek.efficientnet(arch, padding=padding))


def test_batch_one_and_channels_last_input():
    check(ek.efficientnet("b0"), size=(1, 3, 64, 71), channels_last=True)


def test_torchvision_and_timm():
    tv = import_or_skip("torchvision")
    timm = import_or_skip("timm")
    check(tv.models.efficientnet_b0())
    check(timm.create_model("tf_efficientnet_b0"))


def test_refusals():
    with pytest.raises(ValueError, match=r"call model.eval\(\)"):
        fuse(ek.efficientnet("b0").train())
    with pytest.raises(TypeError, match="fuse\\(\\) takes effnet_kernels.EfficientNet"):
        fuse(torch.nn.Linear(3, 3))
