"""Bad input, everywhere: one table walks every public function — ``ops.*`` on every backend, ``fuse`` and a
fused model's forward, ``efficientnet``, ``scaling.*``, ``padding``, the converters, ``fit_phi`` — and the CLI's
arguments, with wrong types, dtypes, devices, ranks, shapes, channel counts, kernel sizes, strides, paddings,
backends, NaN φ, negative budgets and unknown model families.

Each call must raise ValueError or TypeError (exactly: not a RuntimeError from deep inside torch, never a crash)
whose message names the argument, says what was expected ("must" / "expected" / "needs") and what it got.
Each CLI case must exit 2 with one line on stderr, no traceback. ``pytest tests/test_bad_input.py -q`` prints
how many cases ran (the count goes into the closing notes).
"""
import re

import pytest
import torch
import torch.nn as nn

import effnet_kernels as ek
from effnet_kernels import ops, padding, scaling
from effnet_kernels.bench import cli as bench

META = "meta"  # a device with no kernels here (and no data): must be refused, not crash


def _dw(c=4, k=3):
    g = torch.Generator().manual_seed(0)
    return dict(x=torch.randn(2, c, 7, 6, generator=g), weight=torch.randn(c, 1, k, k, generator=g),
                bias=torch.randn(c, generator=g), stride=1, padding="symmetric")


def _bn(c=4):
    return dict(bn_weight=torch.ones(c), bn_bias=torch.zeros(c), bn_mean=torch.zeros(c), bn_var=torch.ones(c))


def _se(c=8, s=2):
    g = torch.Generator().manual_seed(0)
    return dict(reduce_weight=torch.randn(s, c, 1, 1, generator=g), reduce_bias=torch.randn(s, generator=g),
                expand_weight=torch.randn(c, s, 1, 1, generator=g), expand_bias=torch.randn(c, generator=g))


def _proj(c=8, cout=5):
    return dict(y=torch.randn(2, c, 4, 3), pooled=torch.randn(2, c), **_se(c),
                proj_weight=torch.randn(cout, c, 1, 1), proj_bias=torch.randn(cout),
                residual=torch.randn(2, cout, 4, 3))


# (label, keyword overrides, exception, the argument name the message must contain, or a tuple of names)
DW_BAD = [
    ("x list", dict(x=[[1.0]]), TypeError, "x"),
    ("x numpy", dict(x=torch.randn(2, 4, 7, 6).numpy()), TypeError, "x"),
    ("x int32", dict(x=torch.ones(2, 4, 7, 6, dtype=torch.int32)), TypeError, "x"),
    ("x bool", dict(x=torch.ones(2, 4, 7, 6, dtype=torch.bool)), TypeError, "x"),
    ("x 3-D", dict(x=torch.randn(4, 7, 6)), ValueError, "x"),
    ("x 5-D", dict(x=torch.randn(1, 2, 4, 7, 6)), ValueError, "x"),
    ("x C=0", dict(x=torch.randn(2, 0, 7, 6)), ValueError, "x"),
    ("x H=0", dict(x=torch.randn(2, 4, 0, 6)), ValueError, "x"),
    ("x W=0", dict(x=torch.randn(2, 4, 7, 0)), ValueError, "x"),
    ("x on meta, weight on cpu", dict(x=torch.randn(2, 4, 7, 6, device=META)), ValueError, ("x", "weight")),
    ("weight list", dict(weight=[1.0]), TypeError, "weight"),
    ("weight C+1", dict(weight=torch.randn(5, 1, 3, 3)), ValueError, "weight"),
    ("weight C-1", dict(weight=torch.randn(3, 1, 3, 3)), ValueError, "weight"),
    ("weight 2 in-ch", dict(weight=torch.randn(4, 2, 3, 3)), ValueError, "weight"),
    ("weight k=4", dict(weight=torch.randn(4, 1, 4, 4)), ValueError, "k"),
    ("weight k=9", dict(weight=torch.randn(4, 1, 9, 9)), ValueError, "k"),
    ("weight 3x5", dict(weight=torch.randn(4, 1, 3, 5)), ValueError, "weight"),
    ("weight 3-D", dict(weight=torch.randn(4, 3, 3)), ValueError, "weight"),
    ("weight float64", dict(weight=torch.randn(4, 1, 3, 3).double()), TypeError, "weight"),
    ("weight on meta", dict(weight=torch.randn(4, 1, 3, 3, device=META)), ValueError, "weight"),
    ("bias C+1", dict(bias=torch.randn(5)), ValueError, "bias"),
    ("bias 2-D", dict(bias=torch.randn(4, 1)), ValueError, "bias"),
    ("bias float16", dict(bias=torch.randn(4).half()), TypeError, "bias"),
    ("bias None", dict(bias=None), TypeError, "bias"),
    ("stride 0", dict(stride=0), ValueError, "stride"),
    ("stride 3", dict(stride=3), ValueError, "stride"),
    ("stride -1", dict(stride=-1), ValueError, "stride"),
    ("stride 1.0", dict(stride=1.0), TypeError, "stride"),
    ("stride '1'", dict(stride="1"), TypeError, "stride"),
    ("stride True", dict(stride=True), TypeError, "stride"),
    ("stride None", dict(stride=None), TypeError, "stride"),
    ("padding 'valid'", dict(padding="valid"), ValueError, "padding"),
    ("padding 'SAME'", dict(padding="SAME"), ValueError, "padding"),
    ("act 'gelu'", dict(act="gelu"), ValueError, "act"),
    ("act 'SiLU'", dict(act="SiLU"), ValueError, "act"),
    ("act 'sigmoid' (a gate)", dict(act="sigmoid"), ValueError, "act"),
    ("act None", dict(act=None), TypeError, "act"),
    ("padding 1", dict(padding=1), TypeError, "padding"),
    ("padding None", dict(padding=None), TypeError, "padding"),
    ("backend 'cuda'", dict(backend="cuda"), ValueError, "backend"),
    ("backend 'Triton'", dict(backend="Triton"), ValueError, "backend"),
    ("backend 1", dict(backend=1), ValueError, "backend"),
]
BACKENDS = [None, "cpp", "torch"]

