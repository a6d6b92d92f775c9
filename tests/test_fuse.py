"""fuse(): outputs match the source model (randomized BN statistics) for this package's model at integer and
fractional φ and for torchvision's / timm's (both padding conventions, BN eps 1e-5 and 1e-3) at B0, B3 and B5;
batch 1 and 3, odd resolutions, both memory formats in; the C++ engine and the registered-op path agree;
state_dict round trip, torch.compile(fullgraph=True), torch.export with a dynamic batch, refusals, bad
input, concurrent callers, no global setting changed."""
import copy
import threading

import pytest
import torch

import effnet_kernels as ek
from effnet_kernels import swapped
from effnet_kernels.float64 import float64_convs
from effnet_kernels.fuse import fuse, fuse_report
from effnet_kernels.testing import randomize_bn_, rel_error

from conftest import import_or_skip
from helpers import ARCH_ISAS, FUSED_VS_SOURCE, classifier_ratio, compare_points, fused_points, outputs_at, \
    require_isa, source_classifier, source_points


# fuse()'s sample forward pass at the tests' scale (its default is one 224 x 224 image)
SAMPLE = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(123))


def _x(size, channels_last=False, seed=1):
    x = torch.randn(*size, generator=torch.Generator().manual_seed(seed))
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def source_outputs(model, x):
    """The source model's outputs at every point (stem, each block's depthwise conv and output, head,
    logits): ([fp32 on x as given, fp32 on x in the other memory format], float64)."""
    m64 = copy.deepcopy(model).double()
    other = x.contiguous() if not x.is_contiguous() else x.contiguous(memory_format=torch.channels_last)
    points = source_points(model)
    with float64_convs():  # (PyTorch's float64 convolutions, faster: tests/test_float64.py)
        ref = outputs_at(m64, x.double(), source_points(m64))
    return [outputs_at(model, x, points), outputs_at(model, other, points)], ref


def engine_outputs(fused, x, model):
    """The fused model's points inside the C++ engines (every swapped module's output, each block's depthwise
    output) and its output, named as source_outputs names the source's."""
    got, _ = fused_points(fused, model, x)
    got["logits"] = got.pop("out")
    output_of = {e.path: e.output_of for e in fuse_report(fused).swapped}
    names = {p: name for name, p in _point_paths(model).items()}
    out = {}
    for k, v in got.items():
        base, dw = (k[:-3], ".dw") if k.endswith(".dw") else (k, "")
        out[names.get(output_of.get(base, base) + dw, k)] = v
    return out


def _point_paths(model):
    """{point name: the source module's path} for source_points' points (a block's depthwise: "<path>.dw")."""
    paths = {id(m): p for p, m in model.named_modules()}
    out = {}
    for name, m in source_points(model).items():
        if name.endswith(".dw"):
            out[name] = paths[id(source_points(model)[name[:-3]])] + ".dw"
        else:
            out[name] = paths[id(m)]
    return out


def all_ratios(got, src32s, src64, model):
    """compare_points at every point plus "classifier": the last step alone, on the fused head output."""
    ratios = compare_points(got, src32s, src64)
    ratios["classifier"] = classifier_ratio(got["logits"], got["head"], src32s, src64, source_classifier(model))
    return ratios


def ops_outputs(fused, x, backend="cpp"):
    """The registered-op path's output (every fused module sent through the ops with ``backend``)."""
    units = [m for m in fused.modules() if isinstance(m, swapped.FusedUnit)]
    for u in units:
        u.ops_backend = backend
    try:
        with torch.inference_mode():
            return {"logits": fused(x)}
    finally:
        for u in units:
            u.ops_backend = None


def worst(ratios):
    name = max(ratios, key=lambda k: max(ratios[k]))
    return max(ratios[name]), name, ratios[name]


def assert_within(got, src32s, src64, what, model=None):
    """Every point of ``got`` within FUSED_VS_SOURCE x the source fp32 model's own error there (L2 and max);
    with ``model``, the classifier step too."""
    ratios = compare_points(got, src32s, src64) if model is None or "head" not in got \
        else all_ratios(got, src32s, src64, model)
    assert "logits" in ratios, sorted(ratios)
    r, name, pair = worst(ratios)
    assert r <= 1, (f"{what}: at {name} the error is {pair[0]:.2f} / {pair[1]:.2f} (L2 / max) times the bound "
                    f"({FUSED_VS_SOURCE} x the source fp32 model's own error there)")


def assert_matches_source(out, model, x):
    """out (a fused model's logits for x) against the source model in float64, within FUSED_VS_SOURCE x the
    source model's own fp32 error."""
    other = x.contiguous() if not x.is_contiguous() else x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        src32s = [{"logits": model(x)}, {"logits": model(other)}]
        with float64_convs():
            src64 = {"logits": copy.deepcopy(model).double()(x.double())}
    assert_within({"logits": out}, src32s, src64, "logits")


