"""effnet_kernels.ops squeeze-excitation: the stand-alone op, the gate and the gate folded into the
projection, against a float64 reference, torchvision's SqueezeExcitation and timm's SqueezeExcite, on
every SE shape of B0–B7 and on awkward ones, both layouts, every backend and ISA path here."""
import pytest
import torch
import torch.nn as nn

from effnet_kernels import cpu as _cpu, ops, reference
from effnet_kernels.cpu import _cache
from effnet_kernels.ops._validate import output_memory_format
from effnet_kernels.scaling import se_layer_shapes
from effnet_kernels.testing import rel_error

from conftest import import_or_skip
from helpers import ARCH_ISAS, SUPPORTED_ISAS as ISAS, make_projection, make_se, make_x, memo_last, require_isa

BACKENDS = ["cpp", "torch"] if ISAS else ["torch"]


def ref64(x, weights):
    return reference.squeeze_excite(x.double(), *[t.double() for t in weights])


def check_se(x, weights, backend, what, tol=1e-6, ref_key=None):
    y = ops.squeeze_excite(x, *weights, backend=backend)
    ref = memo_last(ref_key, lambda: ref64(x, weights))  # (ref_key: names x's and the weights' values)
    assert y.shape == x.shape and y.dtype == x.dtype, what
    if backend != "torch":  # (the eager reference keeps whatever layout eager gives)
        assert y.is_contiguous(memory_format=output_memory_format(x)), f"{what}: output layout"
    err = rel_error(y, ref)
    assert err <= tol, f"{what}: rel err {err:.3g} > {tol}"
    return y


# The SE input's shape: the block's output channels do not enter the SE op (94 of B0-B7's 110 SE shapes differ).
SHAPES = list(dict.fromkeys(s[:4] for s in se_layer_shapes(range(8))))


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("i", range(len(SHAPES)), ids=lambda i: "c{}_s{}_{}x{}".format(*SHAPES[i]))
def test_b0_b7_se_shapes_against_torchvision(i, channels_last):
    """Every SE shape of B0-B7 at batch 1 in both memory formats, and at batch 3 (an odd batch) in one of
    them, alternating with the shape (a batch's planes are independent: the odd batch checks the batch
    stride, which both formats exercise over the shapes)."""
    from torchvision.ops import SqueezeExcitation

    shape = SHAPES[i]
    c, s, h, w = shape
    se = SqueezeExcitation(c, s, activation=nn.SiLU).eval()
    weights = make_se(c, s)
    with torch.no_grad():
        for p, t in zip((se.fc1.weight, se.fc1.bias, se.fc2.weight, se.fc2.bias), weights):
            p.copy_(t)
    for n in ((1, 3) if i % 2 == channels_last else (1,)):
        x = make_x(n, c, h, w, channels_last, seed=n)
        with torch.no_grad():
            eager = se(x)
        for backend in BACKENDS:  # (the module's parameters, detached: the kernels compute no gradients)
            weights = tuple(p.detach() for p in (se.fc1.weight, se.fc1.bias, se.fc2.weight, se.fc2.bias))
            y = check_se(x, weights, backend, f"{shape} n={n}", ref_key=("b0_b7", shape, n))
            # against the module itself (fp32 eager): same error class as the float64 comparison
            assert rel_error(y, eager) <= 2e-6, f"{shape} n={n} {backend}: vs torchvision {rel_error(y, eager):.3g}"


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_against_timm_squeeze_excite(channels_last):
    import_or_skip("timm")
    from timm.models._efficientnet_blocks import SqueezeExcite

    for c, s in ((96, 4), (1152, 48), (37, 1)):
        se = SqueezeExcite(c, rd_channels=s, act_layer=nn.SiLU).eval()
        with torch.no_grad():
            for p, t in zip((se.conv_reduce.weight, se.conv_reduce.bias, se.conv_expand.weight, se.conv_expand.bias),
                            make_se(c, s, seed=c)):
                p.copy_(t)
            x = make_x(2, c, 9, 7, channels_last)
            eager = se(x)
        for backend in BACKENDS:
            weights = tuple(p.detach() for p in (se.conv_reduce.weight, se.conv_reduce.bias, se.conv_expand.weight,
                                                 se.conv_expand.bias))
            y = check_se(x, weights, backend, f"timm c={c} s={s} {backend}")  # against float64
            assert rel_error(y, eager) <= 2e-6, f"timm c={c} s={s} {backend}: {rel_error(y, eager):.3g}"
        # timm's module is the SE the op computes (not, e.g., a gate without the SiLU): within fp32 of float64.
        assert rel_error(eager, ref64(x, weights)) <= 1e-6, f"timm c={c} s={s}: eager vs float64"