SE_BAD = [
    ("x list", dict(x=[1.0]), TypeError, "x"),
    ("x 3-D", dict(x=torch.randn(8, 4, 4)), ValueError, "x"),
    ("x int64", dict(x=torch.ones(2, 8, 4, 4, dtype=torch.int64)), TypeError, "x"),
    ("x H=0", dict(x=torch.randn(2, 8, 0, 4)), ValueError, "x"),
    ("x C+1", dict(x=torch.randn(2, 9, 4, 4)), ValueError, "reduce_weight"),
    ("x on meta, weights on cpu", dict(x=torch.randn(2, 8, 4, 4, device=META)), ValueError,
     ("x", "reduce_weight")),
    ("reduce_weight (S, C+1)", dict(reduce_weight=torch.randn(2, 9)), ValueError, "reduce_weight"),
    ("reduce_weight 3-D", dict(reduce_weight=torch.randn(2, 8, 1)), ValueError, "reduce_weight"),
    ("reduce_weight 3x3 conv", dict(reduce_weight=torch.randn(2, 8, 3, 3)), ValueError, "reduce_weight"),
    ("reduce_weight S=0", dict(reduce_weight=torch.randn(0, 8), reduce_bias=torch.randn(0),
                               expand_weight=torch.randn(8, 0)), ValueError, "reduce_weight"),
    ("reduce_weight float64", dict(reduce_weight=torch.randn(2, 8).double()), TypeError, "reduce_weight"),
    ("reduce_weight tuple", dict(reduce_weight=(1.0, 2.0)), TypeError, "reduce_weight"),
    ("reduce_bias S+1", dict(reduce_bias=torch.randn(3)), ValueError, "reduce_bias"),
    ("expand_weight (C, S+1)", dict(expand_weight=torch.randn(8, 3)), ValueError, "expand_weight"),
    ("expand_weight (C+1, S)", dict(expand_weight=torch.randn(9, 2)), ValueError, "expand_weight"),
    ("expand_bias C-1", dict(expand_bias=torch.randn(7)), ValueError, "expand_bias"),
    ("expand_bias None", dict(expand_bias=None), TypeError, "expand_bias"),
    ("expand_bias on meta", dict(expand_bias=torch.randn(8, device=META)), ValueError, "expand_bias"),
    ("backend 'gpu'", dict(backend="gpu"), ValueError, "backend"),
    ("inner_act 'gelu'", dict(inner_act="gelu"), ValueError, "inner_act"),
    ("inner_act 'hardsigmoid' (a gate)", dict(inner_act="hardsigmoid"), ValueError, "inner_act"),
    ("gate 'relu'", dict(gate="relu"), ValueError, "gate"),
    ("gate None", dict(gate=None), TypeError, "gate"),
]

GATE_BAD = [
    ("pooled list", dict(pooled=[1.0]), TypeError, "pooled"),
    ("pooled 1-D", dict(pooled=torch.randn(8)), ValueError, "pooled"),
    ("pooled 4-D", dict(pooled=torch.randn(2, 8, 1, 1)), ValueError, "pooled"),
    ("pooled float64", dict(pooled=torch.randn(2, 8).double()), TypeError, "pooled"),
    ("pooled C+1", dict(pooled=torch.randn(2, 9)), ValueError, "reduce_weight"),
    ("reduce_bias 2-D", dict(reduce_bias=torch.randn(2, 1)), ValueError, "reduce_bias"),
    ("expand_weight float16", dict(expand_weight=torch.randn(8, 2).half()), TypeError, "expand_weight"),
    ("backend 'onnx'", dict(backend="onnx"), ValueError, "backend"),
    ("inner_act 'gelu'", dict(inner_act="gelu"), ValueError, "inner_act"),
    ("inner_act 'hardsigmoid' (a gate)", dict(inner_act="hardsigmoid"), ValueError, "inner_act"),
    ("gate 'relu'", dict(gate="relu"), ValueError, "gate"),
    ("gate None", dict(gate=None), TypeError, "gate"),
]

