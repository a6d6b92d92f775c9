"""fuse() on models that contain EfficientNet blocks: backbones (timm features_only, torchvision .features),
efficientnet_pytorch, U-Nets around them, models mixing swapped and left blocks.

Every swapped module's output (read from inside the C++ engines, on the path the model really runs: whole
chains included) and every model output are compared with the source model in float64, with the bounds of
tests/helpers (FUSED_VS_SOURCE times the source's own fp32 error at that point, the larger over both
memory formats, floored at ROUNDOFF_PER_POINT per point). A depthwise bias off by 0.01 in one swapped block
exceeds them (test_a_small_bug_in_one_block_exceeds_the_bounds)."""
import copy
import pickle
import threading

import pytest
import torch
import torch.nn as nn

import effnet_kernels as ek
from effnet_kernels import swapped
from effnet_kernels.testing import model_from_spec, randomize_bn_
from helpers import compare_points, memo_last
from helpers import fused_points as _fused_points, ordered as _ordered, source_outputs_at as _source_outputs, \
    worst as _worst

ODD = (131, 137)  # odd, not square, and off the 32-multiple grid (feature maps 66x69 ... 5x5)
# fuse()'s sample forward pass at the tests' scale (its default is one 224 x 224 image)
SAMPLE = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(123))


def _x(shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _built(spec, seed):
    return memo_last(("model", spec, seed), lambda: model_from_spec(spec, seed=seed)[0])


CASES = [
    # spec, shape of x (batch 3 NCHW; the channels_last case runs batch 1 below)
    ("timm:efficientnet_b0:features", ODD),
    ("timm:efficientnet_b0:features:1,3,4", ODD),
    ("timm:tf_efficientnet_b2:features", ODD),
    ("timm:tf_efficientnet_b2:features:2,4", ODD),
    ("tv:efficientnet_b0:features", ODD),
    ("lukemelas:efficientnet-b0", (224, 224)),  # at its construction size: static SAME = TF SAME
    ("lukemelas:efficientnet-b0", ODD),  # another size: the static padding is not SAME for it any more
    ("unet:timm:efficientnet_b0", ODD),
    ("unet:lukemelas:efficientnet-b0", (256, 256)),
]
# The MBConv cousins (ReLU / ReLU6 / Hardswish blocks, without SE or with MobileNetV3's hardsigmoid SE), whole
# classifiers and backbones, at an odd size: one of each family in both batch 3 NCHW and batch 1 channels_last,
# the others in one of the two (alternating), so that every family meets both.
COUSINS = [
    ("timm:tf_efficientnet_lite0", "both"), ("timm:mobilenetv3_large_100", "both"), ("tv:mnasnet1_0", "both"),
    ("tv:mobilenet_v2", "both"), ("timm:efficientnet_lite0", "nhwc"), ("timm:mobilenetv2_100", "nchw"),
    ("timm:mobilenetv3_small_100", "nhwc"), ("timm:mnasnet_100", "nchw"), ("timm:tf_efficientnet_lite0:features", "nhwc"),
    ("timm:mobilenetv3_large_100:features", "nchw"), ("tv:mobilenet_v3_large", "nhwc"), ("tv:mobilenet_v3_small", "nchw"),
    ("tv:mnasnet0_5", "nhwc"), ("tv:mobilenet_v3_small:features", "nchw"),
]
SLOW_COUSINS = ["timm:tf_efficientnet_lite2", "timm:tf_efficientnet_lite4", "tv:mnasnet1_3",
                "timm:mobilenetv3_small_100:features", "tv:mobilenet_v2:features"]
SLOW_CASES = [  # (one batch / format each: together they cover both; the B0 cases run both for every model)
    ("timm:efficientnet_b3:features", ODD, 3, False),
    ("lukemelas:efficientnet-b3", (300, 300), 1, True),
    ("lukemelas:efficientnet-b3", ODD, 3, False),
]


_FUSED: dict = {}


def _case(spec, hw, batch, channels_last, seed):
    """(source model, its fuse(), x) for one case: fused once per model (at SAMPLE's size: each swap is proven
    there and at a second shape; the cases then run it at their own), the cases of one model in a row reuse it."""
    model = _built(spec, seed)
    if _FUSED.get("key") != (spec, seed):
        _FUSED.clear()
        _FUSED.update(key=(spec, seed), fused=ek.fuse(model, example_inputs=SAMPLE))
    x = _x((batch, 3, *hw), seed)
    return model, _FUSED["fused"], x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _check(spec, hw, batch, channels_last, seed=0):
    model, fused, x = _case(spec, hw, batch, channels_last, seed)
    assert not ek.fuse_report(fused).left, ek.fuse_report(fused)  # (every block proven and swapped whole)
    src32s, src64 = _source_outputs(model, fused, x)
    got, n_units = _fused_points(fused, model, x)
    want = torch.channels_last if channels_last else torch.contiguous_format
    for k, v in got.items():
        if k.startswith("out") and v.dim() == 4 and v.shape[-1] * v.shape[-2] > 1 and v.shape[1] > 1:
            assert v.is_contiguous(memory_format=want), f"{spec}: {k} is not in the memory format eager gives"
    ratios = compare_points(got, src32s, _ordered(src64, got))
    compared = [k for k in ratios if not k.startswith("out")]
    assert len(compared) >= n_units, f"{spec}: only {len(compared)} points for {n_units} fused modules"
    r, where = _worst(ratios)
    assert r <= 1, f"{spec} batch {batch} {'NHWC' if channels_last else 'NCHW'}: {r:.2f}x the bound at {where}"


@pytest.mark.parametrize("spec,hw", CASES, ids=[f"{s}@{h[0]}x{h[1]}" for s, h in CASES])
def test_matches_the_source_model(spec, hw):
    _check(spec, hw, 3, False)
    _check(spec, hw, 1, True)


@pytest.mark.parametrize("spec,formats", COUSINS, ids=[s for s, _ in COUSINS])
def test_cousins_match_the_source_model(spec, formats):
    """EfficientNet-Lite, MobileNetV2 / V3, MNASNet: every swapped module and the outputs within the bounds."""
    if formats in ("both", "nchw"):
        _check(spec, ODD, 3, False)
    if formats in ("both", "nhwc"):
        _check(spec, ODD, 1, True)


@pytest.mark.slow
@pytest.mark.parametrize("spec", SLOW_COUSINS)
def test_cousins_match_the_source_model_large(spec):
    _check(spec, ODD, 2, spec.endswith("features"))


def test_cousins_swap_everything_and_chain():
    """What each family becomes: every block and stem / head swapped (the report names none left), one
    engine chain per model where its forward allows it."""
    expect_chain = {"timm:tf_efficientnet_lite0": "FusedEfficientNetChain",
                    "timm:mobilenetv3_large_100": "FusedMobileNetV3Chain",
                    "timm:mobilenetv3_large_100:features": "FusedMobileNetV3Features"}
    for spec, cls in expect_chain.items():
        model = _built(spec, 0)
        fused = ek.fuse(model, example_inputs=SAMPLE)
        assert type(fused).__name__ == cls and not ek.fuse_report(fused).left, spec
    tv = _built("tv:mnasnet1_0", 0)
    fused = ek.fuse(tv, example_inputs=SAMPLE)
    assert isinstance(fused.layers, swapped.FusedSequential) and not ek.fuse_report(fused).left
    assert isinstance(fused.layers[0], swapped.FusedConv) and fused.layers[0].act == "relu"
    assert isinstance(fused.layers[3], swapped.FusedMBConv) and not fused.layers[3].has_se
    assert all(type(fused.layers[i]) is nn.Identity for i in (1, 2, 4, 5, 6, 7))
    v3 = ek.fuse(_built("tv:mobilenet_v3_large", 0), example_inputs=SAMPLE)
    blocks = [m for m in v3.modules() if isinstance(m, swapped.FusedMBConv)]
    assert {(b.act, b.has_se, b.se_inner, b.se_gate) for b in blocks} >= {
        ("relu", False, "silu", "sigmoid"), ("relu", True, "relu", "hardsigmoid"),
        ("hardswish", True, "relu", "hardsigmoid"), ("hardswish", False, "silu", "sigmoid")}
    # MobileNetV3's SE reduces from the expanded channels with its own rounding: the real shapes are read
    b = next(b for b in blocks if b.has_se and b.expanded == 72)
    assert tuple(b.se_reduce_weight.shape) == (24, 72)


@pytest.mark.slow
@pytest.mark.parametrize("spec,hw,batch,channels_last", SLOW_CASES,
                         ids=[f"{s}@{h[0]}x{h[1]}-b{b}-{'nhwc' if c else 'nchw'}" for s, h, b, c in SLOW_CASES])
def test_matches_the_source_model_large(spec, hw, batch, channels_last):
    _check(spec, hw, batch, channels_last)


@pytest.mark.slow
def test_whole_torchvision_b4_matches_the_source_model():
    _check("tv:efficientnet_b4", ODD, 2, True)  # (batch 1 / 3 and NCHW: tests/test_fuse.py's B0-B5 cases)


def test_a_small_bug_in_one_block_exceeds_the_bounds():
    """The bounds can fail: a depthwise bias +0.01 in one channel of one swapped block of a backbone."""
    model = _built("timm:efficientnet_b0:features", 1)
    fused = ek.fuse(model, example_inputs=SAMPLE)
    x = _x((3, 3, 64, 64), 1)
    src32s, src64 = _source_outputs(model, fused, x)
    got, _ = _fused_points(fused, model, x)
    assert _worst(compare_points(got, src32s, _ordered(src64, got)))[0] <= 1
    with torch.no_grad():
        fused.blocks[3][1].dw_bias[5] += 0.01  # in place: the engine sees its buffer changed and rebuilds
    got, _ = _fused_points(fused, model, x)
    r, where = _worst(compare_points(got, src32s, _ordered(src64, got)))
    assert r >= 5, f"a depthwise bias +0.01 is only {r:.2f}x the bound (at {where})"


def test_whole_classifiers_run_as_one_chain():
    """A whole classifier is a chain like any backbone: its stem, blocks and head in one engine call."""
    import timm
    x = _x((1, 3, 64, 64))
    for m in (timm.create_model("efficientnet_b0"), ek.efficientnet("b0")):
        fused = ek.fuse(m.eval(), example_inputs=SAMPLE)
        report = ek.fuse_report(fused)
        assert not report.left and any(e.what.startswith("one chain: the stem, 16 blocks and the head")
                                       for e in report.swapped), report
        with torch.inference_mode():
            fused(x)
        assert len(swapped.live_nets(fused)) == 1


def test_report_strict_and_mixed_model():
    """A model mixing swapped and left blocks: each left one named with its reason, the rest swapped and
    the outputs still the source's; strict=True raises on the first left one."""
    import timm

    model, _ = model_from_spec("timm:efficientnet_b0:features")
    model.blocks[3][1].bn2.act = nn.GELU()  # an activation the kernels do not apply
    model.blocks[5][0].bn1.act = nn.ReLU()  # the expand's activation differs from the depthwise conv's
    model.blocks[5][1].se = nn.Identity()  # no SE: swapped (a block without squeeze-excitation)
    model.blocks[2][0].bn1.train()  # a BatchNorm in training mode
    fused = ek.fuse(model, example_inputs=SAMPLE)
    report = ek.fuse_report(fused)
    left = {e.path: e.what for e in report.left}
    assert set(left) == {"blocks.2.0", "blocks.3.1", "blocks.5.0"}, left
    assert "gelu" in left["blocks.3.1"] and "not an activation the fused kernels apply" in left["blocks.3.1"]
    assert "training mode" in left["blocks.2.0"]
    assert "differs from the depthwise conv's" in left["blocks.5.0"]
    assert isinstance(fused.blocks[5][1], swapped.FusedMBConv) and not fused.blocks[5][1].has_se
    assert len(report.swapped) == 14  # 13 blocks + the stem (conv_stem with bn1)
    assert type(fused.blocks[3][1]) is type(model.blocks[3][1])
    assert isinstance(fused.blocks[3][0], swapped.FusedMBConv) and isinstance(fused.conv_stem, swapped.FusedConv)
    assert "left" in str(report) and "blocks.3.1" in str(report)
    model.blocks[2][0].bn1.eval()  # the left BN computes with batch statistics: compare in eval
    fused.blocks[2][0].bn1.eval()
    x = _x((2, 3, 67, 61))
    with torch.inference_mode():
        for a, b in zip(model(x), fused(x)):
            assert (a - b).abs().max() <= 1e-4 * a.abs().max()
    with pytest.raises(ValueError, match=r"strict=True\): blocks\.3\.1 .*gelu"):
        model.blocks[2][0].bn1.eval()
        ek.fuse(model, strict=True, example_inputs=SAMPLE)
    cc = timm.create_model("tf_efficientnet_cc_b0_4e").eval()
    r = ek.fuse_report(ek.fuse(cc, example_inputs=SAMPLE))
    cond = [e for e in r.left if "CondConvResidual" in e.cls]
    # (CondConv computes its weights from the input: its graph is no conv / MBConv chain)
    assert cond and all("one layer" in e.what for e in cond) and len(r.swapped) == 10, r


def test_nothing_to_swap_names_what_is_supported():
    import timm
    with pytest.raises(TypeError, match=r"got Sequential .*nothing to swap .*it swaps MBConv blocks"):
        ek.fuse(nn.Sequential(nn.Conv2d(3, 8, 3), nn.GELU()).eval())
    with pytest.raises(TypeError, match=r"nothing to swap .*gelu.* not an activation the fused kernels apply"):
        ek.fuse(timm.create_model("efficientnet_lite0", act_layer="gelu").eval())
    with pytest.raises(ValueError, match=r"eval\(\)"):
        ek.fuse(timm.create_model("efficientnet_b0", features_only=True))
    fused = ek.fuse(timm.create_model("efficientnet_b0", features_only=True).eval(),
                    example_inputs=torch.randn(1, 3, 64, 64))
    with pytest.raises(TypeError, match="already fused"):
        ek.fuse(fused)
    with pytest.raises(TypeError, match="strict must be a bool"):
        ek.fuse(timm.create_model("efficientnet_b0").eval(), strict="yes")


def test_source_untouched_and_rest_of_the_model_kept():
    model, _ = model_from_spec("unet:timm:efficientnet_b0")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    kinds = [type(m) for m in model.modules()]
    fused = ek.fuse(model, example_inputs=SAMPLE)
    assert [type(m) for m in model.modules()] == kinds
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    src_ptrs = {t.data_ptr() for t in model.state_dict().values()}
    assert not src_ptrs & {t.data_ptr() for t in fused.state_dict().values()}
    # the decoder, the mask head and the attribute paths are the source's
    assert type(fused.decoder) is nn.ModuleList and type(fused.mask) is nn.Conv2d
    assert type(fused.decoder[0][1]) is nn.BatchNorm2d  # a decoder conv + BN is not an EfficientNet layer
    from timm.models.efficientnet import EfficientNetFeatures

    # the fully fused backbone runs as one chain: a subclass of timm's, same attributes
    assert isinstance(fused.encoder, EfficientNetFeatures) and type(fused.encoder).__name__ == \
        "FusedEfficientNetFeatures"
    assert isinstance(fused.encoder.blocks, swapped.FusedSequential)
    assert fused.encoder._stage_out_idx == model.encoder._stage_out_idx


def test_efficientnet_pytorch_keeps_its_signatures():
    model, _ = model_from_spec("lukemelas:efficientnet-b0")
    fused = ek.fuse(model, example_inputs=SAMPLE)
    x = _x((1, 3, 96, 96))
    with torch.inference_mode():
        a = model._blocks[3](model._blocks[2](model._blocks[1](model._blocks[0](
            model._swish(model._bn0(model._conv_stem(x)))))), drop_connect_rate=0.2)
        b = fused._blocks[3](fused._blocks[2](fused._blocks[1](fused._blocks[0](
            fused._swish(fused._bn0(fused._conv_stem(x)))))), drop_connect_rate=0.2)
        assert (a - b).abs().max() <= 1e-5 * a.abs().max()
        ea, eb = model.extract_endpoints(x), fused.extract_endpoints(x)
        assert list(ea) == list(eb) and all(ea[k].shape == eb[k].shape for k in ea)


def test_static_same_padding_is_the_source_models():
    """efficientnet_pytorch pads for the image size it was built for (224): at 227 its stem still pads
    (0, 1) and gives 113 rows, where TF SAME would pad (1, 1) and give 114. The fused stem pads as the
    source does."""
    model, _ = model_from_spec("lukemelas:efficientnet-b0")
    fused = ek.fuse(model, example_inputs=SAMPLE)
    assert fused._conv_stem.pad == (0, 1, 0, 1)
    x = _x((1, 3, 227, 227))
    with torch.inference_mode():
        a, b = model._bn0(model._conv_stem(x)), fused._conv_stem(x)
    assert a.shape == b.shape == (1, 32, 113, 113)
    assert (a - b).abs().max() <= 1e-5 * a.abs().max()


def test_state_dict_pickle_deepcopy_and_weight_changes():
    model, _ = model_from_spec("tv:efficientnet_b0:features")
    fused = ek.fuse(model, example_inputs=SAMPLE)
    x = _x((1, 3, 64, 64))
    with torch.inference_mode():
        ref = fused(x)
    for other in (copy.deepcopy(fused), pickle.loads(pickle.dumps(fused))):
        with torch.inference_mode():
            assert torch.equal(other(x), ref)
    model2, _ = model_from_spec("tv:efficientnet_b0:features", seed=5)
    fused2 = ek.fuse(model2, example_inputs=SAMPLE)
    with torch.inference_mode():
        assert not torch.equal(fused2(x), ref)
    fused2.load_state_dict(fused.state_dict())
    with torch.inference_mode():
        assert torch.equal(fused2(x), ref)  # the engines were rebuilt from the loaded weights
        fused2[3][1].proj_bias.add_(1.0)  # in place, in one block inside a chain
        assert not torch.equal(fused2(x), ref)


def test_inference_only():
    model, _ = model_from_spec("timm:efficientnet_b0:features")
    fused = ek.fuse(model, example_inputs=SAMPLE)
    with pytest.raises(RuntimeError, match="inference-only"):
        fused.train()
    x = _x((1, 3, 32, 32)).requires_grad_()
    with pytest.raises(RuntimeError, match="inference-only"):
        fused(x)
    with pytest.raises(RuntimeError, match="torch.jit.trace"):
        torch.jit.trace(fused, _x((1, 3, 32, 32)))
    with pytest.raises(TypeError, match="float32 on the CPU"):
        fused(_x((1, 3, 32, 32)).double())


def test_threads_share_a_fused_backbone():
    model, _ = model_from_spec("timm:efficientnet_b0:features")
    fused = ek.fuse(model, example_inputs=SAMPLE)
    xs = [_x((1, 3, 64 + 8 * i, 64), seed=i) for i in range(4)]
    with torch.inference_mode():
        want = [fused(x) for x in xs]
    got, errors = [None] * 8, []

    def work(i):
        try:
            with torch.inference_mode():
                for _ in range(3):
                    got[i] = fused(xs[i % 4])
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)
    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i in range(8):
        assert all(torch.equal(a, b) for a, b in zip(got[i], want[i % 4]))


