"""What the test modules share (imported as ``helpers``: tests/ is on sys.path under pytest's default
import mode). Test modules import this and the package, never each other."""
import copy

import torch
import torch.nn as nn

import effnet_kernels as ek
from effnet_kernels import ops, reference, swapped
from effnet_kernels.float64 import float64_convs
from effnet_kernels.testing import max_abs_error, rel_error


def _g(seed):
    return torch.Generator().manual_seed(seed)


def op_cases(dtype=torch.float32):
    """name -> (wrapper args as [(arg name, value)], the registered op or None, its positional args, the
    float64 reference). Small shapes, odd sizes, a residual."""
    g = _g(3)
    n, c, h, w, s, cout = 2, 5, 7, 6, 3, 4
    x = torch.randn(n, c, h, w, generator=g).to(dtype)
    dw = torch.randn(c, 1, 3, 3, generator=g).div(3).to(dtype)
    db = torch.randn(c, generator=g).mul(0.3).to(dtype)
    bn = [(torch.rand(c, generator=g) + 0.5).to(dtype), torch.randn(c, generator=g).mul(0.2).to(dtype),
          torch.randn(c, generator=g).mul(0.1).to(dtype), (torch.rand(c, generator=g) + 0.5).to(dtype)]
    se = [torch.randn(s, c, 1, 1, generator=g).to(dtype), torch.randn(s, generator=g).to(dtype),
          torch.randn(c, s, 1, 1, generator=g).to(dtype), torch.randn(c, generator=g).to(dtype)]
    pooled = x.double().mean((2, 3)).float()
    pw = torch.randn(cout, c, 1, 1, generator=g).div(c ** 0.5).to(dtype)
    pb = torch.randn(cout, generator=g).to(dtype)
    res = torch.randn(n, cout, h, w, generator=g).to(dtype)
    se_names = ["reduce_weight", "reduce_bias", "expand_weight", "expand_bias"]
    d = lambda ts: [t.double() for t in ts]  # noqa: E731
    return {
        "dwconv_bias_swish": ([("x", x), ("weight", dw), ("bias", db)],
                              torch.ops.effnet_kernels.dwconv_bias_swish, (x, dw, db, 1, "symmetric"),
                              lambda: reference.dwconv_bias_swish(*d((x, dw, db)), 1, "symmetric")),
        "dwconv_bias_swish_pool": ([("x", x), ("weight", dw), ("bias", db)],
                                   torch.ops.effnet_kernels.dwconv_bias_swish_pool, (x, dw, db, 1, "symmetric"),
                                   lambda: reference.dwconv_bias_swish_pool(*d((x, dw, db)), 1, "symmetric")),
        "dwconv_bn_swish": ([("x", x), ("weight", dw), ("bn_weight", bn[0]), ("bn_bias", bn[1]), ("bn_mean", bn[2]),
                             ("bn_var", bn[3])], None, None,
                            lambda: reference.dwconv_bn_swish(*d((x, dw, *bn)))),
        "squeeze_excite": ([("x", x), *zip(se_names, se)], torch.ops.effnet_kernels.squeeze_excite, (x, *se),
                           lambda: reference.squeeze_excite(*d((x, *se)))),
        "se_gate": ([("pooled", pooled), *zip(se_names, se)], torch.ops.effnet_kernels.se_gate, (pooled, *se),
                    lambda: reference.se_gate(*d((pooled, *se)))),
        "se_project": ([("y", x), ("pooled", pooled), *zip(se_names, se), ("proj_weight", pw), ("proj_bias", pb),
                        ("residual", res)], torch.ops.effnet_kernels.se_project, (x, pooled, *se, pw, pb, res),
                       lambda: reference.se_project(*d((x, pooled, *se, pw, pb, res)))),
    }


def call(op, named, backend, **change):
    """ops.<op> with the arguments of ``named`` (from op_cases), some replaced by ``change``."""
    args = [change.get(k, v) for k, v in named]
    return getattr(ops, op)(*args, backend=backend)


def first(out):
    """The main output (y of the pooled depthwise op's (y, pooled))."""
    return out[0] if isinstance(out, tuple) else out


# ---- a fused model against its source, point by point --------------------------------------------------