PROJECT_BAD = [
    ("y list", dict(y=[1.0]), TypeError, "y"),
    ("y 2-D", dict(y=torch.randn(2, 8)), ValueError, "y"),
    ("y float64", dict(y=torch.randn(2, 8, 4, 3).double()), TypeError, "y"),
    ("pooled (N+1, C)", dict(pooled=torch.randn(3, 8)), ValueError, "pooled"),
    ("pooled (N, C+1)", dict(pooled=torch.randn(2, 9)), ValueError, "pooled"),
    ("pooled float16", dict(pooled=torch.randn(2, 8).half()), TypeError, "pooled"),
    ("pooled None", dict(pooled=None), TypeError, "pooled"),
    ("proj_weight Cin+1", dict(proj_weight=torch.randn(5, 9, 1, 1)), ValueError, "proj_weight"),
    ("proj_weight 3x3", dict(proj_weight=torch.randn(5, 8, 3, 3)), ValueError, "proj_weight"),
    ("proj_weight float64", dict(proj_weight=torch.randn(5, 8).double()), TypeError, "proj_weight"),
    ("proj_weight list", dict(proj_weight=[1.0]), TypeError, "proj_weight"),
    ("proj_bias Cout+1", dict(proj_bias=torch.randn(6)), ValueError, "proj_bias"),
    ("proj_bias None", dict(proj_bias=None), TypeError, "proj_bias"),
    ("residual Cout+1", dict(residual=torch.randn(2, 6, 4, 3)), ValueError, "residual"),
    ("residual H+1", dict(residual=torch.randn(2, 5, 5, 3)), ValueError, "residual"),
    ("residual float64", dict(residual=torch.randn(2, 5, 4, 3).double()), TypeError, "residual"),
    ("residual list", dict(residual=[0.0]), TypeError, "residual"),
    ("reduce_weight (S, C-1)", dict(reduce_weight=torch.randn(2, 7)), ValueError, "reduce_weight"),
    ("backend 'mkl'", dict(backend="mkl"), ValueError, "backend"),
    ("inner_act 'gelu'", dict(inner_act="gelu"), ValueError, "inner_act"),
    ("inner_act 'hardsigmoid' (a gate)", dict(inner_act="hardsigmoid"), ValueError, "inner_act"),
    ("gate 'relu'", dict(gate="relu"), ValueError, "gate"),
    ("gate None", dict(gate=None), TypeError, "gate"),
]

BN_BAD = [
    ("bn_weight C+1", dict(bn_weight=torch.ones(5)), ValueError, "bn_weight"),
    ("bn_bias 2-D", dict(bn_bias=torch.zeros(4, 1)), ValueError, "bn_bias"),
    ("bn_mean list", dict(bn_mean=[0.0] * 4), TypeError, "bn_mean"),
    ("bn_var C-1", dict(bn_var=torch.ones(3)), ValueError, "bn_var"),
    ("eps -1", dict(eps=-1.0), ValueError, "eps"),
    ("eps nan", dict(eps=float("nan")), ValueError, "eps"),
    ("eps '1e-5'", dict(eps="1e-5"), ValueError, "eps"),
    ("x list", dict(x=[1.0]), TypeError, "x"),
    ("weight k=6", dict(weight=torch.randn(4, 1, 6, 6)), ValueError, "k"),
    ("stride 2.0", dict(stride=2.0), TypeError, "stride"),
    ("padding 'full'", dict(padding="full"), ValueError, "padding"),
]


def _op_rows():
    rows = []
    for backend in BACKENDS:
        for fn in (ops.dwconv_bias_swish, ops.dwconv_bias_swish_pool):
            for label, over, exc, arg in DW_BAD:
                rows.append((f"{fn.__name__}[{backend}] {label}", fn, {**_dw(), "backend": backend, **over}, exc, arg))
        for label, over, exc, arg in BN_BAD:
            kw = {**_dw(), **_bn(), "backend": backend}
            kw.pop("bias")
            rows.append((f"dwconv_bn_swish[{backend}] {label}", ops.dwconv_bn_swish, {**kw, **over}, exc, arg))
        for label, over, exc, arg in SE_BAD:
            rows.append((f"squeeze_excite[{backend}] {label}", ops.squeeze_excite,
                         {"x": torch.randn(2, 8, 4, 4), **_se(), "backend": backend, **over}, exc, arg))
        for label, over, exc, arg in GATE_BAD:
            rows.append((f"se_gate[{backend}] {label}", ops.se_gate,
                         {"pooled": torch.randn(2, 8), **_se(), "backend": backend, **over}, exc, arg))
        for label, over, exc, arg in PROJECT_BAD:
            rows.append((f"se_project[{backend}] {label}", ops.se_project,
                         {**_proj(), "backend": backend, **over}, exc, arg))
    # Every tensor on a device without kernels here (meta): the default dispatch and cpp refuse, naming x.
    def meta(kw):
        return {k: v.to(META) if isinstance(v, torch.Tensor) else v for k, v in kw.items()}
    for backend in (None, "cpp"):
        for name, fn, kw in (("dwconv_bias_swish", ops.dwconv_bias_swish, _dw()),
                             ("dwconv_bias_swish_pool", ops.dwconv_bias_swish_pool, _dw()),
                             ("squeeze_excite", ops.squeeze_excite, {"x": torch.randn(2, 8, 4, 4), **_se()}),
                             ("se_project", ops.se_project, _proj())):
            rows.append((f"{name}[{backend}] all on meta", fn, {**meta(kw), "backend": backend}, ValueError,
                         "y" if name == "se_project" else "x"))
        rows.append((f"se_gate[{backend}] all on meta", ops.se_gate,
                     {**meta({"pooled": torch.randn(2, 8), **_se()}), "backend": backend}, ValueError, "pooled"))
    # backend="triton" on CPU tensors without the interpreter: a clear refusal, once per op.
    if "triton" not in ops.available_backends("cpu"):
        for name, fn, kw in (("dwconv_bias_swish", ops.dwconv_bias_swish, _dw()),
                             ("dwconv_bias_swish_pool", ops.dwconv_bias_swish_pool, _dw()),
                             ("squeeze_excite", ops.squeeze_excite, {"x": torch.randn(2, 8, 4, 4), **_se()}),
                             ("se_gate", ops.se_gate, {"pooled": torch.randn(2, 8), **_se()}),
                             ("se_project", ops.se_project, _proj())):
            rows.append((f"{name}[triton] on CPU", fn, {**kw, "backend": "triton"}, ValueError, "backend"))
    rows += [
        ("available_backends 'gpu'", ops.available_backends, dict(device_type="gpu"), ValueError, "device_type"),
        ("available_backends 0", ops.available_backends, dict(device_type=0), TypeError, "device_type"),
    ]
    return rows


