"""The C++ kernels' threads: on torch's OpenMP runtime when torch uses OpenMP (the default), else the
package's pool; the same results, bit for bit, on either."""
import os
import subprocess
import sys

import torch

from effnet_kernels import ops, reference
from effnet_kernels._ext import _C, _torch_openmp_library
from effnet_kernels.testing import rel_error

from conftest import skip_or_fail


def test_kernels_share_torchs_openmp_threads():
    if _C is None:
        skip_or_fail("effnet_kernels._C is not built")
    library = _torch_openmp_library()
    if library is None:
        skip_or_fail(f"torch does not run on OpenMP here: {torch.__config__.parallel_info()}")
    assert _C.parallel_backend() == "openmp"
    assert _C.isa_info()["parallel_backend"] == "openmp"
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 96, 29, 31, generator=g).contiguous(memory_format=torch.channels_last)
    w, b = torch.randn(96, 1, 5, 5, generator=g), torch.randn(96, generator=g)
    sew = (torch.randn(24, 96, generator=g) / 10, torch.randn(24, generator=g), torch.randn(96, 24, generator=g) / 5,
           torch.randn(96, generator=g))
    runs = []
    for backend in (library, "", library):  # torch's OpenMP, the package's pool, OpenMP again
        _C.set_openmp_runtime(backend)
        assert _C.parallel_backend() == ("openmp" if backend else "pool"), backend
        y, pooled = ops.dwconv_bias_swish_pool(x, w, b, 2)
        runs.append((y, pooled, ops.squeeze_excite(y, *sew)))
    assert _C.parallel_backend() == "openmp"
    for i in (1, 2):  # the pool, and OpenMP after the switch back: bit for bit the first OpenMP run
        for name, a, c in zip(("y", "pooled", "squeeze_excite"), runs[0], runs[i]):
            assert torch.equal(a, c), f"run {i}: {name}"
    # … and right (equal runs would pass for any result the three share): against float64.
    y64, pooled64 = reference.dwconv_bias_swish_pool(x.double(), w.double(), b.double(), 2)
    se64 = reference.squeeze_excite(runs[0][0].double(), *[t.double() for t in sew])
    for name, got, want in zip(("y", "pooled", "squeeze_excite"), runs[0], (y64, pooled64, se64)):
        assert rel_error(got, want) <= 1e-5, f"{name}: rel err {rel_error(got, want):.3g} vs float64"


def test_env_keeps_the_pool(tmp_path):
    if _C is None:
        skip_or_fail("effnet_kernels._C is not built")
    code = "import effnet_kernels._ext as e; print(e._C.parallel_backend())"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "EFFNET_THREADS": "pool"},
                         capture_output=True, text=True, check=True,
                         cwd=tmp_path)  # (not the source tree, whose package has no compiled module)
    assert out.stdout.strip() == "pool"


def _op_cases():
    """(name, callable) for every public CPU op on a few shapes, both layouts, with weights made once."""
    g = torch.Generator().manual_seed(1)
    cases = []
    for n, c, h, w, k, s in [(1, 24, 17, 19, 3, 1), (3, 40, 13, 11, 5, 2), (2, 7, 5, 6, 3, 1)]:
        for cl in (False, True):
            x = torch.randn(n, c, h, w, generator=g)
            x = x.contiguous(memory_format=torch.channels_last) if cl else x
            wt, b = torch.randn(c, 1, k, k, generator=g) / k, torch.randn(c, generator=g)
            sq = max(1, c // 4)
            se = (torch.randn(sq, c, generator=g) / 5, torch.randn(sq, generator=g), torch.randn(c, sq, generator=g) / 3,
                  torch.randn(c, generator=g))
            proj = (torch.randn(16, c, generator=g) / c ** 0.5, torch.randn(16, generator=g))
            pooled = x.mean((2, 3))
            tag = f"{(n, c, h, w, k, s)} cl={cl}"
            cases += [
                (f"dwconv {tag}", lambda x=x, wt=wt, b=b, s=s: ops.dwconv_bias_swish(x, wt, b, s, "same")),
                (f"dwconv_pool {tag}", lambda x=x, wt=wt, b=b, s=s: ops.dwconv_bias_swish_pool(x, wt, b, s)),
                (f"squeeze_excite {tag}", lambda x=x, se=se: ops.squeeze_excite(x, *se)),
                (f"se_gate {tag}", lambda p=pooled, se=se: ops.se_gate(p, *se)),
                (f"se_project {tag}", lambda x=x, p=pooled, se=se, proj=proj: ops.se_project(x, p, *se, *proj)),
            ]
    return cases


def _flat(out):
    return out if isinstance(out, tuple) else (out,)


def test_ops_from_8_threads_are_bit_identical_to_serial_calls():
    """8 Python threads calling every op in shuffled orders at once (the kernels release the GIL) give what
    serial calls give, bit for bit; and no call leaves state that changes a later call's result."""
    import random
    from concurrent.futures import ThreadPoolExecutor

    if _C is None:
        skip_or_fail("effnet_kernels._C is not built")
    cases = _op_cases()
    with torch.inference_mode():
        serial = {name: _flat(fn()) for name, fn in cases}

        def work(seed):
            order = cases * 3
            random.Random(seed).shuffle(order)
            return [(name, _flat(fn())) for name, fn in order]

        with ThreadPoolExecutor(8) as pool:
            results = [r for batch in pool.map(work, range(8)) for r in batch]
        again = {name: _flat(fn()) for name, fn in cases}
    assert len(results) == 8 * 3 * len(cases)
    for name, outs in results + list(again.items()):
        assert all(torch.equal(a, b) for a, b in zip(outs, serial[name])), name


def test_thread_count_changes_between_calls_are_followed():
    """torch.set_num_threads between calls: each count gives its own deterministic result (the split of work
    depends on the shape and the count, never on timing), and every count agrees within rounding."""
    if _C is None:
        skip_or_fail("effnet_kernels._C is not built")
    before = torch.get_num_threads()
    cases = _op_cases()
    try:
        runs = {}
        for t in (1, 2, 3, 1, 2):
            torch.set_num_threads(t)
            with torch.inference_mode():
                out = {name: _flat(fn()) for name, fn in cases}
            if t in runs:
                for name in out:
                    assert all(torch.equal(a, b) for a, b in zip(out[name], runs[t][name])), (t, name)
            runs[t] = out
        for t in (2, 3):  # every count agrees with the serial result within rounding
            for name in runs[1]:
                for a, b in zip(runs[1][name], runs[t][name]):
                    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=lambda m: f"{t} threads, {name}: {m}")
    finally:
        torch.set_num_threads(before)
