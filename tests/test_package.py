import subprocess
import sys
import tempfile
import textwrap

import effnet_kernels as ek

from conftest import skip_or_fail


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300,
                          cwd=tempfile.gettempdir())


def test_import_without_compiled_module_warns_once_and_falls_back():
    proc = run_python("""
        import sys, warnings
        sys.modules["effnet_kernels._C"] = None   # make `from . import _C` fail as if never built
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import effnet_kernels as ek
            import effnet_kernels.models, effnet_kernels.cpu, effnet_kernels.ops as ops
        msgs = [str(w.message) for w in caught if "effnet_kernels._C" in str(w.message)]
        assert len(msgs) == 1, msgs
        assert "pip install ." in msgs[0], msgs[0]
        assert not ek.has_cpp() and ek.info()["cpp_module"] is False
        import torch
        from effnet_kernels.testing import randomize_bn_
        m = randomize_bn_(ek.efficientnet("b0", num_classes=3)).eval()
        with torch.no_grad():
            assert m(torch.randn(1, 3, 64, 64)).shape == (1, 3)
        try:
            effnet_kernels.cpu.dwconv_bias_swish(torch.randn(1, 2, 3, 3), torch.randn(2, 1, 3, 3),
                                                  torch.randn(2))
        except RuntimeError as e:
            assert "pip install ." in str(e)
        else:
            raise AssertionError("expected a RuntimeError naming the build command")
        # The registered op and the public wrapper fall back to the eager reference.
        x, w, b = torch.randn(1, 3, 6, 6), torch.randn(3, 1, 3, 3), torch.randn(3)
        ref = effnet_kernels.reference.dwconv_bias_swish(x, w, b, 1, "symmetric")
        assert torch.allclose(ops.dwconv_bias_swish(x, w, b), ref)
        assert torch.allclose(torch.ops.effnet_kernels.dwconv_bias_swish(x, w, b, 1, "symmetric"), ref)
        assert ops.available_backends("cpu") == ("torch",)
        # The one dtype rule holds without _C too: backend=None takes every float dtype on the CPU.
        se = [torch.randn(2, 3, 1, 1), torch.randn(2), torch.randn(3, 2, 1, 1), torch.randn(3)]
        for dt in (torch.float32, torch.float16, torch.float64):
            assert ops.squeeze_excite(x.to(dt), *[t.to(dt) for t in se]).dtype == dt
            assert ops.dwconv_bias_swish(x.to(dt), w.to(dt), b.to(dt)).dtype == dt
        print("ok")
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_info_reports_versions():
    d = ek.info()
    assert d["effnet_kernels"] == ek.__version__
    assert {"torch", "triton", "cpp_module", "threads", "machine", "isa", "backends"} <= set(d)
    assert "torch" in d["backends"]["cpu"]
    if d["cpp_module"]:
        assert d["isa"] in d["isa_supported"] and "cpp" in d["backends"]["cpu"]


def test_effnet_isa_environment_variable_forces_a_path():
    if not ek.has_cpp():
        skip_or_fail("effnet_kernels._C is not built: no ISA path to force")
    code = """
        import effnet_kernels as ek, torch
        from effnet_kernels import ops
        print(ek.info()["isa"])
        x, w, b = torch.randn(1, 3, 6, 6), torch.randn(3, 1, 3, 3), torch.randn(3)
        assert torch.allclose(ops.dwconv_bias_swish(x, w, b), ops.dwconv_bias_swish(x, w, b, backend="torch"),
                              atol=1e-6)
    """
    import os
    env = dict(os.environ, EFFNET_ISA="scalar")
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          cwd=tempfile.gettempdir(), env=env, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "scalar", proc.stderr
    env["EFFNET_ISA"] = "sse9"
    proc = subprocess.run([sys.executable, "-c", "import effnet_kernels as ek; ek.info()"], capture_output=True,
                          text=True, cwd=tempfile.gettempdir(), env=env, timeout=300)
    assert proc.returncode != 0 and "EFFNET_ISA: isa must be one of" in proc.stderr


# The registered ops, by name: a user's torch.export'ed or torch.compile'd graph calls these.
REGISTERED_OPS = ("dwconv_bias_swish", "dwconv_bias_swish_pool", "squeeze_excite", "se_gate", "se_project")


def test_import_alone_registers_every_op():
    proc = run_python(f"""
        import torch
        import effnet_kernels
        missing = [n for n in {REGISTERED_OPS!r} if not hasattr(torch.ops.effnet_kernels, n)]
        print("missing:", missing)
    """)
    assert proc.returncode == 0, proc.stderr
    assert "missing: []" in proc.stdout, proc.stdout + proc.stderr


def test_the_installed_distribution_has_every_subpackage():
    """Every subpackage of the installed tree is in the installed distribution's file list (pip installed it
    from the wheel it built: a subpackage pyproject.toml's package list missed would be absent) and imports,
    the benchmarks' subpackage only where asked: the core never imports it."""
    import importlib
    import importlib.metadata as md
    from pathlib import Path

    root = Path(ek.__file__).parent
    subpackages = sorted(".".join(("effnet_kernels",) + p.parent.relative_to(root).parts)
                         for p in root.rglob("__init__.py") if p.parent != root)
    assert {"effnet_kernels.bench", "effnet_kernels.models", "effnet_kernels.triton"} <= set(subpackages), subpackages
    recorded = {str(f) for f in md.files("effnet_kernels") or []}
    for name in subpackages:
        init = name.replace(".", "/") + "/__init__.py"
        assert init in recorded, f"{init} is not in the installed distribution's RECORD"
        importlib.import_module(name)
    proc = run_python("""
        import sys
        import effnet_kernels, effnet_kernels.fuse, effnet_kernels.budget
        print("bench imported:", any(m.startswith("effnet_kernels.bench") for m in sys.modules))
    """)
    assert "bench imported: False" in proc.stdout, proc.stdout + proc.stderr


def test_the_build_compiles_every_isa_path_of_its_architecture(cpp):
    """The ISA-parametrized tests take their list from the build (isa_info()['compiled']): a path the build
    dropped would shorten them silently, so the list is checked here against the architecture."""
    import platform

    want = {"x86_64": ["scalar", "avx2", "avx512"], "AMD64": ["scalar", "avx2", "avx512"],
            "aarch64": ["scalar", "neon"], "arm64": ["scalar", "neon"]}.get(platform.machine(), ["scalar"])
    info = cpp.isa_info()
    assert info["compiled"] == want, info
    assert set(info["known"]) == {"scalar", "avx2", "avx512", "neon"} and set(info["supported"]) <= set(want), info