def _depthwise_of(block):
    """The submodule of an MBConv block whose output is its depthwise conv + BN + activation."""
    import torch.nn as nn

    if hasattr(block, "dw"):  # this package's MBConv
        return block.dw
    if hasattr(block, "conv_dw"):  # timm: DepthwiseSeparableConv (conv_dw, bn1), InvertedResidual (.., conv_dw, bn2)
        return block.bn1 if type(block).__name__ == "DepthwiseSeparableConv" else block.bn2
    if hasattr(block, "layers"):  # torchvision MNASNet's _InvertedResidual: flat conv, BN, act; the act after the dw
        mods = list(block.layers)
        i = next(i for i, m in enumerate(mods) if isinstance(m, nn.Conv2d) and m.groups > 1)
        return mods[i + 2]
    seq = block.block if hasattr(block, "block") else block.conv  # torchvision MobileNetV2: conv
    for m in seq:  # torchvision MBConv / MobileNetV2 / V3: Conv2dNormActivation layers, the depthwise one grouped
        conv = m[0] if isinstance(m, nn.Sequential) else None
        if isinstance(conv, nn.Conv2d) and conv.groups > 1:
            return m
    raise TypeError(f"no depthwise conv found in {type(block).__name__}")


def source_points(model):
    """{"stem", "blocks.<i>.dw", "blocks.<i>", "head"} -> the source model's module whose output the fused C++
    engine taps at that point (FusedEfficientNet._engine_taps): this package's EfficientNet, torchvision's
    and timm's."""
    import effnet_kernels as ek

    if isinstance(model, ek.EfficientNet):
        stem, blocks, head = model.stem, [b for s in model.blocks for b in s], model.head
    elif type(model).__module__.startswith("torchvision"):
        stem, blocks, head = model.features[0], [b for s in model.features[1:-1] for b in s], model.features[-1]
    elif type(model).__module__.startswith("timm"):
        stem, blocks, head = model.bn1, [b for s in model.blocks for b in s], model.bn2  # BatchNormAct2d: BN + act
    else:
        raise TypeError(f"no source points for {type(model).__name__}")
    points = {"stem": stem}
    for i, b in enumerate(blocks):
        points[f"blocks.{i}.dw"] = _depthwise_of(b)
        points[f"blocks.{i}"] = b
    points["head"] = head
    return points


def outputs_at(run, x, points):
    """{name: output} of ``points`` (name -> module) and "logits" = ``run(x)``, recorded by forward hooks."""
    out = {}
    hooks = [m.register_forward_hook(lambda m, a, o, k=k: out.__setitem__(k, o.detach().clone()))
             for k, m in points.items()]
    try:
        with torch.inference_mode():
            out["logits"] = run(x)
    finally:
        for h in hooks:
            h.remove()
    return out


def errors(y, ref):
    """(‖y − ref‖₂ / ‖ref‖₂, max |y − ref|) against a float64 ref."""
    d = (y.double() - ref).flatten()
    return d.norm().item() / max(ref.norm().item(), 1e-300), (d.abs().max().item() if d.numel() else 0.0)


# The fused model may be this many times further from float64 than the source model's own fp32 forward pass
# is, at each point and in each measure, the source's error taken as the larger of its two memory formats'
# (one run's error is one sample of the rounding noise: at a deep point it can be small by luck). Measured
# (B0, φ 1.37, B3, B5; ours, torchvision, timm and timm tf_; random weights from two seeds; AVX-512): up to
# 1.8x. A depthwise bias +0.01 in one channel, a classifier bias +0.01 or one depthwise tap x1.001 exceed
# this bound by >= 5x on every ISA (test_fuse.py::test_small_bugs_exceed_the_bounds_five_times).
FUSED_VS_SOURCE = 4.0

# The least relative error compare_points takes for the source's at a point: one unit of fp32 roundoff per
# point up to and including it, in forward order (stem 1, blocks.0.dw 2, blocks.0 3, ...). The fused kernels
# round where the source does not (BN folded into the weights: one rounding per weight; swish and sigmoid
# through a polynomial exp good to ~1e-7 relative): a unit or two per layer, added up along the depth, and
# not shrinking with the image. Where the source's sums are short (a 1x1 or 2x3 image: most taps are
# padding) the source's own error falls to a few units at any depth and this dominates: measured on B0
# 1x3x1x1, 2x3x1x1 and 3x3x2x3 (4 seeds, both paddings, every ISA, 1 and 2 threads) the fused engine reaches
# 64 units at blocks.15 (L2), 5-10x the source there. On a 64x64 image the source's error is >= 2 units at
# the stem and >= 17 from block 5 on: the floor changes nothing there, and the small bugs above still exceed
# their bounds by >= 5x.
ROUNDOFF_PER_POINT = 2.0 ** -24