@pytest.mark.parametrize("n,c,h,w,s", [
    (1, 1, 1, 1, 1), (2, 3, 5, 7, 1), (3, 17, 4, 9, 5), (1, 67, 3, 3, 13), (2, 131, 2, 70, 7), (5, 8, 13, 1, 2),
    (1, 16, 67, 9, 4), (3, 40, 1, 1, 10),
])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("flat", [False, True], ids=["conv-weights", "flat-weights"])
def test_awkward_shapes(n, c, h, w, s, channels_last, flat):
    weights = make_se(c, s, seed=c + s, flat=flat)
    for backend in BACKENDS:
        check_se(make_x(n, c, h, w, channels_last), weights, backend, f"{(n, c, h, w, s)} {backend}")


@pytest.mark.parametrize("isa", ARCH_ISAS)
def test_every_isa_path(isa):
    require_isa(isa)
    with _cpu.use_isa(isa):
        for cl in (False, True):
            for n, c, h, w, s in ((2, 19, 5, 6, 3), (1, 1152, 7, 7, 48), (3, 33, 11, 4, 1)):
                check_se(make_x(n, c, h, w, cl), make_se(c, s), "cpp", f"isa={isa} cl={cl} {(n, c, h, w, s)}")


@pytest.mark.parametrize("view", [
    lambda x: x[:, ::2],                                   # every other channel
    lambda x: x[..., 1:],                                  # cropped width
    lambda x: x.permute(0, 1, 3, 2),                       # transposed plane
    lambda x: x.contiguous(memory_format=torch.channels_last)[:, 3:],  # channels_last, channel offset
], ids=["channel-step", "crop", "transpose", "cl-offset"])
def test_non_contiguous_inputs(view):
    x = view(make_x(2, 24, 7, 8))
    c = x.shape[1]
    for backend in BACKENDS:
        check_se(x, make_se(c, 3), backend, f"view {tuple(x.shape)} {x.stride()} {backend}")


def test_empty_batch():
    for backend in BACKENDS:
        y = ops.squeeze_excite(torch.randn(0, 8, 3, 3), *make_se(8, 2), backend=backend)
        assert y.shape == (0, 8, 3, 3)


def test_gate_saturates_and_propagates_nan():
    c = 6
    w1, b1, w2, b2 = make_se(c, 2)
    pooled = torch.zeros(3, c)
    pooled[0, 0] = float("nan")     # a NaN mean reaches every channel of its sample through the reduce
    b2 = b2.clone()
    b2[1], b2[2] = 1e30, -1e30      # saturated gates: exactly 1 and 0
    for backend in BACKENDS:
        g = ops.se_gate(pooled, w1, b1, w2, b2, backend=backend)
        want = reference.se_gate(pooled.double(), w1.double(), b1.double(), w2.double(), b2.double())
        assert torch.isnan(g[0]).all(), backend
        assert (g[1:, 1] == 1).all() and (g[1:, 2] == 0).all(), backend
        assert rel_error(g[1:], want[1:]) <= 1e-6, backend


