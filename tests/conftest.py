import os

import pytest
import torch
from hypothesis import HealthCheck, settings

# Property-based tests (tests/test_fuzz.py, tests/triton/test_triton_fuzz.py): a bounded, reproducible example
# count in the default run; `--hypothesis-profile=long` for a deeper search.
settings.register_profile("ci", max_examples=int(os.environ.get("EFFNET_FUZZ_EXAMPLES", "40")), deadline=None,
                          derandomize=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("long", max_examples=2000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile("ci")

# Parameter counts of torchvision's efficientnet_b0…b7 (the model and model_cost must match them).
TORCHVISION_PARAMS = [5288548, 7794184, 9109994, 12233232, 19341616, 30389784, 43040704, 66347960]

REQUIRE_ALL = os.environ.get("EFFNET_REQUIRE_ALL", "") not in ("", "0")
TRITON_INTERPRET = os.environ.get("TRITON_INTERPRET", "") not in ("", "0")

# tests/triton runs on the GPU when there is one; without one it needs Triton's interpreter, which must be
# switched on before the kernels are imported: scripts/test.sh runs that folder in a second pytest process
# with TRITON_INTERPRET=1. The main CPU run leaves it out.
collect_ignore = [] if (TRITON_INTERPRET or torch.cuda.is_available()) else ["triton"]


# The only reasons a test may skip under EFFNET_REQUIRE_ALL=1 (CI): hardware this machine does not have. Any
# other skip — a missing package, tool or build, however it is raised (skip_or_fail, pytest.skip,
# pytest.importorskip, a skipif marker) — fails there (pytest_runtest_makereport below).
HARDWARE_SKIPS = {
    "needs CUDA": "the GPU path (the registered CUDA kernels, opcheck / torch.compile of the Triton path, "
                  "what Triton's interpreter cannot run); it runs where CUDA is present (benchmarks/gpu_check.sh)",
    "needs AVX-512 hardware": "qemu-user and valgrind do not emulate AVX-512, so the AVX-512 kernels are tested only "
                              "on AVX-512 CPUs; elsewhere their start-up self-test against the scalar kernel "
                              "(run whenever the path is chosen) is the guard",
}


def _hardware_reason(reason: str):
    """The HARDWARE_SKIPS key ``reason`` starts with, or None."""
    return next((k for k in HARDWARE_SKIPS if reason.startswith(k)), None)


def skip_or_fail(reason: str):
    """The one way a test skips. ``reason`` starting with a HARDWARE_SKIPS key ("needs CUDA: ...") skips
    everywhere; any other reason skips with that reason — or fails when EFFNET_REQUIRE_ALL=1 (CI)."""
    if REQUIRE_ALL and _hardware_reason(reason) is None:
        pytest.fail(f"EFFNET_REQUIRE_ALL=1 but: {reason}")
    pytest.skip(reason)


def import_or_skip(name: str):
    try:
        return __import__(name)
    except ImportError as exc:
        skip_or_fail(f"{name} is not installed ({exc})")


_skips: dict = {}  # reason key -> count, for the summary


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if not rep.skipped or getattr(rep, "wasxfail", None) is not None:
        return
    reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
    reason = reason[len("Skipped: "):] if reason.startswith("Skipped: ") else reason
    key = _hardware_reason(reason)
    if key is None and REQUIRE_ALL:
        rep.outcome = "failed"
        rep.longrepr = (f"EFFNET_REQUIRE_ALL=1: the test skipped for a reason that is not a hardware fact "
                        f"({' / '.join(HARDWARE_SKIPS)}): {reason}")
        return
    key = key or reason
    _skips[key] = _skips.get(key, 0) + 1


def pytest_terminal_summary(terminalreporter):
    if not _skips:
        terminalreporter.write_line("[effnet] skips: none")
        return
    for key, count in sorted(_skips.items()):
        why = HARDWARE_SKIPS.get(key, "not a hardware fact: fails under EFFNET_REQUIRE_ALL=1")
        terminalreporter.write_line(f"[effnet] skipped {count}: {key} ({why})")


@pytest.fixture
def cpp():
    import effnet_kernels._ext as ext

    if not ext.has_cpp():
        skip_or_fail(f"effnet_kernels._C is not built ({ext.IMPORT_ERROR}); run `pip install .`")
    return ext._C


@pytest.fixture
def one_thread():
    """Real timed runs in one thread, for tests that check a benchmark's pipeline, not its speed: with two threads
    every eager op's parallel region waits for a core whenever another process holds one (the CI runs the Triton
    interpreter tests beside pytest: the scaling test took 162 s there, 35 s alone; a bench run 59 s vs 22 s)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def pytest_report_header(config):
    import effnet_kernels

    return [f"effnet_kernels from {os.path.dirname(effnet_kernels.__file__)}", f"info: {effnet_kernels.info()}",
            f"EFFNET_REQUIRE_ALL={int(REQUIRE_ALL)}"]