def compare_points(got, src32s, src64, k=FUSED_VS_SOURCE):
    """{point: (ratio in L2, ratio in max)}: the fused outputs' errors against float64 over k times the
    source model's own fp32 error at that point (the largest over the runs in ``src32s``); below 1: within
    bound. The source's error is taken no smaller than ROUNDOFF_PER_POINT times the point's position in
    forward order (relative): where the source is nearly exact (short sums), the fused kernels' own
    per-layer rounding is the larger noise."""
    out = {}
    for depth, (name, ref) in enumerate(src64.items(), start=1):
        if name not in got:
            continue
        own = [errors(src32[name], ref) for src32 in src32s]
        er, em = max(e[0] for e in own), max(e[1] for e in own)
        fr, fm = errors(got[name], ref)
        scale = ref.abs().max().item() if ref.numel() else 0.0
        floor = depth * ROUNDOFF_PER_POINT
        out[name] = (fr / (k * max(er, floor)), fm / (k * max(em, floor * scale, 1e-30)))
    return out


def source_classifier(model):
    """The source model's final nn.Linear (after the global mean of the head's output)."""
    import torch.nn as nn

    c = model.classifier
    return c if isinstance(c, nn.Linear) else [m for m in c if isinstance(m, nn.Linear)][-1]  # torchvision: Sequential


# The C++ engine's classifier GEMM sums its 1280-2560 products per logit in one fp32 FMA chain where MKL
# blocks them: measured up to 5.9x the source's own rounding error in that step (B0, 2x3x64x64, every
# ISA), all of it ~1e-6 relative. A wider factor here costs little sensitivity: a class bias off by 0.01 is
# still 11-16x past it on 64x64 (every ISA, 1 and 2 threads) and > 1000x on 1x1 and 2x3 images.
CLASSIFIER_VS_SOURCE = 16.0


def classifier_ratio(logits, head, src32s, src64, classifier, k=CLASSIFIER_VS_SOURCE):
    """(L2, max) ratio of the last step alone — mean over H×W and the classifier — applied to the fused
    model's own head output ``head``: the fused logits against that step in float64, over k times the source
    fp32 model's error in the same step (its logits against float64 of its own fp32 head output). A bias of
    one class off by 0.01 shows here undiluted by the rounding noise accumulated upstream.

    The source's error is taken no smaller than that of the same step summed as the engine sums it, one
    fp32 chain of K products per logit in order (computed here in PyTorch): on some shapes (batch 3, a 2x3
    image) MKL's blocked sums happen to be 3x more exact than on others, and the bound must not demand that
    of a plain chain."""
    import copy

    c64 = copy.deepcopy(classifier).double()
    with torch.inference_mode():
        step = lambda h: c64(h.double().mean((2, 3)))  # noqa: E731
        own = [errors(s["logits"], step(s["head"])) for s in src32s]
        ref = step(head)
        fr, fm = errors(logits, ref)
        pooled, weight = head.double().mean((2, 3)).float(), classifier.weight.detach().float()
        chain = torch.zeros(ref.shape, dtype=torch.float32) if classifier.bias is None else \
            classifier.bias.detach().float().expand(ref.shape).clone()
        for i in range(pooled.shape[1]):
            chain.addcmul_(pooled[:, i:i + 1], weight[:, i])
        own.append(errors(chain, ref))
    er, em = max(e[0] for e in own), max(e[1] for e in own)
    floor = 2.0 ** -24
    scale = src64["logits"].abs().max().item() if logits.numel() else 0.0
    return fr / (k * max(er, floor)), fm / (k * max(em, floor * scale, 1e-30))


# ---- ISA paths ----------------------------------------------------------------------------------------

def _isa_lists():
    from effnet_kernels import cpu as _cpu

    try:
        info = _cpu.isa_info()
    except RuntimeError:  # no _C: the tests that need it fail or skip on that, not on a shorter list
        return ["scalar"], []
    return info["compiled"], info["supported"]


# Every C++ ISA path this build has (its architecture's, from the C++ ISA list; test_package checks the list
# per architecture), and those this CPU runs. Tests parametrize over all of them and call require_isa, so a
# path this CPU cannot run is a reported skip, not a silently shorter list.
ARCH_ISAS, SUPPORTED_ISAS = _isa_lists()