def test_weight_changes_are_seen():
    # Packed weights are cached per tensor: an in-place update must not serve the old pack.
    x = make_x(2, 24, 5, 5)
    w1, b1, w2, b2 = [t.clone() for t in make_se(24, 6)]
    before = ops.squeeze_excite(x, w1, b1, w2, b2)
    with torch.no_grad():
        w2.mul_(-1)
        b1.add_(1)
    after = ops.squeeze_excite(x, w1, b1, w2, b2)
    assert rel_error(after, ref64(x, (w1, b1, w2, b2))) <= 1e-6
    assert not torch.allclose(before, after)
    # `w.data = other` keeps the version counter: the data pointer and shape still show the change.
    w2.data = torch.randn(24, 6, 1, 1)
    assert rel_error(ops.squeeze_excite(x, w1, b1, w2, b2), ref64(x, (w1, b1, w2, b2))) <= 1e-6
    # Writes through .data bump no counter at all: clear_caches() is the documented way out.
    with torch.no_grad():
        w2.data.mul_(0.5)
    ops.clear_caches()
    assert rel_error(ops.squeeze_excite(x, w1, b1, w2, b2), ref64(x, (w1, b1, w2, b2))) <= 1e-6
    # Two views of one base tensor are two different weight sets.
    base = torch.randn(2 * 6, 24)
    y1 = ops.squeeze_excite(x, base[:6], b1, w2, b2)
    y2 = ops.squeeze_excite(x, base[6:], b1, w2, b2)
    assert rel_error(y2, ref64(x, (base[6:], b1, w2, b2))) <= 1e-6 and not torch.allclose(y1, y2)


# ------------------------------------------------------------------------------------------------
# se_project: the gate folded into the projection (+ residual)


def eager_block_tail(x, se_module, conv, bn, residual):
    out = bn(conv(se_module(x)))
    return out if residual is None else out + residual


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("n,cin,s,cout,h,w", [
    (1, 32, 8, 16, 24, 24),     # Cout < HW: the gate goes into per-sample weights
    (3, 1152, 48, 320, 7, 7),   # Cout > HW: into the activation
    (2, 37, 1, 50, 3, 5),       # awkward, Cout > HW
    (2, 40, 10, 40, 9, 11),     # a residual block shape
])
@pytest.mark.parametrize("with_residual", [False, True], ids=["plain", "residual"])
def test_se_project_against_eager_se_conv_bn(n, cin, s, cout, h, w, channels_last, with_residual):
    from torchvision.ops import SqueezeExcitation

    se = SqueezeExcitation(cin, s, activation=nn.SiLU).eval()
    conv = nn.Conv2d(cin, cout, 1, bias=False).eval()
    bn = nn.BatchNorm2d(cout, eps=1e-3).eval()
    g = torch.Generator().manual_seed(cin)
    with torch.no_grad():
        for p, t in zip((se.fc1.weight, se.fc1.bias, se.fc2.weight, se.fc2.bias), make_se(cin, s)):
            p.copy_(t)
        conv.weight.copy_(make_projection(cin, cout)[0])
        bn.weight.copy_(torch.rand(cout, generator=g) + 0.5)
        bn.bias.copy_(torch.randn(cout, generator=g) * 0.2)
        bn.running_mean.copy_(torch.randn(cout, generator=g) * 0.2)
        bn.running_var.copy_(torch.rand(cout, generator=g) + 0.5)
    x = make_x(n, cin, h, w, channels_last)
    residual = make_x(n, cout, h, w, channels_last, seed=9) if with_residual else None
    with torch.no_grad():
        eager = eager_block_tail(x, se, conv, bn, residual)
        pw, pb = reference.fold_bn(conv.weight.double(), bn.weight.double(), bn.bias.double(),
                                   bn.running_mean.double(), bn.running_var.double(), bn.eps)
        pooled = x.double().mean((2, 3)).float()
        sew = (se.fc1.weight, se.fc1.bias, se.fc2.weight, se.fc2.bias)
        ref = reference.se_project(x.double(), pooled.double(), *[t.double() for t in sew], pw, pb,
                                   None if residual is None else residual.double())
        for backend in BACKENDS:
            out = ops.se_project(x, pooled, *sew, pw.float(), pb.float(), residual, backend=backend)
            what = f"{(n, cin, s, cout, h, w)} cl={channels_last} res={with_residual} {backend}"
            assert out.shape == (n, cout, h, w) and out.dtype == torch.float32, what
            if backend != "torch":
                assert out.is_contiguous(memory_format=output_memory_format(x)), f"{what}: layout"
            assert rel_error(out, ref) <= 2e-6, f"{what}: vs float64 {rel_error(out, ref):.3g}"
            assert rel_error(out, eager) <= 5e-6, f"{what}: vs eager SE→conv→BN {rel_error(out, eager):.3g}"