def test_op_path_and_export():
    """The registered-op path (GPU, compile, export) per swapped module: same outputs as the engine, and
    torch.export records it."""
    model, _ = model_from_spec("lukemelas:efficientnet-b0")
    fused = ek.fuse(model, example_inputs=SAMPLE)
    x = _x((1, 3, 71, 66))
    with torch.inference_mode():
        ref = fused(x)
        for m in fused.modules():
            if isinstance(m, swapped.FusedUnit):
                m.ops_backend = "cpp"
        ops = fused(x)
    assert (ops - ref).abs().max() <= 1e-4 * ref.abs().max()
    for m in fused.modules():
        if isinstance(m, swapped.FusedUnit):
            m.ops_backend = None
    tv, _ = model_from_spec("tv:efficientnet_b0:features")
    ftv = ek.fuse(tv, example_inputs=SAMPLE)
    x = _x((1, 3, 64, 64))
    with torch.inference_mode():
        want = ftv(x)
    exported = torch.export.export(ftv, (x,))
    with torch.inference_mode():
        assert (exported.module()(x) - want).abs().max() <= 1e-4 * want.abs().max()


def test_a_vendored_copy_is_read_by_what_it_computes():
    """A library's copy of a block under its own class and module name is swapped with no registration: it is
    read from its graph."""
    from timm.models._efficientnet_blocks import InvertedResidual

    class VendoredInvertedResidual(InvertedResidual):  # a library's copy under its own name
        pass

    VendoredInvertedResidual.__module__ = "some_segmentation_library.encoders._copied"
    model, _ = model_from_spec("timm:efficientnet_b0:features")
    model.blocks[2][1].__class__ = VendoredInvertedResidual
    fused = ek.fuse(model, example_inputs=SAMPLE)
    r = ek.fuse_report(fused)
    assert not r.left and any(e.path == "blocks.2.1" and e.swapped for e in r.entries)
    assert isinstance(fused.blocks[2][1], swapped.FusedMBConv)