def require_isa(isa: str) -> None:
    """Skip unless this CPU runs ``isa``: "needs AVX-512 hardware" is a hardware fact CI allows; anything else
    (no _C, an x86-64 CPU without AVX2) fails under EFFNET_REQUIRE_ALL=1."""
    from conftest import skip_or_fail

    if isa in SUPPORTED_ISAS:
        return
    if not SUPPORTED_ISAS:
        skip_or_fail("effnet_kernels._C is not built")
    if isa == "avx512":
        skip_or_fail("needs AVX-512 hardware: this CPU has no AVX-512 (the path's start-up self-test against the "
                     "scalar kernel guards it where it runs)")
    skip_or_fail(f"this CPU cannot run the {isa} path (supported: {SUPPORTED_ISAS})")


# ---- op inputs and float64 references ------------------------------------------------------------------


def make_se(c, s, seed=0, flat=False, dtype=torch.float32):
    """Random SE weights with gates spread over (0, 1) (not all ~0.5: a bug in the gate would hide)."""
    g = torch.Generator().manual_seed(seed)
    w1 = torch.randn(s, c, 1, 1, generator=g) * (2 / c ** 0.5)
    b1 = torch.randn(s, generator=g)
    w2 = torch.randn(c, s, 1, 1, generator=g) * (2 / s ** 0.5)
    b2 = torch.randn(c, generator=g)
    if flat:
        w1, w2 = w1.reshape(s, c), w2.reshape(c, s)
    return tuple(t.to(dtype) for t in (w1, b1, w2, b2))


def make_x(n, c, h, w, channels_last=False, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g) + 0.3  # SE inputs follow a Swish: mostly positive means
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def make_projection(cin, cout, seed=2, flat=False):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(cout, cin, 1, 1, generator=g) / cin ** 0.5
    return (w.reshape(cout, cin) if flat else w), torch.randn(cout, generator=g)


def make_inputs(n, c, h, w, k, channels_last=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g) * 2
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(c, 1, k, k, generator=g) / k
    bn = dict(bn_weight=torch.rand(c, generator=g) + 0.5, bn_bias=torch.randn(c, generator=g) * 0.2,
              bn_mean=torch.randn(c, generator=g) * 0.2, bn_var=torch.rand(c, generator=g) + 0.5)
    return x, weight, bn


def reference64(x, weight, bn, eps, stride, padding):
    return reference.dwconv_bn_swish(x.double(), weight.double(), **{k: v.double() for k, v in bn.items()},
                                     eps=eps, stride=stride, padding=padding)


def assert_close(y, ref, what=""):
    err, max_err = rel_error(y, ref), max_abs_error(y, ref)
    bound = 1e-4 * ref.abs().max().item()
    if not (err <= 1e-5 and max_err <= bound):
        diff = (y.double() - ref.double()).abs()
        idx = torch.nonzero(diff > bound)[:5].tolist()
        raise AssertionError(f"{what}: rel err {err:.3g} (≤1e-5), max err {max_err:.3g} (≤{bound:.3g}); "
                             f"worst at {idx}: got {[y[tuple(i)].item() for i in idx]}, "
                             f"want {[ref[tuple(i)].item() for i in idx]}")


def expected_format(x):
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def special_values_case(c: int):
    """(x, weight, bias): an input with NaN, ±inf, ±1e30 and a denormal in it (c >= 6), positive weights, zero bias."""
    x = torch.randn(1, c, 6, 7)
    x[0, 0, 2, 2] = float("nan")
    x[0, 1, 0, 0] = float("inf")
    x[0, 2, 3, 3] = float("-inf")
    x[0, 3] = 1e30
    x[0, 4] = -1e30
    x[0, 5, 1, 1] = 1e-40  # denormal
    w = torch.rand(c, 1, 3, 3) + 0.1
    b = torch.zeros(c)
    return x, w, b


def assert_special_like_eager(y, x, w, b):
    ref = torch.nn.functional.silu(torch.nn.functional.conv2d(x, w, b, padding=1, groups=x.shape[1]))
    assert torch.equal(torch.isnan(y), torch.isnan(ref))
    assert torch.equal(torch.isinf(y), torch.isinf(ref)) and torch.equal(y[torch.isinf(y)], ref[torch.isinf(ref)])
    finite = torch.isfinite(ref)
    assert torch.allclose(y[finite], ref[finite], rtol=1e-5, atol=1e-6)
    assert (y[0, 4] == 0).all() and (y[0, 3] >= 1e30).all()