def test_se_project_flat_weights_views_and_empty():
    cin, s, cout = 24, 6, 12
    x = make_x(2, cin, 5, 4)[:, :, :, ::1].transpose(2, 3)  # non-contiguous in both layouts
    pooled = x.mean((2, 3))
    sew = make_se(cin, s, flat=True)
    pw, pb = make_projection(cin, cout, flat=True)
    ref = reference.se_project(x.double(), pooled.double(), *[t.double() for t in sew], pw.double(), pb.double())
    for backend in BACKENDS:
        out = ops.se_project(x, pooled, *sew, pw, pb, backend=backend)
        assert rel_error(out, ref) <= 2e-6, backend
        empty = ops.se_project(x[:0], pooled[:0], *sew, pw, pb, backend=backend)
        assert empty.shape == (0, cout, 4, 5)


# ------------------------------------------------------------------------------------------------
# Registration, compile, errors

def test_opcheck_and_compile():
    x = make_x(2, 24, 5, 6, True)
    sew = make_se(24, 6)
    se64 = [t.double() for t in sew]
    pooled = x.mean((2, 3))
    pw, pb = make_projection(24, 16)
    res = make_x(2, 16, 5, 6, True, seed=4)
    ops_ = torch.ops.effnet_kernels
    torch.library.opcheck(ops_.squeeze_excite.default, (x, *sew))
    torch.library.opcheck(ops_.se_gate.default, (pooled, *sew))
    torch.library.opcheck(ops_.se_project.default, (x, pooled, *sew, pw, pb, res))
    torch.library.opcheck(ops_.se_project.default, (x, pooled, *sew, pw, pb, None))
    # opcheck compares each op only with itself: the registered ops (what torch.compile calls) against float64.
    gate64 = reference.se_gate(pooled.double(), *se64)
    out64 = reference.se_project(x.double(), pooled.double(), *se64, pw.double(), pb.double(), res.double())
    for name, got, ref, tol in (("squeeze_excite", ops_.squeeze_excite(x, *sew), ref64(x, sew), 1e-6),
                                ("se_gate", ops_.se_gate(pooled, *sew), gate64, 1e-6),
                                ("se_project", ops_.se_project(x, pooled, *sew, pw, pb, res), out64, 2e-6),
                                ("se_project without residual", ops_.se_project(x, pooled, *sew, pw, pb, None),
                                 out64 - res.double(), 2e-6)):
        assert rel_error(got, ref) <= tol, f"torch.ops.effnet_kernels.{name}: vs float64 {rel_error(got, ref):.3g}"

    def f(t):
        y = ops.squeeze_excite(t, *sew)
        p = y.mean((2, 3))
        return y, ops.se_gate(p, *sew), ops.se_project(y, p, *sew, pw, pb, res)

    y64 = ref64(x, sew)
    p64 = y64.mean((2, 3))
    want = (y64, reference.se_gate(p64, *se64),
            reference.se_project(y64, p64, *se64, pw.double(), pb.double(), res.double()))
    for how, outs in (("eager", f(x)), ("compiled", torch.compile(f, fullgraph=True)(x))):
        for name, got, ref, tol in zip(("squeeze_excite", "se_gate", "se_project"), outs, want, (1e-6, 1e-6, 2e-6)):
            assert got.shape == ref.shape and rel_error(got, ref) <= tol, \
                f"{how} {name}: vs float64 {rel_error(got, ref):.3g} > {tol}"