def check(model, size=(2, 3, 97, 113), channels_last=False):
    """Fused (C++ engine and registered-op path) against the source model run in float64, at every block's
    output, the stem's and head's (engine) and the logits, each within FUSED_VS_SOURCE x the source model's
    own fp32 error at that point (random, calibrated BN statistics)."""
    randomize_bn_(model.eval(), calibration_size=(4, 3) + size[2:])
    fused = fuse(model, example_inputs=SAMPLE)  # (proven at 64 x 64 and a second shape; checked at size)
    report = fuse_report(fused)
    assert not report.left, report
    x = _x(size, channels_last)
    src32s, src64 = source_outputs(model, x)
    assert src64["logits"].abs().mean() > 1e-2, "logits too small to compare: BN statistics not randomized?"
    engine = engine_outputs(fused, x, model)
    assert set(engine) == set(src64), "the engine's taps and the source model's points differ"
    with torch.inference_mode():
        assert torch.equal(engine["logits"], fused(x))
    assert_within(engine, src32s, src64, "fused (C++ engine)", model)
    assert_within(ops_outputs(fused, x), src32s, src64, "fused (registered ops)")
    return fused


@pytest.mark.parametrize("arch,padding,size,channels_last", [
    ("b0", "symmetric", (2, 3, 97, 113), False),
    (0.5, "same", (1, 3, 64, 71), True),   # fractional phi
    (1.37, "symmetric", (3, 3, 61, 59), False),
    ("b3", "same", (3, 3, 131, 137), True),
    ("b5", "symmetric", (1, 3, 131, 137), False),
])
def test_ours(arch, padding, size, channels_last):
    check(ek.efficientnet(arch, padding=padding), size, channels_last)


def _odd_size(name):
    """B0 at 227 x 233; the larger models at 131 x 137 (as odd, a third of the pixels)."""
    return (227, 233) if name.endswith("0") else (131, 137)


@pytest.mark.parametrize("phi,batch,channels_last", [(0, 1, False), (3, 3, True), (5, 1, True)])
def test_torchvision(phi, batch, channels_last):
    tv = import_or_skip("torchvision")
    check(getattr(tv.models, f"efficientnet_b{phi}")(), (batch, 3, *_odd_size(str(phi))), channels_last)


@pytest.mark.parametrize("name,batch,channels_last", [
    ("efficientnet_b0", 3, True), ("efficientnet_b3", 1, False), ("efficientnet_b5", 1, True),
    ("tf_efficientnet_b0", 1, False), ("tf_efficientnet_b3", 3, False), ("tf_efficientnet_b5", 1, True),
])
def test_timm(name, batch, channels_last):
    timm = import_or_skip("timm")
    check(timm.create_model(name), (batch, 3, *_odd_size(name)), channels_last)


@pytest.fixture(scope="module")
def b0_pair():
    model = randomize_bn_(ek.efficientnet("b0").eval(), calibration_size=(4, 3, 64, 64))
    return model, fuse(model, example_inputs=SAMPLE)


def test_state_dict_round_trip(b0_pair):
    model, fused = b0_pair
    other = fuse(randomize_bn_(ek.efficientnet("b0").eval(), seed=5, calibration_size=(4, 3, 64, 64)),
                 example_inputs=SAMPLE)
    x = _x((1, 3, 64, 64))
    with torch.inference_mode():
        before = other(x)  # builds its C++ engine from its own weights
        other.load_state_dict(fused.state_dict())  # must rebuild the engine
        assert not torch.equal(before, fused(x))
        assert torch.equal(other(x), fused(x))
    assert set(fused.state_dict()) == set(other.state_dict())
    with pytest.raises(RuntimeError):
        fuse(ek.efficientnet("b1").eval(), example_inputs=SAMPLE).load_state_dict(fused.state_dict())


def test_deepcopy_pickle_and_cpu_autocast(b0_pair):
    import io
    model, fused = b0_pair
    x = _x((1, 3, 64, 64))
    with torch.inference_mode():
        want = fused(x)
        assert torch.equal(copy.deepcopy(fused)(x), want)
        buf = io.BytesIO()
        torch.save(fused, buf)
        buf.seek(0)
        assert torch.equal(torch.load(buf, weights_only=False)(x), want)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = fused(x)  # (stem to classifier in one engine chain: fp32, as the CPU kernels compute)
        assert out.dtype == torch.float32 and torch.equal(out, want)
    with pytest.raises(TypeError, match="x must be float32 on the CPU, where fused modules run in float32"):
        copy.deepcopy(fused).to(torch.bfloat16)(x.bfloat16())
    with pytest.raises(TypeError, match="x must be float32 on the CPU, where fused modules run in float32"):
        fused(x.double())