def test_edits_between_chains_are_seen():
    """A chain's NCHW output is an ordinary tensor the next chain reads as it is: edits in place, through
    .data or through numpy (none of which a version counter would all see) reach the next chain."""
    model, _ = model_from_spec("timm:efficientnet_b0:features")
    fused = ek.fuse(model, example_inputs=SAMPLE)
    x = _x((1, 3, 64, 64))
    with torch.inference_mode():
        stem = fused.bn1(fused.conv_stem(x))
        first = fused.blocks[1](fused.blocks[0](stem))
        for edit in (lambda t: t.mul_(2.0), lambda t: t.data.zero_(), lambda t: t.numpy().__setitem__(..., 1.0)):
            a = fused.blocks[0](stem)
            edit(a)
            got = fused.blocks[1](a)
            assert torch.equal(got, fused.blocks[1](a.clone())) and not torch.equal(got, first)


def test_a_replaced_child_is_noticed():
    """A one-chain model whose fused block is replaced by another fused block (same generation) runs the
    new block's weights."""
    a_model, _ = model_from_spec("lukemelas:efficientnet-b0", seed=0)
    b_model, _ = model_from_spec("lukemelas:efficientnet-b0", seed=1)
    fa, fb = ek.fuse(a_model, example_inputs=SAMPLE), ek.fuse(b_model, example_inputs=SAMPLE)
    x = _x((1, 3, 64, 64))
    with torch.inference_mode():
        before = fa.extract_features(x)
        fa._blocks[5] = fb._blocks[5]
        a_model._blocks[5] = b_model._blocks[5]
        after, want = fa.extract_features(x), a_model.extract_features(x)
    assert not torch.equal(before, after)
    assert (after - want).abs().max() <= 1e-4 * want.abs().max()


