"""fuse() reads blocks by what they compute and proves every swap: models from transformers and a vendored copy
of a block under another name are swapped; edits that a class-based reader accepted but that change the
computation (another activation, stride, gate, pooling; a module appended; hooks; training-mode dropout) give
the source's outputs; writes after fuse are followed (versions, attributes, ek.refresh, EFFNET_CHECK_WEIGHTS);
the crash cases of the old reader run.

Outputs are compared with the source in float64: the fused model's error at most FUSED_VS_SOURCE times the
source's own fp32 error (floored at 1e-6 relative)."""
import copy

import pytest
import torch
import torch.nn as nn

import effnet_kernels as ek
from effnet_kernels import swapped
from effnet_kernels.float64 import float64_convs
from effnet_kernels.proof import errors
from effnet_kernels.testing import randomize_bn_
from conftest import import_or_skip
from helpers import FUSED_VS_SOURCE

ODD = (131, 137)


def _x(shape, seed=0, channels_last=False):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _out(o):
    return o.logits if hasattr(o, "logits") else o


def assert_like_source(model, fused, x, what="", k=FUSED_VS_SOURCE):
    with torch.inference_mode():
        y32, yf = _out(model(x)), _out(fused(x))
        with float64_convs():
            ref = _out(copy.deepcopy(model).double()(x.double()))
    er, _ = errors(y32, ref)
    fr, _ = errors(yf, ref)
    assert fr <= k * max(er, 1e-6), f"{what}: rel err {fr:.3g}, the source's own {er:.3g}"


def _calibrated(model, hw=(64, 64)):
    return randomize_bn_(model.eval(), calibration_size=(2, 3) + tuple(hw))


# ---- other libraries' blocks, read by what they compute ------------------------------------------------------

def test_transformers_efficientnet_b0_sized():
    tf = import_or_skip("transformers")
    # (100 classes: the relative error of 2 logits, the default, says little about the source's own rounding)
    cfg = tf.EfficientNetConfig(width_coefficient=1.0, depth_coefficient=1.0, image_size=224, hidden_dim=1280,
                                num_labels=100)
    model = _calibrated(tf.EfficientNetForImageClassification(cfg))
    fused = ek.fuse(model)
    report = ek.fuse_report(fused)
    blocks = [e for e in report.swapped if ".blocks." in e.path]
    assert len(blocks) == 16 and not report.left, report
    assert isinstance(fused.efficientnet.embeddings, swapped.FusedConv)  # pad + conv + BN + SiLU, one module
    # top_conv + top_bn + top_activation: siblings in the encoder, paired from its graph
    assert isinstance(fused.efficientnet.encoder.top_conv, swapped.FusedConv), report
    assert fused.efficientnet.encoder.top_conv.act == "silu", report
    assert_like_source(model, fused, _x((1, 3, 224, 224)), "transformers B0 224")
    assert_like_source(model, fused, _x((2, 3, *ODD), 1, channels_last=True), "transformers B0 131x137 NHWC")
    assert_like_source(model, fused, _x((1, 3, *ODD), 2), "transformers B0 131x137 NCHW")


def test_transformers_efficientnet_b7_small_input():
    tf = import_or_skip("transformers")
    model = _calibrated(tf.EfficientNetForImageClassification(tf.EfficientNetConfig()), (48, 48))
    x = _x((1, 3, 48, 48))
    fused = ek.fuse(model, example_inputs=x)
    report = ek.fuse_report(fused)
    assert len([e for e in report.swapped if ".blocks." in e.path]) == 55 and not report.left, report
    # 55 random blocks at 48x48 are ill-conditioned (the source's own fp32 error ~2e-4, each swap proven within
    # its bound at fuse time): a wider factor for the logits; a bias off by 0.01 is still ~5x past it
    assert_like_source(model, fused, x, "transformers B7 48x48", k=20)


