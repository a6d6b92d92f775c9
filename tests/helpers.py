"""What the test modules share (imported as ``helpers``: tests/ is on sys.path under pytest's default
import mode). Test modules import this and the package, never each other."""
import torch

from effnet_kernels import ops, reference


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
