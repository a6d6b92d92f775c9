"""What the fused ops cannot do is refused, never returned wrong: autograd (an output without grad_fn would
silently drop gradients) and torch.jit.trace (it would record only the output allocation) on every op and
CPU backend, for every tensor argument; the registered ops refuse autograd at the call; backend='torch'
(the eager reference) supports both, with correct gradients. And one dtype rule for the wrappers and the
registered ops (ops.dtypes_for), checked dtype by dtype against float64.

The Triton backend gets the same refusal checks in tests/triton/test_triton_refusals.py."""
import pytest
import torch

from effnet_kernels import ops
from effnet_kernels.testing import rel_error

from helpers import call, first, op_cases

CPU_BACKENDS = [None, *ops.available_backends("cpu")]  # None, "cpp" (when built), "torch"
REFUSING = [b for b in CPU_BACKENDS if b != "torch"]
OPS = list(op_cases())
ARGS = [(op, name) for op, (named, *_) in op_cases().items() for name, _ in named]


@pytest.mark.parametrize("backend", REFUSING, ids=str)
@pytest.mark.parametrize("op,arg", ARGS, ids=[f"{o}-{a}" for o, a in ARGS])
def test_an_argument_requiring_grad_is_refused(op, arg, backend):
    named, *_ = op_cases()[op]
    t = dict(named)[arg].clone().requires_grad_()
    with pytest.raises(RuntimeError, match=rf"ops\.{op} \(backend={backend!r}\) computes no gradients, but {arg} "
                                           rf"requires grad.*torch.no_grad\(\).*backend='torch'"):
        call(op, named, backend, **{arg: t})
    # The same call without grad mode computes (the refusal is about gradients only).
    for ctx in (torch.no_grad, torch.inference_mode):
        with ctx():
            out = first(call(op, named, backend, **{arg: t}))
        assert out.grad_fn is None and not out.requires_grad


@pytest.mark.parametrize("op", [o for o in OPS if op_cases()[o][1] is not None])
def test_the_registered_op_refuses_grad_at_the_call(op):
    _, registered, args, _ = op_cases()[op]
    args = list(args)
    args[0] = args[0].clone().requires_grad_()
    with pytest.raises(RuntimeError, match=rf"torch\.ops\.effnet_kernels\.{op} computes no gradients"):
        registered(*args)
    with torch.no_grad():
        registered(*args)


@pytest.mark.parametrize("op", OPS)
def test_the_torch_backend_computes_correct_gradients(op):
    """backend='torch' is the refusal's advice: it must give autograd's real gradients (gradcheck in float64
    against finite differences), for every tensor argument (pooled is an fp32 input by contract: it is
    checked in fp32 against the float64 reference's gradient instead)."""
    named, *_ = op_cases(torch.float64)[op]
    if op in ("se_gate", "se_project"):  # pooled must be fp32: gradients of the others, in float64 elsewhere
        named = [(k, v.float() if k == "pooled" else v) for k, v in named]
    keys = [k for k, _ in named if k != "pooled"]
    fixed = {k: v for k, v in named if k == "pooled"}

    def f(*tensors):
        return call(op, named, "torch", **fixed, **dict(zip(keys, tensors)))

    inputs = tuple(dict(named)[k].clone().requires_grad_() for k in keys)
    # se_gate returns fp32 by contract: finite differences of an fp32 output need a larger step and bound.
    tol = dict(eps=1e-3, atol=2e-3, rtol=1e-2) if op == "se_gate" else dict(eps=1e-6, atol=1e-6)
    assert torch.autograd.gradcheck(f, inputs, **tol)


class _Calls(torch.nn.Module):
    def __init__(self, op, named, backend):
        super().__init__()
        self.op, self.named, self.backend = op, named, backend

    def forward(self, first_arg):
        return first(call(self.op, self.named, self.backend, **{self.named[0][0]: first_arg}))


@pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated")
@pytest.mark.filterwarnings("ignore:`torch.jit.trace_method` is deprecated")
@pytest.mark.parametrize("backend", CPU_BACKENDS, ids=str)
@pytest.mark.parametrize("op", OPS)
def test_jit_trace_is_refused_and_the_reference_traces(op, backend):
    named, *_ = op_cases()[op]
    module = _Calls(op, named, backend)
    x0 = named[0][1]
    with torch.no_grad():
        if backend != "torch":
            with pytest.raises(RuntimeError, match=rf"ops\.{op} \(backend={backend!r}\) cannot be recorded by "
                                                   rf"torch\.jit\.trace.*torch\.compile or torch\.export"):
                torch.jit.trace(module, (x0,))
            return
        traced = torch.jit.trace(module, (x0,), check_trace=False)
        other = x0 * 0.5 + 0.25  # new values: a trace that recorded only an allocation would not follow them
        in64 = {k: v if k == "pooled" else v.double() for k, v in [*named, (named[0][0], other)]}  # pooled: fp32
        want = first(call(op, named, "torch", **in64))
        assert rel_error(traced(other), want) <= 1e-5


# ---- one dtype rule ------------------------------------------------------------------------------------

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
# Measured bounds vs float64 (these shapes): fp32 ~1e-7, fp16 ~5e-4, bf16 ~4e-3, fp64 ~1e-16; the bound is
# 2x eager's own error in that dtype, never below the dtype's rounding (eager's error can be ~0 by luck).
_FLOOR = {torch.float32: 2e-6, torch.float16: 2e-3, torch.bfloat16: 1.6e-2, torch.float64: 1e-12}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("backend", CPU_BACKENDS, ids=str)
@pytest.mark.parametrize("op", OPS)
def test_one_dtype_rule_for_wrappers_and_registered_ops(op, backend, dtype):
    """Each backend accepts exactly the dtypes ops.dtypes_for lists, the wrapper and the registered op alike
    (no wrapper refusing what its op computes, or the other way round), and what it accepts is right."""
    named, registered, args, ref = op_cases(dtype)[op]
    accepted = dtype in ops.dtypes_for(backend, "cpu")
    if not accepted:
        with pytest.raises(TypeError, match=str(dtype).replace("torch.", "")):
            call(op, named, backend)
        return
    with torch.no_grad():
        out = first(call(op, named, backend))
        eager = first(call(op, named, "torch"))
        if backend is None and registered is not None:
            assert first(registered(*args)).dtype == out.dtype
            assert rel_error(first(registered(*args)), first(ref())) <= max(_FLOOR[dtype], 2 * rel_error(eager,
                                                                                                          first(ref())))
    want = first(ref())
    assert out.dtype == (torch.float32 if op == "se_gate" else dtype)
    bound = max(_FLOOR[dtype], 2 * rel_error(eager, want))
    assert rel_error(out, want) <= bound, f"{op} {backend} {dtype}: {rel_error(out, want):.3g} > {bound:.3g}"


def test_the_rule_itself():
    f32, f16, bf16, f64 = torch.float32, torch.float16, torch.bfloat16, torch.float64
    assert ops.dtypes_for("cpp", "cpu") == (f32,)
    assert set(ops.dtypes_for("triton", "cuda")) == {f32, f16, bf16}
    assert set(ops.dtypes_for("torch", "cuda")) == set(ops.dtypes_for(None, "cpu")) == {f32, f16, bf16, f64}
    assert set(ops.dtypes_for(None, "cuda")) == {f32, f16, bf16}
