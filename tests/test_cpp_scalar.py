"""The scalar C++ depthwise conv + bias + Swish kernel (through effnet_kernels._cpu) against a float64
reference and eager PyTorch, on real EfficientNet layer shapes and awkward ones."""
import random

import pytest
import torch
import torch.nn as nn

from effnet_kernels import _cpu, reference
from effnet_kernels.scaling import depthwise_shapes
from effnet_kernels.testing import max_abs_error, rel_error


def make_inputs(n, c, h, w, k, channels_last=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(c, 1, k, k, generator=g) / k
    bn = dict(bn_weight=torch.rand(c, generator=g) + 0.5, bn_bias=torch.randn(c, generator=g) * 0.2,
              bn_mean=torch.randn(c, generator=g) * 0.2, bn_var=torch.rand(c, generator=g) + 0.5)
    return x, weight, bn


def check(x, weight, bn, stride, padding, eps=1e-5):
    w_f, b_f = reference.fold_bn(weight, **bn, eps=eps)
    y, pooled = _cpu.dwconv_bias_swish_scalar(x, w_f, b_f, stride, padding, pool=True)
    ref = reference.dwconv_bn_swish(x.double(), weight.double(), **{k: v.double() for k, v in bn.items()},
                                    eps=eps, stride=stride, padding=padding)
    assert y.shape == ref.shape and y.dtype == torch.float32
    err, max_err = rel_error(y, ref), max_abs_error(y, ref)
    assert err <= 1e-5 and max_err <= 1e-4 * ref.abs().max().item(), (err, max_err)
    assert rel_error(pooled, ref.mean((2, 3))) <= 1e-5
    # And eager PyTorch in fp32, unfused, in the same memory format.
    conv = nn.Conv2d(x.shape[1], x.shape[1], weight.shape[-1], stride, groups=x.shape[1], bias=False)
    bnm = nn.BatchNorm2d(x.shape[1], eps=eps).eval()
    with torch.no_grad():
        conv.weight.copy_(weight)
        bnm.weight.copy_(bn["bn_weight"]), bnm.bias.copy_(bn["bn_bias"])
        bnm.running_mean.copy_(bn["bn_mean"]), bnm.running_var.copy_(bn["bn_var"])
        xp, pad = reference.pad_input(x, weight.shape[-1], stride, padding)
        conv.padding = (pad, pad)
        eager = nn.SiLU()(bnm(conv(xp)))
    assert rel_error(y, eager) <= 2e-5
    return y


B0_B7_SHAPES = sorted({s for phi in range(8) for s in depthwise_shapes(phi, distinct=True)})


@pytest.mark.parametrize("shape", B0_B7_SHAPES, ids=lambda s: "c{}_{}x{}_k{}_s{}".format(*s))
def test_b0_b7_layer_shapes(cpp, shape):
    c, h, w, k, s = shape
    x, weight, bn = make_inputs(1, c, h, w, k, channels_last=(c % 3 == 0))
    y = check(x, weight, bn, s, "symmetric")
    expect = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous() \
        else torch.contiguous_format
    assert y.is_contiguous(memory_format=expect)


AWKWARD = [(1, 1, 1, 1, 3, 1), (1, 3, 2, 3, 5, 2), (3, 7, 5, 4, 7, 1), (2, 17, 13, 11, 3, 2),
           (3, 31, 7, 9, 5, 2), (1, 33, 4, 4, 7, 2), (5, 15, 1, 9, 3, 1), (1, 16, 6, 6, 1, 2)]


@pytest.mark.parametrize("n, c, h, w, k, s", AWKWARD)
@pytest.mark.parametrize("padding", ["symmetric", "same"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_awkward_shapes(cpp, n, c, h, w, k, s, padding, channels_last):
    x, weight, bn = make_inputs(n, c, h, w, k, channels_last, seed=n * 1000 + c)
    check(x, weight, bn, s, padding, eps=1e-3)


@pytest.mark.parametrize("view", ["channel_slice", "width_step", "permuted"])
def test_non_contiguous_inputs(cpp, view):
    base, weight, bn = make_inputs(2, 12, 11, 18, 3)
    if view == "channel_slice":
        x = base[:, 1:]
    elif view == "width_step":
        x = base[..., ::2]
    else:
        x = base.permute(0, 1, 3, 2)
    c = x.shape[1]
    weight, bn = weight[:c].contiguous(), {k: v[:c].contiguous() for k, v in bn.items()}
    assert not x.is_contiguous()
    check(x, weight, bn, 2, "same")


def test_random_shapes(cpp):
    rng = random.Random(7)
    for i in range(30):
        n, c, h, w = rng.randint(1, 3), rng.randint(1, 40), rng.randint(1, 15), rng.randint(1, 15)
        k, s = rng.choice([1, 3, 5, 7]), rng.choice([1, 2])
        x, weight, bn = make_inputs(n, c, h, w, k, rng.random() < 0.5, seed=i)
        check(x, weight, bn, s, rng.choice(["symmetric", "same"]))


def test_empty_batch_and_special_values(cpp):
    x, weight, bn = make_inputs(0, 5, 6, 6, 3)
    w_f, b_f = reference.fold_bn(weight, **bn, eps=1e-5)
    y, pooled = _cpu.dwconv_bias_swish_scalar(x, w_f, b_f, 2, "same", pool=True)
    assert y.shape == (0, 5, 3, 3) and pooled.shape == (0, 5)
    x = torch.randn(1, 4, 5, 5)
    x[0, 0, 2, 2] = float("nan")
    x[0, 1, 0, 0] = float("inf")
    x[0, 2] = 1e30
    x[0, 3] = -1e30
    w = torch.ones(4, 1, 3, 3)
    b = torch.zeros(4)
    y = _cpu.dwconv_bias_swish_scalar(x, w, b, 1, "symmetric")
    ref = reference.dwconv_bias_swish(x, w, b, 1, "symmetric")
    assert torch.equal(torch.isnan(y), torch.isnan(ref))
    assert torch.equal(torch.isinf(y), torch.isinf(ref)) and torch.equal(y[torch.isinf(y)], ref[torch.isinf(ref)])
    finite = torch.isfinite(ref)
    assert torch.allclose(y[finite], ref[finite], rtol=1e-5, atol=1e-6)
    assert (y[0, 2] >= 1e30).all()  # Swish(+1e30·k) saturates to its input, not NaN
    assert (y[0, 3] == 0).all()  # Swish(-1e30·k) saturates to -0, not NaN


@pytest.mark.parametrize("args, exc, match", [
    (dict(x=torch.randn(1, 4, 5, 5).double()), TypeError, "x must be float32"),
    (dict(x=torch.randn(4, 5, 5)), ValueError, "x must be 4-D"),
    (dict(weight=torch.randn(3, 1, 3, 3)), ValueError, r"weight must have shape \(C, 1, k, k\) = \(4, 1"),
    (dict(weight=torch.randn(4, 1, 4, 4)), ValueError, "k must be odd"),
    (dict(bias=torch.randn(5)), ValueError, r"bias must have shape \(4,\)"),
    (dict(stride=3), ValueError, "stride must be 1 or 2"),
    (dict(stride=1.0), TypeError, "stride"),
    (dict(padding="valid"), ValueError, "padding must be one of"),
    (dict(x=[1.0]), TypeError, "x must be a torch.Tensor"),
])
def test_bad_input(cpp, args, exc, match):
    kw = dict(x=torch.randn(1, 4, 5, 5), weight=torch.randn(4, 1, 3, 3), bias=torch.randn(4), stride=1,
              padding="symmetric")
    kw.update(args)
    with pytest.raises(exc, match=match):
        _cpu.dwconv_bias_swish_scalar(**kw)


def test_cpp_checks_params_itself(cpp):
    # The C++ core validates its own arguments too: a bad call from Python is an error, not a crash.
    x = torch.randn(1, 2, 5, 5)
    y = torch.empty(1, 2, 5, 5)
    w, b = torch.randn(2, 3, 3), torch.randn(2)
    with pytest.raises(ValueError, match="stride"):
        cpp.dwconv_bias_swish_scalar(x.data_ptr(), [1, 2, 5, 5], list(x.stride()), w.data_ptr(), b.data_ptr(), 3, 3,
                                     1, 1, y.data_ptr(), 5, 5, list(y.stride()), 0)
    with pytest.raises(ValueError, match="null"):
        cpp.dwconv_bias_swish_scalar(0, [1, 2, 5, 5], list(x.stride()), w.data_ptr(), b.data_ptr(), 3, 1,
                                     1, 1, y.data_ptr(), 5, 5, list(y.stride()), 0)
    with pytest.raises(ValueError, match="out_h"):
        cpp.dwconv_bias_swish_scalar(x.data_ptr(), [1, 2, 5, 5], list(x.stride()), w.data_ptr(), b.data_ptr(), 3, 1,
                                     1, 1, y.data_ptr(), 9, 5, list(y.stride()), 0)