def test_engine_follows_weight_changes(b0_pair):
    model, _ = b0_pair
    fused = fuse(model, example_inputs=SAMPLE)
    x = _x((1, 3, 64, 64))
    block = fused.blocks[3][0]
    with torch.inference_mode():
        base = fused(x)
    with torch.no_grad():
        fused.head.bias.add_(1.0)  # in place
    with torch.inference_mode():
        assert not torch.allclose(fused(x), base, atol=1e-3)
    fused.head.bias = fused.head.bias - 1.0  # reassigned
    with torch.inference_mode():
        assert torch.allclose(fused(x), base, atol=1e-4)
    block.load_state_dict({k: v * 0 for k, v in block.state_dict().items()})  # a submodule
    with torch.inference_mode():
        assert not torch.allclose(fused(x), base, atol=1e-3)
    fused.blocks.half()  # a submodule's dtype: the op path, never the fp32 engine reading fp16 memory
    with torch.inference_mode():
        assert torch.isfinite(fused(x)).all()
    fused.stem.bias = torch.zeros(7)  # inconsistent shapes: a clear error, no out-of-bounds copy
    fused.blocks.float()
    with pytest.raises(ValueError, match="buffers disagree"):
        fused(x)


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::torch.jit.TracerWarning")
def test_refuses_tracing_and_gradients(b0_pair):
    _, fused = b0_pair
    x = _x((1, 3, 32, 32))
    with pytest.raises(RuntimeError, match="torch.export"):
        torch.jit.trace(fused, x, check_trace=False)
    with pytest.raises(RuntimeError, match="inference-only"):
        fused(x.requires_grad_())


def test_inference_only(b0_pair):
    _, fused = b0_pair
    with pytest.raises(RuntimeError, match="inference-only"):
        fused.train()
    assert fused.eval() is fused and not fused.training


def test_refusals():
    with pytest.raises(ValueError, match=r"call model.eval\(\)"):
        fuse(ek.efficientnet("b0").train())
    with pytest.raises(TypeError, match=r"model must contain a convolution, got Linear"):
        fuse(torch.nn.Linear(3, 3).eval())
    with pytest.raises(TypeError, match=r"fuse\(\): model must be an nn.Module, got str"):
        fuse("efficientnet_b0")
    with pytest.raises(TypeError, match="inplace"):
        fuse(ek.efficientnet("b0").eval(), inplace="yes")


def test_bad_input(b0_pair):
    _, fused = b0_pair
    with pytest.raises(ValueError, match=r"x must be \(N, 3, H, W\)"):
        fused(torch.randn(1, 4, 32, 32))
    with pytest.raises(ValueError, match=r"x must be \(N, 3, H, W\)"):
        fused(torch.randn(3, 32, 32))
    with pytest.raises(TypeError, match="floating-point"):
        fused(torch.zeros(1, 3, 32, 32, dtype=torch.int64))
    with pytest.raises(TypeError, match="torch.Tensor"):
        fused([1.0, 2.0])


def assert_points_match_source(fused, model, x, x_source=None):
    """Every point of the fused model on x (C++ engine and registered-op path, and the classifier step)
    against the source model on x_source (default x) in float64, as check() does."""
    src32s, src64 = source_outputs(model, x if x_source is None else x_source)
    with torch.inference_mode():
        out = fused(x)
    engine = engine_outputs(fused, x, model)
    assert torch.equal(engine["logits"], out)
    assert_within(engine, src32s, src64, "fused (C++ engine)", model)
    assert_within(ops_outputs(fused, x), src32s, src64, "fused (registered ops)")


@pytest.mark.parametrize("size", [(2, 3, 1, 1), (3, 3, 2, 3)])
def test_empty_batch_and_tiny_images(b0_pair, size):
    model, fused = b0_pair
    with torch.inference_mode():
        assert fused(torch.randn(0, 3, 32, 32)).shape == (0, 1000)
    assert_points_match_source(fused, model, _x(size))


def test_non_contiguous_input(b0_pair):
    model, fused = b0_pair
    big = _x((2, 3, 80, 150))
    x = big[:, :, 5:69, ::2]  # offset and strided
    assert_points_match_source(fused, model, x, x.contiguous())


