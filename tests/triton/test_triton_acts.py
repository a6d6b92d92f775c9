"""The activations of the Triton kernels: ``act`` of the depthwise launcher, ``inner_act`` and ``gate`` of the
SE launchers (compile-time parameters of the kernels).

* Against float64 on inputs that straddle every kink (-3, 0, 3, 6 before the activation, checked here), within
  a multiple of eager fp32's own error: a clamp off by 0.01 fails by orders of magnitude.
* Bit for bit against eager PyTorch's fp32 function on the kernels' own pre-activation values, NaN, ±inf,
  ±1e30, 3e38 (hardswish overflows to +inf) and denormals among them; SiLU and sigmoid (an exp each side)
  within a few units of rounding. And the whole op against eager fp32 with special values in its inputs, as
  tests/triton/test_triton_special.py checks the defaults.
* Unknown names and non-str values are refused, naming the argument.

Without a GPU these run under Triton's interpreter, which costs ~50 ms per depthwise program: one fixed tile
there covers a whole sample of these 4-row inputs (one program per sample).
"""
import re

import pytest
import torch
import torch.nn.functional as F

from effnet_kernels import reference
from effnet_kernels import triton as tk
from effnet_kernels.ops._validate import output_memory_format
from effnet_kernels.testing import max_abs_error, rel_error

from helpers import memo_last
from helpers.special import assert_like_eager, sprinkle
from helpers.triton import CUDA, DEVICE, needs_triton  # noqa: F401  (autouse fixture)

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the interpreter's numpy: exp overflow, inf*0

ACTS, GATES = reference.ACTS, reference.GATES