def test_bad_input_messages():
    x = make_x(1, 8, 4, 4)
    w1, b1, w2, b2 = make_se(8, 2)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        ops.squeeze_excite(x.numpy(), w1, b1, w2, b2)
    with pytest.raises(ValueError, match="x must be 4-D"):
        ops.squeeze_excite(x[0], w1, b1, w2, b2)
    with pytest.raises(ValueError, match=r"reduce_weight must be shaped \(O, 8\)"):
        ops.squeeze_excite(x, torch.randn(2, 7, 1, 1), b1, w2, b2)
    with pytest.raises(ValueError, match=r"expand_weight must be shaped \(8, 2\)"):
        ops.squeeze_excite(x, w1, b1, torch.randn(8, 3), b2)
    with pytest.raises(ValueError, match=r"reduce_bias must have shape \(2,\)"):
        ops.squeeze_excite(x, w1, torch.randn(3), w2, b2)
    with pytest.raises(ValueError, match=r"expand_bias must have shape \(8,\)"):
        ops.squeeze_excite(x, w1, b1, w2, torch.randn(9))
    if ISAS:
        with pytest.raises(TypeError, match="reduce_weight must be float32 for backend='cpp'"):
            ops.squeeze_excite(x, w1.double(), b1, w2, b2, backend="cpp")
        # fp16 x, fp32 weights: a TypeError (x must be float32 here, or match the weights' dtype), never a
        # RuntimeError from inside torch
        with pytest.raises(TypeError, match="x must be float32 for backend=None on CPU|dtype"):
            ops.squeeze_excite(x.half(), w1, b1, w2, b2)
    with pytest.raises(TypeError, match="must have reduce_weight's dtype"):
        ops.squeeze_excite(x.double(), w1.double(), b1, w2, b2, backend="torch")
    with pytest.raises(TypeError, match="expand_bias must be a torch.Tensor"):
        ops.squeeze_excite(x, w1, b1, w2, None)
    with pytest.raises(ValueError, match="backend must be None or one of"):
        ops.squeeze_excite(x, w1, b1, w2, b2, backend="cuda")
    pooled = x.mean((2, 3))
    pw, pb = make_projection(8, 4)
    with pytest.raises(TypeError, match="pooled must be float32"):
        ops.se_project(x, pooled.double(), w1, b1, w2, b2, pw, pb)
    with pytest.raises(ValueError, match=r"pooled must have shape \(N, C\) = \(1, 8\)"):
        ops.se_project(x, pooled[:, :5], w1, b1, w2, b2, pw, pb)
    with pytest.raises(ValueError, match=r"residual must have shape \(N, Cout, H, W\) = \(1, 4, 4, 4\)"):
        ops.se_project(x, pooled, w1, b1, w2, b2, pw, pb, torch.randn(1, 8, 4, 4))
    with pytest.raises(ValueError, match=r"proj_weight must be shaped \(O, 8\)"):
        ops.se_project(x, pooled, w1, b1, w2, b2, torch.randn(4, 5), pb)
    with pytest.raises(TypeError, match="proj_bias must have y's dtype"):
        ops.se_project(x, pooled, w1, b1, w2, b2, pw, pb.double())
    with pytest.raises(ValueError, match=r"pooled must be 2-D"):
        ops.se_gate(pooled[0], w1, b1, w2, b2)


def test_registered_ops_validate_when_called_directly():
    # torch.ops.effnet_kernels.* skip the Python wrappers: what the C++ kernels read is still checked.
    x = make_x(1, 8, 4, 4)
    sew = make_se(8, 2)
    pw, pb = make_projection(8, 4)
    with pytest.raises(ValueError, match=r"pooled must have shape \(N, C\) = \(1, 8\)"):
        torch.ops.effnet_kernels.se_project(x, torch.zeros(1, 3), *sew, pw, pb, None)
    with pytest.raises(ValueError, match="pooled must be 2-D"):
        torch.ops.effnet_kernels.se_gate(torch.zeros(8), *sew)
    with pytest.raises(ValueError, match=r"reduce_weight must be shaped \(O, 8\)"):
        torch.ops.effnet_kernels.squeeze_excite(x, torch.zeros(2, 5), *sew[1:])


def test_caches_let_dead_weights_go():
    import gc
    x = make_x(1, 16, 3, 3)
    sew = [t.clone() for t in make_se(16, 4)]
    ops.squeeze_excite(x, *sew)
    n_packs, n_fast = len(_cache._packs), len(_cache._fast)
    del sew
    gc.collect()
    assert len(_cache._packs) == n_packs - 1 and len(_cache._fast) == n_fast - 1