def test_hooks_inside_a_block_leave_it():
    """timm's feature_location="expansion" hooks submodules inside the blocks: those blocks are left (their
    hooks still fire), the features are the source's."""
    import timm

    model = timm.create_model("efficientnet_b0", features_only=True, feature_location="expansion").eval()
    fused = ek.fuse(model, example_inputs=SAMPLE)
    left = [e for e in ek.fuse_report(fused).left if "hook" in e.what]
    assert len(left) == 5
    x = _x((1, 3, 64, 64))
    with torch.inference_mode():
        a, b = model(x), fused(x)
    assert len(a) == len(b) == 5
    for p, q in zip(a, b):
        assert (p - q).abs().max() <= 1e-4 * p.abs().max()


def test_a_changed_stride_is_read_from_the_graph():
    """A classifier whose stride (not a shape) differs from its preset: read from what it computes."""
    model, _ = model_from_spec("tv:efficientnet_b0")
    model.features[6][0].block[1][0].stride = (1, 1)
    fused = ek.fuse(model, example_inputs=SAMPLE)
    x = _x((1, 3, 64, 64))
    with torch.inference_mode():
        a, b = model(x), fused(x)
    assert (a - b).abs().max() <= 1e-4 * a.abs().max()


def test_our_conv_bn_act_takes_the_kernels_activations_and_leaves_others():
    """A conv + BN + act module: one FusedConv with the activation when the kernels apply it; with GELU the conv
    and its BN are still one FusedConv (siblings in its graph) and the GELU runs after it."""
    from effnet_kernels.models.efficientnet import ConvBNAct

    m = randomize_bn_(nn.Sequential(ConvBNAct(3, 8, 3, 2), nn.Conv2d(8, 8, 1)).eval(), calibration_size=(2, 3, 32, 32))
    x = torch.randn(1, 3, 32, 32)
    m[0].act = nn.ReLU()
    fused = ek.fuse(m, example_inputs=x)
    assert isinstance(fused[0], swapped.FusedConv) and fused[0].act == "relu"
    m[0].act = nn.GELU()
    fused = ek.fuse(m, example_inputs=x)
    assert isinstance(fused[0].conv, swapped.FusedConv) and fused[0].conv.act == "identity"
    assert type(fused[0].act) is nn.GELU and type(fused[0].bn) is nn.Identity
    with torch.inference_mode():
        want, got = m(x), fused(x)
    assert (got - want).abs().max() <= 1e-5 * want.abs().max()