def tile(stride, fixed=False):
    """One program per sample of the depthwise cases below (4 output rows at stride 1, 2 at stride 2; BLOCK_W
    and BLOCK_C span the columns and channels): under the interpreter, or when ``fixed``; else (CUDA) None,
    the autotuned launch (ACT in the tuning key)."""
    return None if CUDA and not fixed else dict(BLOCK_W=16, BLOCK_C=32, TH=4 // stride, num_warps=1)


# The float64 checks allow this many times eager fp32's own error (norm-wise and element-wise), each taken as
# at least one fp32 rounding (eager's error on a short sum can be near zero by luck).
VS_EAGER = 4.0
KINKS = (-3.0, 0.0, 3.0, 6.0)


def on(*ts):
    return [None if t is None else t.to(DEVICE) for t in ts]


def assert_straddles(v, kinks, what, near=0.5, count=3):
    """At least ``count`` values of v within ``near`` below and above each kink: the case reaches both sides."""
    for t in kinks:
        below, above = int(((v > t - near) & (v < t)).sum()), int(((v > t) & (v < t + near)).sum())
        assert below >= count and above >= count, f"{what}: {below} values just below {t}, {above} above"


def assert_within_eager(got, eager, ref, what):
    """got against the float64 ref: within VS_EAGER times eager fp32's error, norm-wise and element-wise."""
    got = got.cpu()
    floor = 2.0 ** -24
    err, eager_err = rel_error(got, ref), rel_error(eager, ref)
    assert err <= VS_EAGER * max(eager_err, floor), f"{what}: error {err:.3g} vs eager's {eager_err:.3g}"
    big, eager_big = max_abs_error(got, ref), max_abs_error(eager, ref)
    bound = VS_EAGER * max(eager_big, floor * ref.abs().max().item())
    assert big <= bound, f"{what}: max error {big:.3g} vs eager's {eager_big:.3g} (bound {bound:.3g})"


def assert_same_bits(got, want, what):
    """Identical NaN positions and, elsewhere, identical fp32 bit patterns (the sign of zero included)."""
    got, want = got.cpu(), want.cpu()
    nan_g, nan_w = torch.isnan(got), torch.isnan(want)
    assert torch.equal(nan_g, nan_w), f"{what}: NaN at {int((nan_g & ~nan_w).sum())} extra positions, missing " \
                                      f"at {int((nan_w & ~nan_g).sum())}"
    bad = (got.view(torch.int32) != want.view(torch.int32)) & ~nan_w
    count = int(bad.sum())
    assert count == 0, f"{what}: {count} values differ from eager's, e.g. {got[bad][:4].tolist()} vs " \
                       f"{want[bad][:4].tolist()}"


# ---- the depthwise kernel -------------------------------------------------------------------------------

def dw_kink_case(channels_last, seed=0, n=2, c=19, h=4, w=12):
    """(x, weight, bias) whose conv + bias spreads over about [-6, 9]: the biases step through every kink
    (0.67 apart), the conv adds about ±1."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g)
    weight = torch.randn(c, 1, 3, 3, generator=g) / 3
    bias = torch.linspace(-4.5, 7.5, c)
    return (x.contiguous(memory_format=torch.channels_last) if channels_last else x), weight, bias


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("padding", ["symmetric", "same"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_dwconv_act_matches_float64(channels_last, padding, stride, act):
    x, w, b = dw_kink_case(channels_last)
    what = f"act={act} s={stride} {padding} cl={channels_last}"
    z = reference.dwconv_bias_swish(x.double(), w.double(), b.double(), stride, padding, act="identity")
    assert_straddles(z, KINKS, what, count=10)
    ref, ref_pool = reference.dwconv_bias_swish_pool(x.double(), w.double(), b.double(), stride, padding, act=act)
    eager, eager_pool = reference.dwconv_bias_swish_pool(x, w, b, stride, padding, act=act)
    y, pooled = tk.dwconv_bias_swish(*on(x, w, b), stride, padding, pool=True, tile=tile(stride), act=act)
    assert y.shape == ref.shape and y.is_contiguous(memory_format=output_memory_format(x)), what
    assert_within_eager(y, eager, ref, what)
    assert_within_eager(pooled, eager_pool, ref_pool, what + " pooled")
    if (stride, padding) == (2, "same"):  # the kernel without the pool (once per act and layout): the same y
        assert torch.equal(tk.dwconv_bias_swish(*on(x, w, b), stride, padding, tile=tile(stride), act=act), y), what


def dw_special_case(channels_last):
    """A kink case with 1% of x special (NaN, ±inf, ±1e30, denormals) and biases 1e30, -1e30 and 3e38 on
    channels 0-2 (3e38 * 6 overflows: eager's hardswish is +inf there)."""
    x, w, b = dw_kink_case(channels_last, seed=5)
    x = sprinkle(x, seed=5, fraction=0.01)
    b = b.clone()
    b[0], b[1], b[2] = 1e30, -1e30, 3e38
    return x, w, b


# (stride, padding) per layout: the interpreter's budget allows one each.
DW_SPECIAL = {False: (1, "symmetric"), True: (2, "same")}


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_dwconv_act_special_values_like_eager(channels_last, act):
    x, w, b = dw_special_case(channels_last)
    stride, padding = DW_SPECIAL[channels_last]
    what = f"act={act} s={stride} {padding} cl={channels_last}"
    # The kernel's own pre-activation values (act="identity": the same sums in the same tile, stored), once per
    # layout.
    z = memo_last(("dw z", channels_last), lambda: tk.dwconv_bias_swish(
        *on(x, w, b), stride, padding, tile=tile(stride, fixed=True), act="identity").cpu())
    assert torch.isnan(z).any() and (z == float("inf")).any() and (z == float("-inf")).any(), what
    big = z[:, 2][torch.isfinite(z[:, 2])]
    assert big.numel() and (big > 6e37).all(), what
    y, pooled = tk.dwconv_bias_swish(*on(x, w, b), stride, padding, pool=True, tile=tile(stride, fixed=True),
                                     act=act)
    if act == "silu":  # z * sigmoid(z) against eager's z / (1 + exp(-z)): a few roundings apart
        assert_like_eager(y, reference.activation(z, act), rtol=1e-6, what=what)
    else:
        assert_same_bits(y, reference.activation(z, act), what)
    # The whole op against eager fp32 (as test_triton_special.py): NaN and ±inf where eager has them.
    eager, eager_pool = reference.dwconv_bias_swish_pool(x, w, b, stride, padding, act=act)
    ax, pad = reference.pad_input(x.abs().nan_to_num(0, 0, 0), 3, stride, padding)
    bound = F.conv2d(ax, w.abs(), b.abs(), stride=stride, padding=pad, groups=x.shape[1])
    assert_like_eager(y, eager, bound, what=what)
    assert_like_eager(pooled, eager_pool, bound.mean((2, 3)), what=what + " pooled")


# ---- the SE kernels -------------------------------------------------------------------------------------

def se_kink_weights(c, s, seed=0):
    """SE weights for means of about ±1: the hidden values (before inner_act) spread over about [-6, 9] (the
    biases step through every kink), the gate's inputs over about [-5, 5] (hardsigmoid's kinks ±3). The
    expand rows sum to zero: the hidden values' common offset (mostly positive after relu or relu6) does not
    shift the gate's inputs past the biases' steps."""
    g = torch.Generator().manual_seed(seed)
    w1 = torch.randn(s, c, 1, 1, generator=g) / c ** 0.5
    b1 = torch.linspace(-4.5, 7.5, s)
    w2 = torch.randn(c, s, 1, 1, generator=g) * (0.3 / s ** 0.5)
    w2 -= w2.mean(1, keepdim=True)
    b2 = torch.linspace(-4.0, 4.0, c)
    return w1, b1, w2, b2


def d(ts):
    return [None if t is None else t.double() for t in ts]


@pytest.mark.parametrize("gate", GATES)
@pytest.mark.parametrize("inner_act", ACTS)
def test_se_acts_match_float64(inner_act, gate):
    n, c, s, h, w, cout = 2, 19, 13, 5, 6, 11
    what = f"inner_act={inner_act} gate={gate}"
    sew = se_kink_weights(c, s)
    acts = dict(inner_act=inner_act, gate=gate)
    # se_gate on 16 samples' means: the kinks reached (checked) on both sides.
    pooled = torch.randn(16, c, generator=torch.Generator().manual_seed(1))
    hidden = F.linear(pooled.double(), sew[0].double().flatten(1), sew[1].double())
    assert_straddles(hidden, KINKS, what + " hidden")
    gate_in = F.linear(reference.activation(hidden, inner_act), sew[2].double().flatten(1), sew[3].double())
    assert_straddles(gate_in, (-3.0, 3.0), what + " gate input")
    got = tk.se_gate(*on(pooled, *sew), **acts)
    assert got.dtype == torch.float32 and got.shape == pooled.shape, what
    assert_within_eager(got, reference.se_gate(pooled, *sew, **acts), reference.se_gate(*d((pooled,) + sew), **acts),
                        what + " se_gate")
    # squeeze_excite and se_project on inputs whose means are about those of se_gate's first samples.
    g = torch.Generator().manual_seed(2)
    x = pooled[:n, :, None, None] + 0.3 * torch.randn(n, c, h, w, generator=g)
    for cl in (False, True):
        xx = x.contiguous(memory_format=torch.channels_last) if cl else x
        got = tk.squeeze_excite(*on(xx, *sew), **acts)
        assert got.is_contiguous(memory_format=output_memory_format(xx)), what
        assert_within_eager(got, reference.squeeze_excite(xx, *sew, **acts),
                            reference.squeeze_excite(*d((xx,) + sew), **acts), f"{what} squeeze_excite cl={cl}")
    pw, pb = torch.randn(cout, c, 1, 1, generator=g) / c ** 0.5, torch.randn(cout, generator=g)
    res = torch.randn(n, cout, h, w, generator=g).contiguous(memory_format=torch.channels_last)
    y = x.contiguous(memory_format=torch.channels_last)
    means = x.double().mean((2, 3)).float()
    args = (y, means, *sew, pw, pb, res)
    got = tk.se_project(*on(*args), **acts)
    assert got.shape == (n, cout, h, w), what
    assert_within_eager(got, reference.se_project(*args, **acts), reference.se_project(*d(args), **acts),
                        what + " se_project")


def around(t):
    """t and its fp32 neighbours."""
    t = torch.tensor(t)
    return [t.item(), torch.nextafter(t, t - 1).item(), torch.nextafter(t, t + 1).item()]


# The means for the exact gate check: special values, the kinks and their fp32 neighbours, values between.
GATE_VALUES = ([float("nan"), float("inf"), float("-inf"), 1e30, -1e30, 3e38, -3e38, 1e-40, -1e-40, 0.0, -0.0,
                -7.5, -2.5, -1.0, 0.4, 1.7, 4.5, 7.5] + around(-3.0) + around(3.0) + around(6.0))


@pytest.mark.parametrize("gate", GATES)
@pytest.mark.parametrize("inner_act", ACTS)
def test_se_gate_special_values_like_eager(inner_act, gate):
    what = f"inner_act={inner_act} gate={gate}"
    acts = dict(inner_act=inner_act, gate=gate)
    # One channel, one hidden unit, unit weights, zero biases: each sample's gate is gate(inner_act(p))
    # exactly (p * 1 + 0 rounds to p), both here and in eager fp32, so ±inf reach the gate.
    pooled = torch.tensor(GATE_VALUES).reshape(-1, 1)
    unit = (torch.ones(1, 1, 1, 1), torch.zeros(1), torch.ones(1, 1, 1, 1), torch.zeros(1))
    got = tk.se_gate(*on(pooled, *unit), **acts)
    want = reference.se_gate(pooled, *unit, **acts)
    if inner_act == "silu" or gate == "sigmoid":  # an exp in the kernel and in eager: a few roundings apart
        assert_like_eager(got, want, torch.ones_like(want), rtol=1e-6, what=what)
    else:
        assert_same_bits(got, want, what)
    # Random weights with 0.5% of the means special and expand biases 1e30 / -1e30 on channels 3 / 4 (gates
    # 1 and 0 wherever the sample has no NaN), as tests/helpers/special.py's gate_case for the defaults.
    c, s = 37, 9
    sew = list(se_kink_weights(c, s, seed=c))
    sew[3] = sew[3].clone()
    sew[3][3], sew[3][4] = 1e30, -1e30
    pooled = sprinkle(torch.randn(6, c, generator=torch.Generator().manual_seed(c)), seed=c, fraction=0.005)
    got = tk.se_gate(*on(pooled, *sew), **acts).cpu()
    want = reference.se_gate(pooled, *sew, **acts)
    assert_like_eager(got, want, torch.ones_like(want), what=what + " random weights")
    clean = ~torch.isnan(want).any(1)
    assert (got[clean, 3] == 1).all() and (got[clean, 4] == 0).all(), f"{what}: saturation"


# ---- names ----------------------------------------------------------------------------------------------

def launch(name, **acts):
    """The launcher ``name`` on small valid inputs, with ``acts`` (act= or inner_act= / gate=)."""
    x = torch.randn(1, 4, 3, 3, device=DEVICE)
    sew = on(*se_kink_weights(4, 2))
    if name == "dwconv_bias_swish":
        return tk.dwconv_bias_swish(x, torch.randn(4, 1, 3, 3, device=DEVICE), torch.randn(4, device=DEVICE), **acts)
    if name == "se_gate":
        return tk.se_gate(x.mean((2, 3)), *sew, **acts)
    if name == "squeeze_excite":
        return tk.squeeze_excite(x, *sew, **acts)
    return tk.se_project(x, x.mean((2, 3)), *sew, *on(torch.randn(5, 4), torch.randn(5)), **acts)


@pytest.mark.parametrize("name", ["dwconv_bias_swish", "se_gate", "squeeze_excite", "se_project"])
def test_unknown_or_non_str_names_are_refused(name):
    args = [("act", ACTS)] if name == "dwconv_bias_swish" else [("inner_act", ACTS), ("gate", GATES)]
    for arg, allowed in args:
        for bad in ("gelu", "SiLU", "silu" if arg == "gate" else "sigmoid", ""):
            with pytest.raises(ValueError, match="^" + re.escape(f"{arg} must be one of {allowed}, got {bad!r}")):
                launch(name, **{arg: bad})
        for bad in (None, 1, b"silu"):
            with pytest.raises(TypeError, match=f"^{arg} must be a str"):
                launch(name, **{arg: bad})
