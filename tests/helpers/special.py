"""Special values shared by the CPU and the Triton tests: inputs with NaN, ±inf, ±1e30 and denormals scattered
through them, and the comparison with eager PyTorch in the same dtype ("propagate exactly as eager does":
the same NaN positions, the same infinities with the same signs, the finite values close)."""
import torch
import torch.nn.functional as F

from effnet_kernels import reference

from helpers import make_se

SPECIALS = (float("nan"), float("inf"), float("-inf"), 1e30, -1e30, 1e-40, -1e-40)
DW_CASES = [(3, 1, "symmetric"), (5, 2, "same"), (3, 2, "symmetric"), (5, 1, "same")]  # (k, stride, padding)
SE_SIZES = [(37, 9), (64, 16)]  # (C, S): a vector tail, whole vectors
PROJECT_SIZES = [(37, 13, 9), (96, 24, 4)]  # (Cin, Cout, S)


def sprinkle(x: torch.Tensor, seed: int, fraction: float = 0.03, values=SPECIALS) -> torch.Tensor:
    """A copy of x with ``fraction`` of its elements (at least one of each value) set to special values, at
    seeded random positions. Keeps x's strides (channels_last stays channels_last)."""
    g = torch.Generator().manual_seed(seed)
    out = x.clone()
    count = max(len(values), int(x.numel() * fraction))
    pos = torch.randperm(x.numel(), generator=g)[:count]
    out[torch.unravel_index(pos, x.shape)] = torch.tensor([values[i % len(values)] for i in range(count)],
                                                           dtype=x.dtype)
    return out


def assert_like_eager(y: torch.Tensor, ref: torch.Tensor, bound: torch.Tensor = None, rtol: float = 1e-5,
                      what: str = "") -> None:
    """y against eager's ``ref`` (same dtype): identical NaN and ±inf masks, finite values within
    ``rtol * bound`` where ``bound`` is a per-element magnitude of the terms summed (default |ref|), plus a
    small absolute slack."""
    y, ref = y.detach().cpu(), ref.detach().cpu()
    assert y.shape == ref.shape, f"{what}: shape {tuple(y.shape)} vs eager's {tuple(ref.shape)}"
    nan_y, nan_r = torch.isnan(y), torch.isnan(ref)
    assert torch.equal(nan_y, nan_r), (f"{what}: NaN at {int((nan_y & ~nan_r).sum())} positions where eager has "
                                       f"none, missing at {int((nan_r & ~nan_y).sum())} where eager has NaN")
    for sign, name in ((1, "+inf"), (-1, "-inf")):
        iy, ir = y == sign * float("inf"), ref == sign * float("inf")
        assert torch.equal(iy, ir), (f"{what}: {name} at {int((iy & ~ir).sum())} extra positions, missing at "
                                     f"{int((ir & ~iy).sum())}")
    finite = torch.isfinite(ref)
    scale = ref.abs() if bound is None else bound.detach().cpu().to(ref.dtype)
    diff = (y[finite].double() - ref[finite].double()).abs()
    tol = rtol * scale[finite].double() + 1e-5
    bad = diff > tol
    assert not bad.any(), (f"{what}: {int(bad.sum())} finite values off, worst {diff[bad].max().item():.3g} "
                           f"(tolerance there {tol[bad][diff[bad].argmax()].item():.3g})")


def eager_dw(x, w, b, stride, padding):
    """Eager conv + bias + SiLU in x's dtype and the magnitude bound |x| * |w| + |b| of the terms summed."""
    xp, pad = reference.pad_input(x, w.shape[-1], stride, padding)
    ref = F.silu(F.conv2d(xp, w, b, stride=stride, padding=pad, groups=x.shape[1]))
    ax, _ = reference.pad_input(x.abs().nan_to_num(0, 0, 0), w.shape[-1], stride, padding)
    bound = F.conv2d(ax, w.abs(), b.abs(), stride=stride, padding=pad, groups=x.shape[1])
    return ref, bound


def eager_gate(pooled, w1, b1, w2, b2):
    """Eager SE gate on the (N, C) means in their dtype: sigmoid(expand(silu(reduce(pooled))))."""
    s = w1.shape[0]
    hidden = F.silu(F.linear(pooled, w1.reshape(s, -1), b1))
    return torch.sigmoid(F.linear(hidden, w2.reshape(-1, s), b2))


# ---- cases shared by tests/test_special_values.py and tests/triton/test_triton_special.py -----------------