def test_features_backbone_runs_as_one_chain_and_falls_back():
    """A fully fused timm features_only backbone runs its stem and stages as one chain (one engine); a hook
    on a stage (or any change that breaks the plan) falls back to timm's own forward over the swapped
    modules, with the same feature maps; pickling keeps the subclass."""
    model, _ = model_from_spec("timm:efficientnet_b0:features:1,3,4")
    fused = ek.fuse(model, example_inputs=SAMPLE)
    x = _x((2, 3, 67, 70))
    with torch.inference_mode():
        chained = fused(x)
        engines = swapped._live_engines(fused)
        assert len(engines) == 1 and len(engines[0].units) == 17  # the stem and 16 blocks, one Net
        seen = []
        hook = fused.blocks[4].register_forward_hook(lambda m, a, o: seen.append(o.shape))  # (out index 3)
        fallback = fused(x)
        hook.remove()
        assert seen == [chained[1].shape]  # timm's forward ran, stage by stage
        again = pickle.loads(pickle.dumps(fused))(x)
    assert type(pickle.loads(pickle.dumps(fused))) is type(fused)
    for a, b, c in zip(chained, fallback, again):
        assert torch.equal(a, c) and (a - b).abs().max() <= 1e-5 * a.abs().max()
        assert a.is_contiguous()