@pytest.mark.parametrize("tf_padding", [True, False])
def test_transformers_mobilenet_v2(tf_padding):
    tf = import_or_skip("transformers")
    model = _calibrated(tf.MobileNetV2ForImageClassification(
        tf.MobileNetV2Config(tf_padding=tf_padding, num_labels=100)))
    fused = ek.fuse(model)
    report = ek.fuse_report(fused)
    assert not report.left and len(report.swapped) >= 17, report
    pads = {u.pad for u in fused.modules() if isinstance(u, swapped.FusedMBConv) and u.stride == 2}
    assert ("same" in pads) == tf_padding  # the stride-2 blocks pad TF SAME from each input's size
    assert_like_source(model, fused, _x((1, 3, 224, 224)), "transformers MobileNetV2 224")
    assert_like_source(model, fused, _x((1, 3, *ODD), 1, channels_last=tf_padding), "MobileNetV2 131x137")


class _UNet(nn.Module):
    """An encoder of vendored efficientnet_pytorch blocks (called with the drop-connect rate positionally, as
    some segmentation libraries do) and a decoder."""

    def __init__(self, source):
        super().__init__()
        self.stem = nn.Sequential(source._conv_stem, source._bn0, nn.SiLU())
        self.blocks = source._blocks[:6]
        for b in self.blocks:
            b.__class__ = _vendored(type(b))
        self.up = nn.Sequential(nn.Conv2d(80, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.out = nn.Conv2d(16 + 24, 2, 1)

    def forward(self, x):
        x = self.stem(x)
        skips = []
        for i, b in enumerate(self.blocks):
            x = b(x, 0.2 * i / len(self.blocks))  # positional drop_connect_rate
            skips.append(x)
        y = nn.functional.interpolate(self.up(x), size=skips[2].shape[-2:])
        return self.out(torch.cat([y, skips[2]], 1))


_VENDORED = {}


def _vendored(cls):
    if cls not in _VENDORED:
        _VENDORED[cls] = type("MBConvBlockCopy", (cls,), {"__module__": "medical_nets.backbones.effnet_copy"})
    return _VENDORED[cls]


def test_vendored_efficientnet_pytorch_blocks_in_a_unet():
    ep = import_or_skip("efficientnet_pytorch")
    source = ep.EfficientNet.from_name("efficientnet-b0")
    source.set_swish(memory_efficient=False)
    model = _calibrated(_UNet(source))
    fused = ek.fuse(model, example_inputs=_x((1, 3, 96, 96)))
    report = ek.fuse_report(fused)
    assert all(isinstance(b, swapped.FusedMBConv) for b in fused.blocks), report
    assert_like_source(model, fused, _x((1, 3, 96, 96), 1), "U-Net 96")
    assert_like_source(model, fused, _x((2, 3, *ODD), 2, channels_last=True), "U-Net 131x137")


# ---- edits that change the computation: never a silent wrong answer ------------------------------------------

def _ours_b0():
    return _calibrated(ek.efficientnet("b0"))


def _edit_head_relu(m):
    m.head.act = nn.ReLU()


def _edit_stride(m):
    m.blocks[4][0].dw.conv.stride = (1, 1)


def _edit_relu6(m):
    for name, mod in list(m.named_modules()):
        for cname, c in list(mod.named_children()):
            if type(c) is nn.SiLU:
                setattr(mod, cname, nn.ReLU6())


class _HardGateSE(nn.Module):
    def __init__(self, se):
        super().__init__()
        self.reduce, self.expand = se.reduce, se.expand

    def forward(self, x):
        return x * nn.functional.hardsigmoid(self.expand(nn.functional.silu(self.reduce(x.mean((2, 3), True)))))


def _edit_se_gate(m):
    m.blocks[2][0].se = _HardGateSE(m.blocks[2][0].se)


def _edit_max_pool(m):
    m.pool = nn.AdaptiveMaxPool2d(1)


def _edit_classifier_sequential(m):
    m.classifier = nn.Sequential(nn.Dropout(0.2), m.classifier)


def _edit_classifier_identity(m):
    m.classifier = nn.Identity()


def _edit_classifier_no_bias(m):
    m.classifier = nn.Linear(m.classifier.in_features, 10, bias=False)


def _edit_dropout_train(m):
    m.dropout = nn.Dropout(0.0).train()  # p = 0: the same outputs either way, but a training-mode module


EDITS = {f.__name__[6:]: f for f in (_edit_head_relu, _edit_stride, _edit_relu6, _edit_se_gate, _edit_max_pool,
                                     _edit_classifier_sequential, _edit_classifier_identity, _edit_classifier_no_bias,
                                     _edit_dropout_train)}


@pytest.mark.parametrize("edit", list(EDITS))
def test_edited_models_give_the_source_outputs(edit):
    model = _ours_b0()
    EDITS[edit](model)
    model = _calibrated(model)
    fused = ek.fuse(model, example_inputs=_x((1, 3, 64, 64)))
    assert_like_source(model, fused, _x((2, 3, 67, 61), 1), edit)


def test_appended_parameter_free_modules_run():
    tv = import_or_skip("torchvision")
    timm = import_or_skip("timm")
    for model, where in ((tv.models.efficientnet_b0(), "features"), (tv.models.efficientnet_b0(), "stage"),
                         (timm.create_model("efficientnet_b0"), "blocks")):
        model = _calibrated(model)
        if where == "features":
            model.features.append(nn.Tanh())
        elif where == "stage":
            model.features[3].append(nn.Tanh())
        else:
            model.blocks.append(nn.Tanh())
        fused = ek.fuse(model, example_inputs=_x((1, 3, 64, 64)))
        # (a dropped Tanh is 0.008-36 off; random B0s at 64x64 are ill-conditioned: the source's own error
        # varies 3e-5 - 1e-3 with the input, and a fused model's ratio to it with it)
        assert_like_source(model, fused, _x((1, 3, 64, 64), 1), f"Tanh appended to {where}", k=10)


def test_hooks_are_called_with_the_source_values():
    tv = import_or_skip("torchvision")
    model = _calibrated(tv.models.efficientnet_b0())
    seen = {}

    def keep(name):
        return lambda m, a, o: seen.__setitem__(name, o.detach().clone())

    def scale(m, a):
        return (a[0] * 0.5,)

    model.features[3].register_forward_hook(keep("stage"))
    model.features[5][1].register_forward_hook(keep("block"))
    model.avgpool.register_forward_hook(keep("pool"))
    model.register_forward_pre_hook(scale)
    fused = ek.fuse(model, example_inputs=_x((1, 3, 64, 64)))
    x = _x((1, 3, 64, 64), 1)
    with torch.inference_mode():
        model(x)
        want = dict(seen)
        seen.clear()
        fused(x)
    assert set(seen) == set(want)
    for k in want:
        assert errors(seen[k], want[k].double())[0] < 1e-4, k
    assert_like_source(model, fused, x, "hooked")


def test_truncated_timm_backbone():
    timm = import_or_skip("timm")
    model = _calibrated(timm.create_model("efficientnet_b0", features_only=True))
    model.blocks = model.blocks[:4]
    fused = ek.fuse(model, example_inputs=_x((1, 3, 64, 64)))
    x = _x((1, 3, 64, 64), 1)
    with torch.inference_mode():
        a, b = model(x), fused(x)
    assert len(a) == len(b) == 3  # (stages 1-3 of the out indices remain)
    for p, q in zip(a, b):
        assert errors(q, p.double())[0] < 1e-4


# ---- writes after fuse ------------------------------------------------------------------------------------------

def test_writes_no_version_sees_need_refresh_or_the_check():
    model = _ours_b0()
    x = _x((1, 3, 64, 64), 1)
    for how in ("data", "numpy"):
        fused = ek.fuse(model, example_inputs=x)
        with torch.inference_mode():
            base = fused(x)
        w = fused.blocks[3][0].dw_bias
        if how == "data":
            w.data[:] += 1.0
        else:
            w.detach().numpy()[:] += 1.0
        ek.refresh(fused)
        with torch.inference_mode():
            assert not torch.allclose(fused(x), base, atol=1e-3), how
    fused = ek.fuse(model, example_inputs=x)
    with torch.inference_mode():
        base = fused(x)
    was = swapped._CHECK_BYTES
    swapped._CHECK_BYTES = True  # EFFNET_CHECK_WEIGHTS=1
    try:
        ek.refresh(fused)
        with torch.inference_mode():
            fused(x)  # builds with the byte copies
            fused.blocks[3][0].dw_bias.data[:] += 1.0
            assert not torch.allclose(fused(x), base, atol=1e-3)
    finally:
        swapped._CHECK_BYTES = was


def test_replaced_children_and_changed_attributes_are_seen():
    model = _ours_b0()
    x = _x((1, 3, 64, 64), 1)
    fused = ek.fuse(model, example_inputs=x)
    with torch.inference_mode():
        base = fused(x)
        block = fused.blocks[4][1]
        assert block.skip
        block.skip = False
        assert not torch.allclose(fused(x), base, atol=1e-3)
        block.skip = True
        assert torch.allclose(fused(x), base, atol=1e-5)
        other = copy.deepcopy(block)
        other.dw_bias.add_(1.0)
        fused.blocks[4][1] = other
        assert not torch.allclose(fused(x), base, atol=1e-3)


def test_load_state_dict_between_calls():
    model = _ours_b0()
    x = _x((1, 3, 64, 64), 1)
    fused = ek.fuse(model, example_inputs=x)
    other = ek.fuse(_calibrated(ek.efficientnet("b0")), example_inputs=x)
    with torch.inference_mode():
        want = other(x)
        fused(x)
    fused.load_state_dict(other.state_dict())
    with torch.inference_mode():
        assert torch.equal(fused(x), want)


def test_a_call_overlapping_load_state_dict_sees_old_or_new_weights():
    """An injected call from another thread in the middle of the fused model's load_state_dict (after half its
    blocks are loaded) gets the old or the new weights' output, never a mix, and nothing hangs."""
    import threading

    x = _x((1, 3, 64, 64), 1)
    fused = ek.fuse(_ours_b0(), example_inputs=x)
    other = ek.fuse(_calibrated(ek.efficientnet("b0")), example_inputs=x)
    with torch.inference_mode():
        old, new = fused(x), other(x)
    units = [m for m in fused.modules() if isinstance(m, swapped.FusedMBConv)]
    target = units[len(units) // 2]
    got, started = {}, threading.Event()

    def call():
        started.set()
        with torch.inference_mode():
            got["out"] = fused(x)

    real = type(target)._load_from_state_dict
    worker = threading.Thread(target=call)

    def injected(self, *a, **k):
        if self is target and not worker.is_alive() and "out" not in got:
            worker.start()
            started.wait(5)
            worker.join(0.5)  # it waits for the load (or, had it run, packed a mix)
        return real(self, *a, **k)

    type(target)._load_from_state_dict = injected
    try:
        fused.load_state_dict(other.state_dict())
    finally:
        type(target)._load_from_state_dict = real
    worker.join(30)
    assert not worker.is_alive()
    assert torch.equal(got["out"], new) or torch.equal(got["out"], old)
    with torch.inference_mode():
        assert torch.equal(fused(x), new)


def test_efficientnet_v2():
    """torchvision's EfficientNetV2-S swaps whole; timm's efficientnetv2_rw_t and tf_efficientnetv2_s (TF SAME
    pads) swap every block, their fused-MBConv blocks (dense 3x3 → 1x1, with and without a residual) as
    FusedMBConv units of the engine's dense block type. Against float64 at the sample size and at 131x137, both
    memory formats."""
    tv = import_or_skip("torchvision")
    timm = import_or_skip("timm")
    x = _x((1, 3, 64, 64))
    model = _calibrated(tv.models.efficientnet_v2_s())
    fused = ek.fuse(model, example_inputs=x)
    assert not ek.fuse_report(fused).left, ek.fuse_report(fused)
    assert_like_source(model, fused, _x((1, 3, 67, 61), 1), "torchvision efficientnet_v2_s", k=10)
    for name in ("efficientnetv2_rw_t", "tf_efficientnetv2_s"):
        model = _calibrated(timm.create_model(name))
        fused = ek.fuse(model, example_inputs=x)
        report = ek.fuse_report(fused)
        assert not report.left, report
        dense = [m for m in fused.modules() if isinstance(m, swapped.FusedMBConv) and m.dense]
        assert len(dense) >= 6 and any(m.skip for m in dense) and any(not m.skip for m in dense), report
        with torch.inference_mode():
            fused(x)
        nets = [n for n in swapped.live_nets(fused) if n is not None]
        assert len(nets) == 1, f"{name}: {len(nets)} engines ran, one chain expected"
        assert_like_source(model, fused, x, f"timm {name} 64", k=10)
        assert_like_source(model, fused, _x((2, 3, *ODD), 1, channels_last=True), f"timm {name} 131x137 NHWC", k=10)
        assert_like_source(model, fused, _x((1, 3, *ODD), 2), f"timm {name} 131x137 NCHW", k=10)
    for m in fused.modules():  # the op path (what runs on a GPU, or with a backend chosen): the same outputs
        if isinstance(m, swapped.FusedUnit):
            m.ops_backend = "torch"
    assert_like_source(model, fused, _x((1, 3, *ODD), 2), "timm tf_efficientnetv2_s, op path", k=10)


def _frozen(model):
    """model with every BatchNorm2d replaced by torchvision's FrozenBatchNorm2d holding its (calibrated) statistics."""
    from torchvision.ops import FrozenBatchNorm2d
    for parent in list(model.modules()):
        for name, bn in list(parent.named_children()):
            if isinstance(bn, nn.BatchNorm2d):
                f = FrozenBatchNorm2d(bn.num_features, eps=bn.eps)
                for t in ("weight", "bias", "running_mean", "running_var"):
                    getattr(f, t).copy_(getattr(bn, t).detach())
                setattr(parent, name, f)
    return model


def test_frozen_batchnorm_reads_as_a_batchnorm():
    """FrozenBatchNorm2d (detection backbones) computes x * scale + shift from its buffers: read as a BN, every
    block of a torchvision B0 built with it swapped, against float64 at the sample size and 131x137."""
    tv = import_or_skip("torchvision")
    from torchvision.ops import FrozenBatchNorm2d
    model = _frozen(_calibrated(tv.models.efficientnet_b0()))
    assert sum(isinstance(m, FrozenBatchNorm2d) for m in model.modules()) > 40
    x = _x((1, 3, 64, 64))
    fused = ek.fuse(model, example_inputs=x)
    report = ek.fuse_report(fused)
    assert not report.left and len(report.swapped) >= 18, report
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in fused.modules())
    assert_like_source(model, fused, x, "FrozenBatchNorm2d B0 64")
    assert_like_source(model, fused, _x((2, 3, *ODD), 1, channels_last=True), "FrozenBatchNorm2d B0 131x137 NHWC")


class _SharedAct(nn.Module):
    """Two conv + BN siblings and one ReLU module called after both (read from the graph: the pairs swap, the
    ReLU must stay, or its second use would vanish)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.act = nn.ReLU()

    def forward(self, x):
        y = self.act(self.bn1(self.conv1(x)))
        return torch.cat([y, self.act(self.bn2(self.conv2(y)))], 1)


def test_sibling_pairs_from_the_graph_keep_a_shared_activation():
    model = _calibrated(_SharedAct(), (16, 16))
    x = _x((2, 3, 16, 16))
    fused = ek.fuse(model, example_inputs=x)
    report = ek.fuse_report(fused)
    assert [e.path for e in report.swapped] == ["conv1", "conv2"] and not report.left, report
    assert isinstance(fused.conv1, swapped.FusedConv) and fused.conv1.act == "identity"
    assert type(fused.act) is nn.ReLU and isinstance(fused.bn1, nn.Identity)
    assert_like_source(model, fused, x, "shared activation")
    assert_like_source(model, fused, _x((1, 3, 13, 11), 1, channels_last=True), "shared activation 13x11 NHWC")


class _Listed(nn.Module):
    def __init__(self, body):
        super().__init__()
        self.body = body

    def forward(self, xs):
        return self.body(xs[0]) + xs[1].mean()


class _StemAndBlocks(nn.Module):
    """A conv + BN stem pair beside a child of seven convs (read from a graph with the child standing in for
    itself: graph._StandIn); ``reuse``: the forward also reads the stem conv's output (no pair); ``peek``: it
    reads an attribute of the child (the stand-in lacks it: the graph is exported with the child itself);
    ``listed``: the child takes the conv's output in a list too (read there: no pair); ``deep``: the convs are
    in two stages of a ModuleList the forward calls one by one (grandchildren stand in; with ``listed`` the
    second stage takes the conv's output in a list)."""

    def __init__(self, reuse=False, peek=False, listed=False, deep=False):
        super().__init__()
        self.reuse, self.peek, self.listed, self.deep = reuse, peek, listed, deep
        self.conv, self.bn = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        # (more than fuse._MAX_CONVS convolutions in all: the model is a container, not read whole)
        convs = [nn.Conv2d(8, 8, 3, padding=1) for _ in range(6)]
        if deep:
            second = nn.Sequential(*convs[3:], nn.ReLU(), nn.Conv2d(8, 4, 1))
            self.stages = nn.ModuleList([nn.Sequential(*convs[:3]), _Listed(second) if listed else second])
            return
        body = nn.Sequential(*convs, nn.ReLU(), nn.Conv2d(8, 4, 1))
        if listed:
            self.listed_body = _Listed(body)
        else:
            self.body = body

    def forward(self, x):
        y = self.conv(x)
        if self.deep:
            h = self.stages[0](self.bn(y))
            return self.stages[1]([h, y] if self.listed else h)
        if self.listed:
            return self.listed_body([self.bn(y), y])
        z = self.body(self.bn(y)) * (self.body[0].out_channels / 8 if self.peek else 1.0)
        return z + y.mean((1, 2, 3), keepdim=True) if self.reuse else z


@pytest.mark.parametrize("reuse,peek,listed,deep", [
    (False, False, False, False), (True, False, False, False), (False, True, False, False),
    (False, False, True, False), (False, False, False, True), (False, False, True, True)])
def test_stem_pairs_read_with_the_blocks_standing_in(reuse, peek, listed, deep, monkeypatch):
    from effnet_kernels import graph
    model = _calibrated(_StemAndBlocks(reuse, peek, listed, deep), (16, 16))
    exported = []
    real = graph._export
    monkeypatch.setattr(graph, "_export", lambda m, a, k: exported.append(
        [type(c).__name__ for c in m.children()] + [type(c).__name__ for c in getattr(m, "stages", ())])
        or real(m, a, k))
    graph._CACHE.clear()
    x = _x((2, 3, 16, 16))
    if reuse or listed:  # (the conv's output is read twice: not a pair, and nothing else to swap)
        with pytest.raises(TypeError, match="nothing to swap"):
            ek.fuse(model, example_inputs=x)
    else:
        fused = ek.fuse(model, example_inputs=x)
        assert isinstance(fused.conv, swapped.FusedConv) and isinstance(fused.bn, nn.Identity), \
            ek.fuse_report(fused)
    containers = [kids for kids in exported if "BatchNorm2d" in kids]
    assert containers[0] == (["Conv2d", "BatchNorm2d", "ModuleList", "_StandIn", "_StandIn"] if deep
                             else ["Conv2d", "BatchNorm2d", "_StandIn"]), exported
    if peek:  # (the stand-in lacks the attribute: the container exported again with its child)
        assert containers[1] == ["Conv2d", "BatchNorm2d", "Sequential"], exported
    if reuse or listed:
        return
    assert_like_source(model, fused, x, f"stem pair reuse={reuse} peek={peek} deep={deep}")
    assert_like_source(model, fused, _x((1, 3, 13, 11), 1, channels_last=True), "stem pair 13x11 NHWC")