_LAST = {}


def memo_last(key, compute):
    """``compute()``, or the value computed for the same ``key`` by the previous call (one entry: tests
    parametrized with the shape outermost — layouts, ISAs and backends inside — reuse a shape's float64
    reference instead of recomputing it for each). ``key`` None: no memo."""
    if key is None:
        return compute()
    if _LAST.get("key") != key:
        _LAST.clear()
        _LAST.update(key=key, value=compute())
    return _LAST["value"]


# ---- a fused model's points against its source's (tests/test_fuse_any.py, tests/test_fuse.py) ----

def flat_outputs(out):
    """A model's output as {name: tensor}: a tensor, a list / tuple of feature maps, a dict of endpoints."""
    if isinstance(out, torch.Tensor):
        return {"out": out}
    if isinstance(out, dict):
        return {f"out.{k}": v for k, v in out.items()}
    return {f"out.{i}": v for i, v in enumerate(out)}


def swap_points(model, fused):
    """(source path -> name, {fused unit: (name, dw name or None)}): the source modules whose outputs the
    fused modules' equal, from the fuse report."""
    report = ek.fuse_report(fused)
    by_path = dict(fused.named_modules())
    src_modules = dict(model.named_modules())
    source, units = {}, {}
    for e in report.swapped:
        unit = by_path[e.path] if e.path else fused
        if not isinstance(unit, swapped.FusedUnit):  # a container whose forward became one chain
            continue
        source[e.output_of] = e.path
        dw = None
        src = src_modules[e.path] if e.path else model
        if isinstance(unit, swapped.FusedMBConv) and not type(src).__module__.startswith("efficientnet_pytorch") \
                and not isinstance(src, nn.Conv2d):
            # (efficientnet_pytorch applies its depthwise activation through a module it shares with the
            # expand conv and the SE: no single module outputs the depthwise result there; a block read from a
            # flat run of a Sequential (MNASNet.layers) is compared at its output only)
            dw = e.path + ".dw"
            source[_path_of(model, _depthwise_of(src))] = dw
        units[unit] = (e.path, dw)
    return source, units


def _path_of(model, module):
    return next(p for p, m in model.named_modules() if m is module)


def _record(model, x, source_paths):
    mods = dict(model.named_modules())
    got = {}
    hooks = [mods[p].register_forward_hook(lambda m, a, o, k=k: got.__setitem__(k, o.detach().clone()))
             for p, k in source_paths.items()]
    try:
        with torch.inference_mode():
            got.update(flat_outputs(model(x)))
    finally:
        for h in hooks:
            h.remove()
    return got


def source_outputs_at(model, fused, x):
    """The source model's outputs at every point fused replaces: ([fp32 on x, fp32 on x in the other memory
    format], float64)."""
    source_paths, _ = swap_points(model, fused)
    other = x.contiguous() if not x.is_contiguous() else x.contiguous(memory_format=torch.channels_last)
    m64 = copy.deepcopy(model).double()
    with float64_convs():  # (PyTorch's float64 convolutions, faster: tests/test_float64.py)
        ref = _record(m64, x.double(), source_paths)
    return [_record(model, x, source_paths), _record(model, other, source_paths)], ref


def fused_points(fused, model, x):
    """The fused model's outputs on x and every swapped module's (and block's depthwise) output inside
    the engines."""
    _, units = swap_points(model, fused)
    with torch.inference_mode():
        out, taps = swapped.engine_taps(fused, lambda: fused(x))
    got = flat_outputs(out)
    for unit, (name, dw) in units.items():
        if "out" in taps.get(unit, {}):
            got[name] = taps[unit]["out"]
            if dw is not None:
                got[dw] = taps[unit]["dw"]
    # every swapped module is compared, but a stem / head conv whose chain folds the container's SiLU in
    # (efficientnet_pytorch run as one chain) has no tap of its own output: its SiLU'd output feeds the
    # next block's, which is compared
    folded = sum(1 for u in units if "out" not in taps.get(u, {}) and "out_silu" in taps.get(u, {}))
    return got, len(units) - folded


def worst(ratios):
    name, (r2, rm) = max(ratios.items(), key=lambda kv: max(kv[1]))
    return max(r2, rm), name


def ordered(src64, got):
    # compare_points' floor counts positions in forward order: the source's hooks fire in that order
    return {k: v for k, v in src64.items() if k in got}