def test_concurrent_callers_match_serial(b0_pair):
    _, fused = b0_pair
    xs = [_x((1, 3, 64, 64), seed=s) for s in range(8)]
    with torch.inference_mode():
        serial = [fused(x) for x in xs]
    results = [None] * len(xs)

    def work(i):
        with torch.inference_mode():
            for _ in range(3):
                results[i] = fused(xs[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, serial):
        assert torch.equal(got, want)


def test_fuse_changes_no_global_setting():
    state = lambda: (torch.get_num_threads(), torch.get_num_interop_threads(), torch.backends.mkldnn.enabled,  # noqa: E731
                     torch.get_float32_matmul_precision(), torch.is_grad_enabled(), torch.get_default_dtype())
    before = state()
    fused = fuse(ek.efficientnet("b0").eval(), example_inputs=SAMPLE)
    with torch.inference_mode():
        fused(torch.randn(1, 3, 32, 32))
    assert state() == before


def test_torch_compile_fullgraph(b0_pair):
    model, fused = b0_pair
    x = _x((2, 3, 64, 64))
    compiled = torch.compile(fused, fullgraph=True)  # inductor
    with torch.inference_mode():
        out = compiled(x)
    assert_matches_source(out, model, x)


def test_torch_export_dynamic_batch(b0_pair):
    model, fused = b0_pair
    batch = torch.export.Dim("batch", min=1, max=64)
    ep = torch.export.export(fused, (_x((2, 3, 64, 64)),), dynamic_shapes={"x": {0: batch}})
    for n in (1, 3):
        x = _x((n, 3, 64, 64), seed=n)
        with torch.inference_mode():
            out = ep.module()(x)
        assert_matches_source(out, model, x)


@pytest.mark.parametrize("size,padding", [((1, 3, 224, 224), "symmetric"), ((2, 3, 227, 233), "same")])
def test_banded_expand_depthwise_matches_whole_tensor_path(size, padding):
    # B0's second block expands to 96 x (H/2) x (W/2) floats per sample, past the banding threshold at
    # these sizes: the banded path (default) and the whole-tensor path give the same logits (only the SE
    # pool's summation order differs).
    model = randomize_bn_(ek.efficientnet("b0", padding=padding).eval(), calibration_size=(4, 3) + size[2:])
    fused = fuse(model, example_inputs=_x((1,) + tuple(size[1:])))
    x = _x(size)
    with torch.inference_mode():
        fused(x)
        (net,) = swapped.live_nets(fused)
        net.set_profiling(True)
        banded = fused(x)
        assert any(k.startswith("expand_dw.") for k, _ in net.last_profile())
        net.set_band_fusion(False)
        whole = fused(x)
        assert not any(k.startswith("expand_dw.") for k, _ in net.last_profile())
        net.set_band_fusion(True)
        net.set_profiling(False)
    assert rel_error(banded, whole) <= 1e-5


_MUTATIONS = {  # small real bugs, in the fused model's folded weights (block 5: 240 channels at 8x8 for 64x64)
    "depthwise bias +0.01": lambda f: f.blocks[3][0].dw_bias[17].add_(0.01),
    "classifier bias +0.01": lambda f: f.classifier.bias[7].add_(0.01),
    # (block 5's largest tap: a tap ~0 changes nothing measurable, in any implementation)
    "one depthwise tap x1.001": lambda f: f.blocks[3][0].dw_weight.view(-1)[
        f.blocks[3][0].dw_weight.abs().argmax()].mul_(1.001),
}


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("isa", ARCH_ISAS)
def test_small_bugs_exceed_the_bounds_five_times(isa, threads):
    """The bounds above can fail: each mutation moves some point (engine: stem, blocks, head, logits; op
    path: blocks, logits) at least 5x past its bound, on every ISA this CPU runs and 1 and 2 threads, while
    the unmutated model stays within them."""
    from effnet_kernels.cpu import use_isa

    require_isa(isa)
    model = randomize_bn_(ek.efficientnet("b0").eval(), calibration_size=(4, 3, 64, 64))
    x = _x((2, 3, 64, 64))
    src32s, src64 = source_outputs(model, x)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with use_isa(isa):
            for name, mutate in {"none": None, **_MUTATIONS}.items():
                fused = fuse(model, example_inputs=x[:1])
                if mutate is not None:
                    with torch.no_grad():
                        mutate(fused)
                for path, got in (("engine", engine_outputs(fused, x, model)), ("ops", ops_outputs(fused, x))):
                    ratios = all_ratios(got, src32s, src64, model) if "head" in got else \
                        compare_points(got, src32s, src64)
                    r, where, _ = worst(ratios)
                    if mutate is None:
                        assert r <= 1, f"{isa} {threads}t {path}: unmutated model {r:.2f}x its bound at {where}"
                    else:
                        assert r >= 5, f"{isa} {threads}t {path}: {name} only {r:.2f}x its bound (at {where})"
    finally:
        torch.set_num_threads(previous)
