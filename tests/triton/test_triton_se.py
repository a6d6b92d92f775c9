"""The Triton squeeze-excitation kernels (backend="triton"): the stand-alone op, the gate and the gate folded
into the projection GEMM, against a float64 reference and eager PyTorch.

On CUDA: every SE shape of B0–B7 and fp16/bf16. Without a GPU: Triton's interpreter on small shapes, in
the TRITON_INTERPRET=1 pytest process (scripts/test.sh)."""
import pytest
import torch

from effnet_kernels import ops, reference
from effnet_kernels.ops._validate import output_memory_format
from effnet_kernels import triton as tk
from effnet_kernels.scaling import se_layer_shapes
from effnet_kernels.testing import rel_error

from helpers import make_projection, make_se, make_x
from helpers.triton import CUDA, DEVICE, needs_cuda, needs_triton  # noqa: F401  (autouse fixture)


def to(ts, dtype=None):
    return tuple(t.to(DEVICE) if dtype is None else t.to(DEVICE, dtype) for t in ts)


def check(n, c, s, h, w, channels_last, cout=None, residual=False, flat=False):
    x = make_x(n, c, h, w, channels_last, seed=c)
    sew = make_se(c, s, seed=s, flat=flat)
    what = f"{(n, c, s, h, w)} cl={channels_last}"
    ref = reference.squeeze_excite(x.double(), *[t.double() for t in sew])
    y = tk.squeeze_excite(*to((x,) + sew))
    assert y.device.type == DEVICE and y.shape == x.shape, what
    assert y.is_contiguous(memory_format=output_memory_format(x)), f"{what}: layout"
    assert rel_error(y.cpu(), ref) <= 1e-6, f"{what}: squeeze_excite {rel_error(y.cpu(), ref):.3g}"
    pooled = x.double().mean((2, 3)).float()
    gate = tk.se_gate(*to((pooled,) + sew))
    assert rel_error(gate.cpu(), reference.se_gate(pooled.double(), *[t.double() for t in sew])) <= 1e-6, what
    if cout is not None:
        pw, pb = make_projection(c, cout, flat=flat)
        res = make_x(n, cout, h, w, channels_last, seed=3) if residual else None
        ref = reference.se_project(x.double(), pooled.double(), *[t.double() for t in sew], pw.double(), pb.double(),
                                   None if res is None else res.double())
        out = tk.se_project(*to((x, pooled) + sew + (pw, pb)), None if res is None else res.to(DEVICE))
        assert out.shape == (n, cout, h, w), what
        assert out.is_contiguous(memory_format=output_memory_format(x)), f"{what}: projection layout"
        assert rel_error(out.cpu(), ref) <= 2e-6, f"{what}: se_project {rel_error(out.cpu(), ref):.3g}"


SHAPES = se_layer_shapes(range(8))
if not CUDA:  # every 11th, cut to the interpreter's budget
    SHAPES = [s._replace(channels=min(s.channels, 40), squeeze=min(s.squeeze, 10), height=min(s.height, 6),
                         width=min(s.width, 5), out_channels=min(s.out_channels, 24))
              for i, s in enumerate(SHAPES) if i % 11 == 0]


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "c{}_s{}_{}x{}_o{}".format(*s))
def test_b0_b7_se_shapes(shape, channels_last):
    c, s, h, w, cout = shape
    check(1 if CUDA else 2, c, s, h, w, channels_last, cout=cout, residual=c % 2 == 0)


@pytest.mark.parametrize("n,c,s,h,w,cout", [
    (1, 1, 1, 1, 1, 1), (3, 17, 5, 4, 9, 19), (2, 37, 1, 3, 5, 50), (1, 70, 13, 2, 3, 33),
])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_awkward_shapes(n, c, s, h, w, cout, channels_last):
    check(n, c, s, h, w, channels_last, cout=cout, residual=True, flat=c % 2 == 1)


