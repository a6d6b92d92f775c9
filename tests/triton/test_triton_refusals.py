"""backend='triton' refuses autograd (for every tensor argument of every op) and torch.jit.trace, as the
CPU backends do (tests/test_refusals.py): the launchers write outputs autograd and the tracer never see."""
import pytest
import torch

from helpers import call, op_cases
from helpers.triton import DEVICE, needs_triton  # noqa: F401  (autouse fixture)

OPS = list(op_cases())
ARGS = [(op, name) for op, (named, *_) in op_cases().items() for name, _ in named]


def on_device(named):
    return [(k, v.to(DEVICE)) for k, v in named]


@pytest.mark.parametrize("op,arg", ARGS, ids=[f"{o}-{a}" for o, a in ARGS])
def test_an_argument_requiring_grad_is_refused(op, arg):
    named = on_device(op_cases()[op][0])
    t = dict(named)[arg].clone().requires_grad_()
    with pytest.raises(RuntimeError, match=rf"ops\.{op} \(backend='triton'\) computes no gradients, but {arg} "
                                           rf"requires grad"):
        call(op, named, "triton", **{arg: t})


@pytest.mark.filterwarnings("ignore:`torch.jit.trace")
@pytest.mark.parametrize("op", OPS)
def test_jit_trace_is_refused(op):
    named = on_device(op_cases()[op][0])

    class Calls(torch.nn.Module):
        def forward(self, a):
            return call(op, named, "triton", **{named[0][0]: a})

    with torch.no_grad(), pytest.raises(RuntimeError, match=rf"ops\.{op} \(backend='triton'\) cannot be recorded"):
        torch.jit.trace(Calls(), (named[0][1],))