class _NotEfficientNet(nn.Module):
    def forward(self, x):
        return x


def _fused_b0():
    if not hasattr(_fused_b0, "model"):
        _fused_b0.model = ek.fuse(ek.efficientnet("b0").eval(), example_inputs=torch.randn(1, 3, 64, 64))
    return _fused_b0.model


def _model_rows():
    nan, inf = float("nan"), float("inf")
    rows = []
    for arch, exc in (("b8", ValueError), ("resnet50", ValueError), ("", ValueError), (-1, ValueError),
                      (nan, ValueError), (inf, ValueError), (None, TypeError), (True, TypeError),
                      ([0], TypeError), ("1.5", ValueError)):
        rows.append((f"efficientnet arch={arch!r}", ek.efficientnet, dict(arch=arch), exc, "arch"))
        number = isinstance(arch, (int, float)) and not isinstance(arch, bool)
        rows.append((f"compound phi={arch!r}", scaling.compound, dict(phi=arch), ValueError if number else TypeError,
                     "phi"))
        rows.append((f"model_cost arch={arch!r}", ek.model_cost, dict(arch=arch), exc, "arch"))
        rows.append((f"arch_spec arch={arch!r}", scaling.arch_spec, dict(arch=arch), exc, "arch"))
        rows.append((f"depthwise_shapes arch={arch!r}", scaling.depthwise_shapes, dict(arch=arch), exc, "arch"))
        rows.append((f"se_shapes arch={arch!r}", scaling.se_shapes, dict(arch=arch), exc, "arch"))
    rows += [
        ("efficientnet num_classes=0", ek.efficientnet, dict(num_classes=0), ValueError, "num_classes"),
        ("efficientnet num_classes=1.5", ek.efficientnet, dict(num_classes=1.5), ValueError, "num_classes"),
        ("efficientnet num_classes='10'", ek.efficientnet, dict(num_classes="10"), ValueError, "num_classes"),
        ("efficientnet padding='valid'", ek.efficientnet, dict(padding="valid"), ValueError, "padding"),
        ("efficientnet padding=0", ek.efficientnet, dict(padding=0), TypeError, "padding"),
        ("efficientnet bn_eps=0", ek.efficientnet, dict(bn_eps=0.0), ValueError, "bn_eps"),
        ("efficientnet bn_eps=nan", ek.efficientnet, dict(bn_eps=nan), ValueError, "bn_eps"),
        ("efficientnet bn_eps='1e-3'", ek.efficientnet, dict(bn_eps="1e-3"), TypeError, "bn_eps"),
        ("EfficientNet spec='b0'", ek.EfficientNet, dict(spec="b0"), TypeError, "spec"),
        ("EfficientNet num_classes=-1", ek.EfficientNet, dict(spec=scaling.arch_spec("b0"), num_classes=-1),
         ValueError, "num_classes"),
        ("EfficientNet padding='full'", ek.EfficientNet, dict(spec=scaling.arch_spec("b0"), padding="full"),
         ValueError, "padding"),
        ("EfficientNet bn_eps=-1", ek.EfficientNet, dict(spec=scaling.arch_spec("b0"), bn_eps=-1.0),
         ValueError, "bn_eps"),
        ("model_cost resolution=0", ek.model_cost, dict(arch="b0", resolution=0), ValueError, "resolution"),
        ("model_cost resolution=-224", ek.model_cost, dict(arch="b0", resolution=-224), ValueError, "resolution"),
        ("model_cost resolution='224'", ek.model_cost, dict(arch="b0", resolution="224"), TypeError, "resolution"),
        ("model_cost resolution=(224,)", ek.model_cost, dict(arch="b0", resolution=(224,)), ValueError,
         "resolution"),
        ("model_cost resolution=(224, 0)", ek.model_cost, dict(arch="b0", resolution=(224, 0)), ValueError,
         "resolution"),
        ("model_cost resolution=224.5", ek.model_cost, dict(arch="b0", resolution=224.5), TypeError, "resolution"),
        ("model_cost num_classes=0", ek.model_cost, dict(arch="b0", num_classes=0), ValueError, "num_classes"),
        ("depthwise_shapes resolution=0", scaling.depthwise_shapes, dict(arch="b0", resolution=0), ValueError,
         "resolution"),
        ("depthwise_shapes distinct='yes'", scaling.depthwise_shapes, dict(arch="b0", distinct="yes"), TypeError,
         "distinct"),
        ("se_shapes resolution=[1, 2, 3]", scaling.se_shapes, dict(arch="b0", resolution=[1, 2, 3]), ValueError,
         "resolution"),
        ("se_shapes distinct=None", scaling.se_shapes, dict(arch="b0", distinct=None), TypeError, "distinct"),
        ("round_filters channels=0", ek.round_filters, dict(channels=0), ValueError, "channels"),
        ("round_filters channels=1.5", ek.round_filters, dict(channels=1.5), TypeError, "channels"),
        ("round_filters width=0", ek.round_filters, dict(channels=32, width=0), ValueError, "width"),
        ("round_filters width=nan", ek.round_filters, dict(channels=32, width=nan), ValueError, "width"),
        ("round_filters width='1'", ek.round_filters, dict(channels=32, width="1"), TypeError, "width"),
        ("round_filters divisor=0", ek.round_filters, dict(channels=32, divisor=0), ValueError, "divisor"),
        ("round_filters divisor=2.5", ek.round_filters, dict(channels=32, divisor=2.5), TypeError, "divisor"),
        ("round_repeats repeats=0", ek.round_repeats, dict(repeats=0), ValueError, "repeats"),
        ("round_repeats repeats='3'", ek.round_repeats, dict(repeats="3"), TypeError, "repeats"),
        ("round_repeats depth=-1", ek.round_repeats, dict(repeats=3, depth=-1.0), ValueError, "depth"),
        ("round_repeats depth=inf", ek.round_repeats, dict(repeats=3, depth=inf), ValueError, "depth"),
        ("check_padding 'Same'", padding.check_padding, dict(padding="Same"), ValueError, "padding"),
        ("check_padding b'same'", padding.check_padding, dict(padding=b"same"), TypeError, "padding"),
        ("pad_amounts size=0", padding.pad_amounts, dict(size=0, kernel=3, stride=1, padding="same"), ValueError,
         "size"),
        ("pad_amounts kernel=4", padding.pad_amounts, dict(size=8, kernel=4, stride=1, padding="same"), ValueError,
         "kernel"),
        ("pad_amounts stride=0", padding.pad_amounts, dict(size=8, kernel=3, stride=0, padding="same"), ValueError,
         "stride"),
        ("pad_amounts padding='valid'", padding.pad_amounts, dict(size=8, kernel=3, stride=1, padding="valid"),
         ValueError, "padding"),
        ("pad_amounts size=8.0", padding.pad_amounts, dict(size=8.0, kernel=3, stride=1, padding="same"), TypeError,
         "size"),
    ]
    # converters: unknown model families, wrong objects, state dicts that are not EfficientNets
    tv_sd = {"features.0.0.weight": torch.randn(32, 3, 3, 3)}
    rows += [
        ("from_torchvision nn.Linear", ek.from_torchvision, dict(source=nn.Linear(2, 2)), TypeError, "source"),
        ("from_torchvision resnet-like", ek.from_torchvision, dict(source=_NotEfficientNet()), TypeError, "source"),
        ("from_torchvision str", ek.from_torchvision, dict(source="efficientnet_b0"), TypeError, "source"),
        ("from_torchvision None", ek.from_torchvision, dict(source=None), TypeError, "source"),
        ("from_torchvision partial state dict", ek.from_torchvision, dict(source=tv_sd), ValueError, "state dict"),
        ("from_torchvision empty state dict", ek.from_torchvision, dict(source={}), ValueError, "state dict"),
        ("from_torchvision arch=b9", ek.from_torchvision, dict(source=tv_sd, arch="b9"), ValueError, "arch"),
        ("from_torchvision bn_eps=-1", ek.from_torchvision, dict(source=tv_sd, bn_eps=-1.0), ValueError, "bn_eps"),
        ("from_timm nn.Linear", ek.from_timm, dict(source=nn.Linear(2, 2)), TypeError, "source"),
        ("from_timm list", ek.from_timm, dict(source=[1, 2]), TypeError, "source"),
        ("from_timm torchvision-keyed state dict", ek.from_timm, dict(source=tv_sd), ValueError, "state dict"),
        ("from_timm padding='valid'", ek.from_timm, dict(source={}, padding="valid"), ValueError, "padding"),
        ("from_timm arch=nan", ek.from_timm, dict(source={}, arch=nan), ValueError, "arch"),
        ("fuse nn.Linear", ek.fuse, dict(model=nn.Linear(3, 3).eval()), TypeError, "fuse()"),
        ("fuse str", ek.fuse, dict(model="efficientnet_b0"), TypeError, "fuse()"),
        ("fuse None", ek.fuse, dict(model=None), TypeError, "fuse()"),
        ("fuse training model", ek.fuse, dict(model=ek.efficientnet("b0")), ValueError, "eval"),
        ("fuse inplace='yes'", ek.fuse, dict(model=ek.efficientnet("b0").eval(), inplace="yes"), TypeError,
         "inplace"),
        ("fuse a fused model", lambda model: ek.fuse(model), dict(model=_fused_b0()), TypeError, "fused"),
    ]
    fused = _fused_b0()
    for label, x, exc in (("list", [1.0], TypeError), ("3-D", torch.randn(3, 32, 32), ValueError),
                          ("4 channels", torch.randn(1, 4, 32, 32), ValueError),
                          ("int64", torch.zeros(1, 3, 32, 32, dtype=torch.int64), TypeError),
                          ("float64", torch.randn(1, 3, 32, 32, dtype=torch.float64), TypeError),
                          ("on meta", torch.randn(1, 3, 32, 32, device=META), ValueError)):
        rows.append((f"fused model x {label}", fused, dict(x=x), exc, "x"))
    for label, kw, exc, arg in (
            ("no budget", dict(), ValueError, "budget"), ("latency_ms=-5", dict(latency_ms=-5), ValueError,
                                                          "latency_ms"),
            ("latency_ms=nan", dict(latency_ms=nan), ValueError, "latency_ms"),
            ("latency_ms='5'", dict(latency_ms="5"), TypeError, "latency_ms"),
            ("macs=0", dict(macs=0), ValueError, "macs"), ("params=-inf", dict(params=-inf), ValueError, "params"),
            ("device='tpu'", dict(macs=1e9, device="tpu"), ValueError, "device"),
            ("device=3.5", dict(macs=1e9, device=3.5), ValueError, "device"),
            ("batch=0", dict(macs=1e9, batch=0), ValueError, "batch"),
            ("batch=1.5", dict(macs=1e9, batch=1.5), ValueError, "batch"),
            ("dtype='fp16'", dict(macs=1e9, dtype="fp16"), TypeError, "dtype"),
            ("dtype=float16 on cpu", dict(macs=1e9, device="cpu", dtype=torch.float16), ValueError, "dtype"),
            ("phi_max=-1", dict(macs=1e9, phi_max=-1), ValueError, "phi_max"),
            ("phi_max=nan", dict(macs=1e9, phi_max=nan), ValueError, "phi_max")):
        rows.append((f"fit_phi {label}", ek.fit_phi, kw, exc, arg))
    rows += _coefficient_rows()
    return rows


