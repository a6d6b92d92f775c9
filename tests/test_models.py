import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import effnet_kernels as ek
from effnet_kernels.models import ConvBNAct, MBConv, SqueezeExcite, stochastic_depth
from effnet_kernels.testing import randomize_bn_, rel_error

from conftest import TORCHVISION_PARAMS, import_or_skip

@pytest.mark.parametrize("phi", range(8))
def test_param_counts_equal_torchvision(phi):
    with torch.device("meta"):
        model = ek.efficientnet(f"b{phi}")
    assert sum(p.numel() for p in model.parameters()) == TORCHVISION_PARAMS[phi]


def test_structure_and_bn_eps_presets():
    m = ek.efficientnet("b0")
    assert m.bn_eps == 1e-5 and all(b.eps == 1e-5 for b in m.modules() if isinstance(b, nn.BatchNorm2d))
    assert ek.efficientnet("b5", num_classes=3).bn_eps == 1e-3
    assert ek.efficientnet("b1", bn_eps=1e-3).bn_eps == 1e-3
    blocks = [b for b in m.modules() if isinstance(b, MBConv)]
    assert len(blocks) == 16
    assert blocks[0].expand is None and isinstance(blocks[1].expand, ConvBNAct)
    # The swappable parts the fused kernels replace.
    for b in blocks:
        assert isinstance(b.dw, ConvBNAct) and b.dw.conv.groups == b.spec.mid_channels
        assert isinstance(b.se, SqueezeExcite) and b.se.reduce.out_channels == max(1, b.spec.in_channels // 4)
    assert [b.has_skip for b in blocks].count(True) == 9


@pytest.mark.parametrize("arch, shape, padding", [("b0", (1, 3, 224, 224), "symmetric"),
                                                  ("b0", (3, 3, 227, 233), "same"),
                                                  (0.5, (1, 3, 65, 64), "symmetric"),
                                                  (2.7, (3, 3, 31, 17), "same"),
                                                  ("b1", (1, 3, 1, 1), "symmetric")])
def test_forward_any_resolution_both_formats(arch, shape, padding):
    model = randomize_bn_(ek.efficientnet(arch, num_classes=7, padding=padding)).eval()
    x = torch.randn(shape)
    with torch.no_grad():
        y = model(x)
        y_cl = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    assert y.shape == (shape[0], 7) and torch.isfinite(y).all()
    assert y.abs().mean() > 1e-3  # randomized BN: logits are O(1), not ~1e-14
    assert rel_error(y_cl, y) < 1e-5


class Depthwise64(nn.Module):
    """A block's depthwise ConvBNAct recomputed independently: float64 F.conv2d on an explicitly padded input
    (the SAME rule written out here), eval BatchNorm from its running statistics, SiLU; ``bias_shift`` is
    added to the BN output. Counts its calls."""

    def __init__(self, dw: ConvBNAct, padding: str, bias_shift: float = 0.0):
        super().__init__()
        self.dw, self.padding, self.bias_shift, self.calls = dw, padding, bias_shift, 0

    def _pads(self, size: int, k: int, stride: int):
        if self.padding == "symmetric":
            return k // 2, k // 2
        total = max((-(-size // stride) - 1) * stride + k - size, 0)
        return total // 2, total - total // 2

    def forward(self, x):
        self.calls += 1
        conv, bn = self.dw.conv, self.dw.bn
        k, s = conv.kernel_size[0], conv.stride[0]
        (top, bottom), (left, right) = self._pads(x.shape[2], k, s), self._pads(x.shape[3], k, s)
        z = F.conv2d(F.pad(x.double(), (left, right, top, bottom)), conv.weight.double(), None, s, groups=conv.groups)
        scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
        z = (z - bn.running_mean.double()[:, None, None]) * scale[:, None, None] + bn.bias.double()[:, None, None]
        return F.silu(z + self.bias_shift).to(x.dtype)


@pytest.mark.parametrize("padding", ["symmetric", "same"])
def test_swapping_the_depthwise_submodule_changes_the_output(padding):
    """``block.dw`` is the depthwise conv + BN + Swish the model runs (what the fused kernels replace): it
    matches an independent float64 computation, the model's output follows a module swapped in for it, and
    a swapped-in module that shifts the BN bias by 0.01 gives the original model with that bias shifted."""
    model = randomize_bn_(ek.efficientnet("b0", num_classes=5, padding=padding)).eval()
    x = torch.randn(1, 3, 64, 64)
    block = model.blocks[2][0]  # k=5, stride 2 on a 16x16 input: SAME pads 1 / 2, symmetric 2 / 2
    dw = block.dw
    assert isinstance(dw, ConvBNAct) and dw.conv.kernel_size == (5, 5) and dw.conv.stride == (2, 2)
    seen = {}
    hook = dw.register_forward_hook(lambda m, inp, out: seen.update(x=inp[0].clone(), y=out.clone()))
    with torch.no_grad():
        ref = model(x)
        hook.remove()
        err = rel_error(seen["y"], Depthwise64(dw, padding)(seen["x"]))
        assert err <= 1e-6, f"the depthwise layer vs float64: {err:.3g}"
        block.dw = Depthwise64(dw, padding)
        err = rel_error(model(x), ref)
        assert block.dw.calls == 1 and err <= 1e-5, f"an equivalent depthwise swapped in: {err:.3g}"
        block.dw = Depthwise64(dw, padding, bias_shift=0.01)
        shifted = model(x)
        block.dw = dw
        dw.bn.bias += 0.01
        want = model(x)
        dw.bn.bias -= 0.01
    moved = rel_error(shifted, ref)
    assert moved > 1e-4, f"a BN bias +0.01 in one block moved the logits by {moved:.3g} only"
    assert rel_error(shifted, want) <= 1e-5, f"vs the model with that bias shifted: {rel_error(shifted, want):.3g}"


def test_stochastic_depth_training_only():
    x = torch.ones(1000, 2, 3, 3)
    assert stochastic_depth(x, 0.2, training=False) is x
    y = stochastic_depth(x, 0.2, training=True)
    kept = (y[:, 0, 0, 0] != 0).float().mean().item()
    assert 0.7 < kept < 0.9 and torch.allclose(y[y != 0], torch.full_like(y[y != 0], 1.25))
    model = ek.efficientnet("b0", num_classes=4).train()
    x = torch.randn(4, 3, 32, 32)
    assert model(x).shape == (4, 4)


@pytest.mark.parametrize("bad, exc, match", [
    ("b8", ValueError, "b0, b1, b2, b3, b4, b5, b6, b7"), ("resnet50", ValueError, "one of"),
    (-1.0, ValueError, "arch"), (float("nan"), ValueError, "arch"), (None, TypeError, "arch"),
])
def test_bad_arch(bad, exc, match):
    with pytest.raises(exc, match=match):
        ek.efficientnet(bad)


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_classes"):
        ek.efficientnet("b0", num_classes=0)
    with pytest.raises(ValueError, match="padding"):
        ek.efficientnet("b0", padding="valid")
    with pytest.raises(TypeError, match="padding"):
        ek.efficientnet("b0", padding=1)
    with pytest.raises(ValueError, match="bn_eps"):
        ek.efficientnet("b0", bn_eps=-1e-3)
    with pytest.raises(TypeError, match="bn_eps"):
        ek.efficientnet("b0", bn_eps="1e-3")


# ------------------------------------------------------------------------------------------------
# Converters: outputs match the source model within 1e-5 (fp32, eval, randomized BN statistics).

def _compare(src: nn.Module, ours: nn.Module, sizes=((1, 224, 224), (3, 227, 233))):
    src.eval(), ours.eval()
    for n, h, w in sizes:
        x = torch.randn(n, 3, h, w)
        with torch.no_grad():
            ref, got = src(x), ours(x)
        assert ref.abs().mean() > 1e-3, "randomized BN must give non-trivial logits"
        err = rel_error(got, ref)
        assert err <= 1e-5, f"relative error {err:.3g} at {n}x3x{h}x{w}"


@pytest.mark.parametrize("name", ["efficientnet_b0", "efficientnet_b5"])
def test_from_torchvision(name):
    tv = import_or_skip("torchvision")
    src = randomize_bn_(getattr(tv.models, name)(num_classes=11)).eval()
    ours = ek.from_torchvision(src)
    assert ours.spec.name == name[-2:] and ours.num_classes == 11
    assert ours.bn_eps == (1e-3 if name.endswith("b5") else 1e-5)
    sizes = ((1, 224, 224), (3, 227, 233)) if name.endswith("b0") else ((1, 131, 137),)
    _compare(src, ours, sizes)
    # A state dict works too, and arch may be given explicitly; bn_eps follows the preset.
    again = ek.from_torchvision(src.state_dict(), arch=name[-2:])
    assert again.bn_eps == ours.bn_eps
    _compare(src, again, ((1, 64, 80),))


@pytest.mark.parametrize("name, padding, eps", [("efficientnet_b0", "symmetric", 1e-5),
                                                ("tf_efficientnet_b0", "same", 1e-3),
                                                ("efficientnet_b5", "symmetric", 1e-5),
                                                ("tf_efficientnet_b5", "same", 1e-3)])
def test_from_timm(name, padding, eps):
    timm = import_or_skip("timm")
    src = randomize_bn_(timm.create_model(name, pretrained=False, num_classes=13)).eval()
    ours = ek.from_timm(src)
    assert (ours.padding, ours.bn_eps, ours.spec.name) == (padding, eps, name[-2:])
    sizes = ((1, 224, 224), (3, 227, 233)) if name.endswith("b0") else ((1, 131, 137),)
    _compare(src, ours, sizes)
    again = ek.from_timm(src.state_dict(), padding=padding, bn_eps=eps)
    _compare(src, again, ((1, 64, 80),))


def test_same_padding_matters_for_tf_weights():
    timm = import_or_skip("timm")
    src = randomize_bn_(timm.create_model("tf_efficientnet_b0", pretrained=False)).eval()
    wrong = ek.from_timm(src.state_dict(), padding="symmetric", bn_eps=1e-3).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert rel_error(wrong(x), src(x)) > 1e-3
    with pytest.raises(ValueError, match="contradicts"):
        ek.from_timm(src, padding="symmetric")


def test_converter_errors():
    tv = import_or_skip("torchvision")
    sd = tv.models.efficientnet_b0().state_dict()
    with pytest.raises(ValueError, match=r"EfficientNet-b1.*matches b0: pass arch='b0'"):
        ek.from_torchvision(sd, arch="b1")
    bad = dict(sd)
    bad["features.1.0.block.0.0.weight"] = torch.zeros(3, 3, 3, 3)
    with pytest.raises(ValueError, match=r"features\.1\.0\.block\.0\.0\.weight.*shape"):
        ek.from_torchvision(bad)
    with pytest.raises(ValueError, match="classifier"):
        ek.from_timm(sd)  # a torchvision state dict is not a timm one
    with pytest.raises(TypeError, match="torchvision EfficientNet"):
        ek.from_torchvision(nn.Linear(2, 2))
    with pytest.raises(TypeError, match="timm EfficientNet"):
        ek.from_timm(nn.Linear(2, 2))
    with pytest.raises(TypeError, match="state dict"):
        ek.from_torchvision([1, 2, 3])