def test_non_contiguous_and_empty():
    x = make_x(2, 24, 7, 8)[:, ::2].transpose(2, 3)
    sew = make_se(12, 3)
    y = tk.squeeze_excite(*to((x,) + sew))
    assert rel_error(y.cpu(), reference.squeeze_excite(x.double(), *[t.double() for t in sew])) <= 1e-6
    assert tk.squeeze_excite(*to((x[:0],) + sew)).shape == (0, 12, 8, 7)
    pw, pb = make_projection(12, 5)
    out = tk.se_project(*to((x, x.mean((2, 3))) + sew + (pw, pb)))
    ref = reference.se_project(x.double(), x.double().mean((2, 3)), *[t.double() for t in sew], pw.double(),
                               pb.double())
    assert rel_error(out.cpu(), ref) <= 2e-6
    assert tk.se_project(*to((x[:0], x[:0].mean((2, 3))) + sew + (pw, pb))).shape == (0, 5, 8, 7)
    # W == 1: torch calls a transposed (N, C, H, 1) view contiguous whatever its stride(3) says.
    for x1 in (make_x(2, 12, 1, 9).transpose(2, 3), make_x(2, 1, 9, 12).permute(0, 3, 2, 1)):
        assert x1.shape[3] == 1 and x1.stride(3) != 1
        sew1 = make_se(x1.shape[1], 3)
        pw1, pb1 = make_projection(x1.shape[1], 5)
        out = tk.se_project(*to((x1, x1.mean((2, 3))) + sew1 + (pw1, pb1)))
        ref = reference.se_project(x1.double(), x1.double().mean((2, 3)), *[t.double() for t in sew1],
                                   pw1.double(), pb1.double())
        assert rel_error(out.cpu(), ref) <= 2e-6, f"W == 1, strides {x1.stride()}"


# Triton's interpreter multiplies the bit patterns in a bfloat16 tl.dot (triton-lang/triton#11584, not
# supported there): the bf16 projection GEMM is checked on CUDA only.


@pytest.mark.parametrize("op,dtype", [("squeeze_excite", torch.float16), ("squeeze_excite", torch.bfloat16),
                                      ("se_project", torch.float16),
                                      ("se_project", torch.bfloat16)])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_half_precision_within_twice_eager_error(op, dtype, channels_last):
    if op == "se_project" and dtype == torch.bfloat16:
        needs_cuda("Triton's interpreter cannot run a bfloat16 tl.dot (triton-lang/triton#11584)")
    n, c, s, h, w, cout = 2, 48, 12, 7, 6, 24
    x = make_x(n, c, h, w, channels_last)
    sew = make_se(c, s)
    xh, sewh = x.to(DEVICE, dtype), to(sew, dtype)
    sew64 = [t.double() for t in sew]
    if op == "squeeze_excite":
        ref = reference.squeeze_excite(x.double(), *sew64)
        got = tk.squeeze_excite(xh, *sewh)
        eager = reference.squeeze_excite(xh, *sewh)
    else:
        pw, pb = make_projection(c, cout)
        res = make_x(n, cout, h, w, channels_last, seed=5)
        pooled = x.double().mean((2, 3))
        ref = reference.se_project(x.double(), pooled, *sew64, pw.double(), pb.double(), res.double())
        args = (xh, pooled.float().to(DEVICE), *sewh, pw.to(DEVICE, dtype), pb.to(DEVICE, dtype), res.to(DEVICE, dtype))
        got = tk.se_project(*args)
        with torch.backends.cudnn.flags(allow_tf32=False):
            eager = reference.se_project(*args)
    assert got.dtype == dtype
    err, eager_err = rel_error(got.cpu(), ref), rel_error(eager.cpu(), ref)
    assert err <= 2 * eager_err, f"{op} {dtype}: error {err:.3g} vs eager's {eager_err:.3g}"


def test_bad_input():
    x = torch.randn(1, 8, 4, 4, device=DEVICE)
    w1, b1, w2, b2 = to(make_se(8, 2))
    with pytest.raises(TypeError, match="x must be float32 or float16 or bfloat16 for backend='triton'"):
        tk.squeeze_excite(x.double(), w1, b1, w2, b2)
    with pytest.raises(ValueError, match=r"expand_weight must be shaped \(8, 2\)"):
        tk.squeeze_excite(x, w1, b1, w1, b2)
    with pytest.raises(TypeError, match="pooled must be float32"):
        tk.se_project(x, x.mean((2, 3)).half(), w1, b1, w2, b2, *to(make_projection(8, 4)))


def test_registered_ops_opcheck_and_compile_on_cuda():
    needs_cuda("the registered CUDA kernels, opcheck and torch.compile of the Triton path")
    x = make_x(2, 24, 5, 6, True).cuda()
    sew = to(make_se(24, 6))
    pooled = x.mean((2, 3))
    pw, pb = to(make_projection(24, 16))
    res = make_x(2, 16, 5, 6, True, seed=4).cuda()
    torch.library.opcheck(torch.ops.effnet_kernels.squeeze_excite.default, (x, *sew))
    torch.library.opcheck(torch.ops.effnet_kernels.se_gate.default, (pooled, *sew))
    torch.library.opcheck(torch.ops.effnet_kernels.se_project.default, (x, pooled, *sew, pw, pb, res))
    eager = ops.se_project(ops.squeeze_excite(x, *sew), pooled, *sew, pw, pb, res)
    compiled = torch.compile(lambda t: ops.se_project(ops.squeeze_excite(t, *sew), pooled, *sew, pw, pb, res),
                             fullgraph=True)
    assert torch.equal(compiled(x), eager)