def _coefficient_rows():
    """Custom compound-scaling coefficients, the scaling profile and the grid search."""
    from effnet_kernels import balance
    nan, inf = float("nan"), float("inf")
    rows = []
    for name in ("alpha", "beta", "gamma"):
        for bad, exc in ((0.9, ValueError), (0.0, ValueError), (-1.2, ValueError), (nan, ValueError),
                         (inf, ValueError), ("1.2", TypeError), (True, TypeError), ([1.2], TypeError)):
            rows.append((f"compound {name}={bad!r}", scaling.compound, {"phi": 1, name: bad}, exc, name))
        rows.append((f"arch_spec {name}=0.5", scaling.arch_spec, {"arch": 1, name: 0.5}, ValueError, name))
        rows.append((f"efficientnet {name}=nan", ek.efficientnet, {"arch": 1, name: nan}, ValueError, name))
        rows.append((f"flops_growth {name}=0.99", scaling.flops_growth, {name: 0.99}, ValueError, name))
        rows.append((f"fit_phi {name}=0.5", ek.fit_phi, {"macs": 1e9, name: 0.5}, ValueError, name))
        rows.append((f"scaling_points {name}=inf", balance.scaling_points, {name: inf}, ValueError, name))
    rows += [
        ("compound base_resolution=4", scaling.compound, dict(phi=1, alpha=1.2, base_resolution=4), ValueError,
         "base_resolution"),
        ("compound base_resolution=2.5", scaling.compound, dict(phi=1, alpha=1.2, base_resolution=2.5), TypeError,
         "base_resolution"),
        ("compound base_resolution=256 with the table", scaling.compound, dict(phi=1, base_resolution=256), ValueError,
         "base_resolution"),
        ("arch_spec ArchSpec with alpha", scaling.arch_spec, dict(arch=scaling.arch_spec(1), alpha=1.3), ValueError,
         "arch"),
        ("arch_spec too large", scaling.arch_spec, dict(arch=40, alpha=2.0), ValueError, "phi"),
        ("flops_growth phis=(0,)", scaling.flops_growth, dict(phis=(0,)), ValueError, "phis"),
        ("flops_growth phis=2", scaling.flops_growth, dict(phis=2), TypeError, "phis"),
        ("scaled_arch width=0", scaling.scaled_arch, dict(width=0.0), ValueError, "width"),
        ("scaled_arch resolution=4", scaling.scaled_arch, dict(resolution=4), ValueError, "resolution"),
        ("scaled_arch dropout=1", scaling.scaled_arch, dict(dropout=1.0), ValueError, "dropout"),
        ("scaling_points points=2", balance.scaling_points, dict(points=2), ValueError, "points"),
        ("scaling_points points=5.5", balance.scaling_points, dict(points=5.5), TypeError, "points"),
        ("scaling_points flops_max=1", balance.scaling_points, dict(flops_max=1.0), ValueError, "flops_max"),
        ("scaling_points flops_max=nan", balance.scaling_points, dict(flops_max=nan), ValueError, "flops_max"),
        ("scaling_points base_phi=-1", balance.scaling_points, dict(base_phi=-1), ValueError, "base_phi"),
        ("scaling_points resolution=8", balance.scaling_points, dict(resolution=8), ValueError, "resolution"),
        ("scaling_profile device='tpu'", ek.scaling_profile, dict(device="tpu"), ValueError, "device"),
        ("scaling_profile dtype=float16 on cpu", ek.scaling_profile, dict(device="cpu", dtype=torch.float16),
         ValueError, "dtype"),
        ("scaling_profile batch=0", ek.scaling_profile, dict(device="cpu", batch=0), ValueError, "batch"),
        ("scaling_profile providers=('ort',)", ek.scaling_profile, dict(device="cpu", providers=("ort",),
                                                                       resolution=32, points=3), ValueError,
         "providers"),
        ("fit_exponents unequal lengths", balance.fit_exponents, dict(multipliers=[(1, 1, 1)], values=[]), ValueError,
         "values"),
        ("fit_exponents value=0", balance.fit_exponents, dict(multipliers=[(1, 1, 1)], values=[0.0]), ValueError,
         "values"),
        ("fit_exponents multiplier=-1", balance.fit_exponents, dict(multipliers=[(1, -1, 1)], values=[1.0]),
         ValueError, "multipliers"),
    ]
    ev = lambda m: 1.0  # noqa: E731
    for label, kw, exc, arg in (
            ("evaluate=None", dict(evaluate=None), TypeError, "evaluate"),
            ("cost='speed'", dict(cost="speed"), ValueError, "cost"),
            ("target=1", dict(target=1.0), ValueError, "target"),
            ("target=nan", dict(target=nan), ValueError, "target"),
            ("target='2'", dict(target="2"), TypeError, "target"),
            ("step=0", dict(step=0.0), ValueError, "step"),
            ("step=0.07", dict(step=0.07), ValueError, "step"),
            ("tolerance=0", dict(tolerance=0.0), ValueError, "tolerance"),
            ("lo=0.5", dict(lo=0.5), ValueError, "lo"),
            ("hi<lo", dict(lo=1.5, hi=1.2, step=0.1), ValueError, "hi"),
            ("reward=(0, -0.07)", dict(reward=(0.0, -0.07)), ValueError, "T"),
            ("reward=0.07", dict(reward=0.07), TypeError, "reward"),
            ("flops_window=(3, 1)", dict(cost="latency", flops_window=(3.0, 1.0)), ValueError, "flops_window"),
            ("max_measured=0", dict(cost="latency", max_measured=0), ValueError, "max_measured"),
            ("build=3", dict(build=3), TypeError, "build"),
            ("cache=[]", dict(cache=[]), TypeError, "cache"),
            ("device='tpu'", dict(cost="latency", device="tpu"), ValueError, "device"),
            ("dtype=float64", dict(cost="latency", dtype=torch.float64), TypeError, "dtype"),
            ("dtype=fp16 on the CPU", dict(cost="latency", device="cpu", dtype=torch.float16), ValueError, "dtype"),
            ("rounds=0", dict(cost="latency", rounds=0), ValueError, "rounds"),
            ("batch=1.5", dict(cost="latency", batch=1.5), TypeError, "batch")):
        rows.append((f"grid_search {label}", ek.grid_search, {"evaluate": ev, **kw}, exc, arg))
    return rows