def test_efficientnet_pytorch_runs_as_one_chain_and_falls_back():
    """A fully fused efficientnet_pytorch EfficientNet runs extract_features / extract_endpoints (and so
    forward) as one chain with its Swish folded into the stem and head; a hook on its _swish or a block
    falls back to the library's loop over the swapped modules, with the same outputs; set_swish still works
    and the subclass pickles."""
    model, _ = model_from_spec("lukemelas:efficientnet-b0")
    fused = ek.fuse(model, example_inputs=SAMPLE)
    assert type(fused).__name__ == "FusedLukemelasEfficientNet"
    x = _x((2, 3, 99, 101))
    with torch.inference_mode():
        ends, logits = fused.extract_endpoints(x), fused(x)
        engines = swapped._live_engines(fused)
        assert [len(e.units) for e in engines if len(e.units) > 1] == [18]  # stem, 16 blocks, head: one Net
        calls = []
        hook = fused._blocks[5].register_forward_hook(lambda m, a, o: calls.append(1))
        ends_loop, logits_loop = fused.extract_endpoints(x), fused(x)
        hook.remove()
        assert len(calls) == 2  # the library's loop ran the blocks
        want = model.extract_endpoints(x)
        fused.set_swish(memory_efficient=False)
        again = pickle.loads(pickle.dumps(fused))
        assert type(again) is type(fused)
        ends_again = again.extract_endpoints(x)
    assert list(ends) == list(ends_loop) == list(want) == list(ends_again)
    for k in want:
        assert ends[k].shape == want[k].shape and ends[k].is_contiguous()
        assert (ends[k] - ends_loop[k]).abs().max() <= 1e-5 * ends[k].abs().max()
        assert (ends[k] - want[k]).abs().max() <= 1e-4 * want[k].abs().max()
        assert torch.equal(ends[k], ends_again[k])
    assert (logits - logits_loop).abs().max() <= 1e-5 * logits.abs().max()