def dw_case(c, k, stride, padding, fmt, seed):
    """(x, w, b, ref, bound): a depthwise input with specials, saturating biases on channels 0 (1e30) and
    1 (-1e30), eager's output and the magnitude bound."""
    g = torch.Generator().manual_seed(seed)
    x = sprinkle(torch.randn(3, c, 9, 11, generator=g), seed=seed).contiguous(memory_format=fmt)
    w = torch.randn(c, 1, k, k, generator=g) / k
    b = torch.randn(c, generator=g) * 0.3
    b[0], b[1] = 1e30, -1e30
    ref, bound = eager_dw(x, w, b, stride, padding)
    return x, w, b, ref, bound


def check_dw(y, pooled, ref, bound, what):
    assert_like_eager(y, ref, bound, what=what)
    if pooled is not None:
        assert_like_eager(pooled, ref.mean((2, 3)), bound.mean((2, 3)), what=what + " pooled")
    y = y.cpu()
    fin = torch.isfinite(ref)  # (a special input in the window overrides the bias's saturation)
    assert (y[:, 1][fin[:, 1]] == 0).all() and (y[:, 0][fin[:, 0]] > 1e29).all(), f"{what}: saturation"


def se_case(c, s, fmt):
    """(x, weights, ref) for squeeze_excite. -1e30 and 1e30 in one channel would make its mean a cancellation
    whose value depends on the order of the sum (NaN and both infinities do not), so no -1e30 here."""
    weights = make_se(c, s, seed=c)
    x = torch.randn(4, c, 7, 5, generator=torch.Generator().manual_seed(c)) + 0.3
    x = sprinkle(x, seed=c, fraction=0.01, values=(float("nan"), float("inf"), float("-inf"), 1e30, 1e-40))
    x = x.contiguous(memory_format=fmt)
    return x, weights, x * eager_gate(x.mean((2, 3)), *weights)[:, :, None, None]


def gate_case(c, s):
    """(pooled, weights, ref) for se_gate; expand biases 1e30 / -1e30 on channels 3 / 4 (gates 1 and 0)."""
    w1, b1, w2, b2 = make_se(c, s, seed=c)
    pooled = sprinkle(torch.randn(6, c, generator=torch.Generator().manual_seed(c)), seed=c, fraction=0.005)
    b2 = b2.clone()
    b2[3], b2[4] = 1e30, -1e30
    return pooled, (w1, b1, w2, b2), eager_gate(pooled, w1, b1, w2, b2)


def check_gate(gate, ref, what):
    assert_like_eager(gate, ref, torch.ones_like(ref), what=what)
    gate, clean = gate.cpu(), ~torch.isnan(ref).any(1)
    assert (gate[clean, 3] == 1).all() and (gate[clean, 4] == 0).all(), f"{what}: saturation"


def project_case(cin, cout, s, fmt, where):
    """(args, ref, bound) for se_project with specials in ``where`` ("y", "pooled" or "residual")."""
    g = torch.Generator().manual_seed(cin + cout)
    weights = make_se(cin, s, seed=cin)
    pw, pb = torch.randn(cout, cin, 1, 1, generator=g) / cin ** 0.5, torch.randn(cout, generator=g)
    y = torch.randn(3, cin, 6, 7, generator=g)
    pooled = y.mean((2, 3))
    residual = torch.randn(3, cout, 6, 7, generator=g)
    if where == "y":  # a special value at a pixel reaches every output channel of that pixel
        y = sprinkle(y, seed=cin, fraction=0.002)
    elif where == "pooled":  # a NaN mean reaches its whole sample through the gate; ±1e30 saturates it
        pooled = sprinkle(pooled, seed=cin, fraction=0.0,
                          values=(float("nan"), 1e30, -1e30, float("inf"), 1e-40, -1e-40, 0.0))
    else:
        residual = sprinkle(residual, seed=cin)
    y, residual = y.contiguous(memory_format=fmt), residual.contiguous(memory_format=fmt)
    gate = eager_gate(pooled, *weights)
    ref = F.conv2d(y * gate[:, :, None, None], pw, pb) + residual
    bound = (F.conv2d(y.abs().nan_to_num(0, 0, 0) * gate.nan_to_num(1)[:, :, None, None], pw.abs(), pb.abs())
             + residual.abs().nan_to_num(0, 0, 0))
    return (y, pooled, *weights, pw, pb, residual), ref, bound