ROWS = _op_rows() + _model_rows()


@pytest.mark.parametrize("label,fn,kwargs,exc,arg", ROWS, ids=[r[0] for r in ROWS])
def test_bad_input_names_the_argument(label, fn, kwargs, exc, arg):
    with pytest.raises((ValueError, TypeError)) as info:
        fn(**kwargs)
    err = info.value
    msg = str(err)
    assert type(err) is exc, f"{label}: {type(err).__name__} ({msg}), expected {exc.__name__}"
    names = arg if isinstance(arg, tuple) else (arg,)  # (either, where the backends check in another order)
    # As a word: a plain substring test would find "x" in "expected" and "k" in "kernel".
    assert any(re.search(rf"(?<!\w){re.escape(a)}(?!\w)", msg) for a in names), \
        f"{label}: the message does not name {' or '.join(names)}: {msg}"
    assert any(w in msg for w in ("must", "expected", "needs", "supports", "one of")), \
        f"{label}: the message does not say what was expected: {msg}"
    assert "got" in msg or "contradicts" in msg or "call model.eval()" in msg or "already" in msg, \
        f"{label}: the message does not say what it got: {msg}"


# ---- the CLI: exit status 2, one line on stderr, nothing written -----------------------------------------

FAST = ["--rounds", "1", "--per-round", "1", "--no-progress"]
# (arguments, what the one stderr line must say: each of these substrings — the argument and what it expected)
POSITIVE_INT = "must be an integer >= 1, got "
PHI = "must be a finite number >= 0, got "
BUDGET = "must be a finite number > 0, got "
DEVICE = "--device must be cpu, cuda or cuda:N, got "
CUDA = torch.cuda.is_available()
CLI_RUN = [
    (["--phis", "-1"], (f"argument --phis: {PHI}'-1'",)), (["--phis", "nan"], (f"argument --phis: {PHI}'nan'",)),
    (["--phis", "inf"], (f"argument --phis: {PHI}'inf'",)), (["--phis", "b0"], (f"argument --phis: {PHI}'b0'",)),
    (["--phis", "41"], ("argument --phis: must be <= 40, got '41'",)),
    (["--batch", "0"], (f"argument --batch: {POSITIVE_INT}'0'",)),
    (["--batch", "x"], (f"argument --batch: {POSITIVE_INT}'x'",)),
    (["--batch", "1.5"], (f"argument --batch: {POSITIVE_INT}'1.5'",)),
    (["--device", "tpu"], (f"{DEVICE}'tpu'",)),
    (["--device", "cuda:99"], ("--device cuda:99: this machine has " if CUDA else
                               "--device cuda:99: no CUDA device on this machine",)),
    (["--rounds", "-3"], (f"argument --rounds: {POSITIVE_INT}'-3'",)),
    (["--rounds", "0"], (f"argument --rounds: {POSITIVE_INT}'0'",)),
    (["--per-round", "0"], (f"argument --per-round: {POSITIVE_INT}'0'",)),
    (["--op-batches", "0"], (f"argument --op-batches: {POSITIVE_INT}'0'",)),
    (["--time-limit-s", "-1"], (f"argument --time-limit-s: {BUDGET}'-1'",)),
    (["--time-limit-s", "nan"], (f"argument --time-limit-s: {BUDGET}'nan'",)),
    (["--providers", "tensorrt"], ("argument --providers: invalid choice", "tensorrt")),
    (["--dtype", "fp8"], ("argument --dtype: invalid choice", "fp8")),
    (["--op-phis", "8"], ("argument --op-phis: invalid choice", "8")),
    # (the message does not name --compile-phis: _resolve_phis's CliError, reported)
    (["--compile-phis", "all", "0"], ("'all' and 'none' stand alone, got ['all', 0]",)),
    (["--ort-phis", "-1"], (f"argument --ort-phis: {PHI}'-1'",)),
    # effnet-bench has no --padding (nor any padding option): an unknown argument, like --no-such-flag
    (["--padding", "valid"], ("unrecognized arguments: --padding valid",)),
    (["--no-such-flag"], ("unrecognized arguments: --no-such-flag",)),
    (["--model", "keras:b0"], ("argument --model: expected timm:NAME", "got 'keras:b0'")),
    (["--model", "timm:resnet50"], ("argument --model: spec 'timm:resnet50' names no EfficientNet-B0",
                                    "nor one of its cousins")),
    # (the small run has --phis)
    (["--model", "timm:efficientnet_b0"], ("--model and --phis: give one",)),
    (["--ops-only"], ("argument --ops-only: not allowed with argument --no-ops",)),  # (the small run has --no-ops)
]
CLI_FIT = [
    ([], ("give a budget: --latency-ms, --macs or --params",)),
    (["--latency-ms", "-5"], (f"argument --latency-ms: {BUDGET}'-5'",)),
    (["--latency-ms", "nan"], (f"argument --latency-ms: {BUDGET}'nan'",)),
    (["--latency-ms", "inf"], (f"argument --latency-ms: {BUDGET}'inf'",)),
    (["--macs", "0"], (f"argument --macs: {BUDGET}'0'",)), (["--params", "ten"], (f"argument --params: {BUDGET}'ten'",)),
    (["--macs", "1e9", "--device", "gpu"], (f"{DEVICE}'gpu'",)),
    (["--macs", "1e9", "--phi-max", "-1"], (f"argument --phi-max: {PHI}'-1'",)),
    (["--latency-ms", "5", "--batch", "0"], (f"argument --batch: {POSITIVE_INT}'0'",)),
    (["--macs", "1e9", "--alpha", "0.5"], ("argument --alpha: must be a finite number >= 1, got '0.5'",)),
    (["--macs", "1e9", "--gamma", "nan"], ("argument --gamma: must be a finite number >= 1, got 'nan'",)),
]
CLI_OTHER = [
    (["profile", "--phis", "-1"], (f"argument --phis: {PHI}'-1'",)),
    (["profile", "--phis", "nan"], (f"argument --phis: {PHI}'nan'",)),
    (["profile", "--batch", "0"], (f"argument --batch: {POSITIVE_INT}'0'",)),
    (["render", "/nonexistent/results.json"], ("results: cannot read /nonexistent/results.json as JSON",)),
    (["frobnicate"], ("unrecognized arguments: frobnicate",)),
    (["denormal", "--batch", "0"], (f"argument --batch: {POSITIVE_INT}'0'",)),
    (["denormal", "--rounds", "0"], (f"argument --rounds: {POSITIVE_INT}'0'",)),
    (["denormal", "--device", "tpu"], (f"{DEVICE}'tpu'",)),
    (["denormal", "--format", "nhwc"], ("argument --format: invalid choice", "nhwc")),
    (["scaling", "--points", "0"], (f"argument --points: {POSITIVE_INT}'0'",)),
    (["scaling", "--points", "2"], ("points must be an int in [3, 24], got 2",)),
    (["scaling", "--flops-max", "0.5"], ("flops_max must be a number in [1.1, 16], got 0.5",)),
    (["scaling", "--base-phi", "-1"], (f"argument --base-phi: {PHI}'-1'",)),
    (["scaling", "--beta", "0.9"], ("argument --beta: must be a finite number >= 1, got '0.9'",)),
    (["scaling", "--device", "tpu"], (f"{DEVICE}'tpu'",)),
    (["scaling", "--resolution", "0"], (f"argument --resolution: {POSITIVE_INT}'0'",)),
    (["scaling", "--resolution", "8"], ("resolution must be >= 16, got 8",)),
    (["scaling", "--providers", "ort"], ("argument --providers: invalid choice", "ort")),
]
if not CUDA:
    CLI_RUN.append((["--device", "cuda"], ("--device cuda: no CUDA device on this machine",)))
    CLI_RUN.append((["--dtype", "fp16"], ("--dtype fp16: the fused CPU model runs in fp32 only",)))
    CLI_OTHER.append((["scaling", "--dtype", "fp16"], ("--dtype fp16: the fused CPU model runs in fp32 only",)))
CLI = CLI_RUN + [(["fit", *a], n) for a, n in CLI_FIT] + CLI_OTHER
PROG = {"fit": "effnet-bench fit", "profile": "effnet-bench profile", "render": "effnet-bench render",
        "denormal": "effnet-bench denormal", "scaling": "effnet-bench scaling"}


@pytest.mark.parametrize("args,needles", CLI, ids=[" ".join(a) or "fit (no budget)" for a, _ in CLI])
def test_cli_bad_arguments_exit_2_with_one_line(args, needles, capsys, tmp_path):
    small = ["--no-ops", "--phis", "0", "--providers", "fused", *FAST, "--out", str(tmp_path / "out")]
    # (a small run ahead of the bad argument: if validation ever let one through, the test stays short)
    argv = [*small, *args] if args and args[0].startswith("--") else args
    with pytest.raises(SystemExit) as e:
        bench.main(argv)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2, f"{args}: exit status {e.value.code}, stderr: {err}"
    assert len(err.splitlines()) == 1 and "Traceback" not in err, f"{args}: {err}"
    prog = PROG.get(args[0] if args else "", "effnet-bench")
    assert err.startswith(f"{prog}: error: "), f"{args}: {err!r} is not {prog}'s error line"
    for needle in needles:
        assert needle in err, f"{args}: {err!r} does not say {needle!r}"
    # An argument list that does not parse says "unrecognized arguments" and never reaches the check it names.
    if not any("unrecognized arguments" in n for n in needles):
        assert "unrecognized arguments" not in err, f"{args}: {err!r}"
    assert not (tmp_path / "out" / "results.json").exists()


def test_count(capsys):
    """The numbers the closing notes quote."""
    with capsys.disabled():
        print(f"\n[bad input] {len(ROWS)} Python calls, {len(CLI)} CLI argument lists")
    assert len(ROWS) > 300 and len(CLI) > 30
