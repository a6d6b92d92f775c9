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


def skip_or_fail(reason: str):
    """Skip with a visible reason — or fail when EFFNET_REQUIRE_ALL=1 (CI), where nothing may skip."""
    if REQUIRE_ALL:
        pytest.fail(f"EFFNET_REQUIRE_ALL=1 but: {reason}")
    pytest.skip(reason)


def import_or_skip(name: str):
    try:
        return __import__(name)
    except ImportError as exc:
        skip_or_fail(f"{name} is not installed ({exc})")


@pytest.fixture
def cpp():
    import effnet_kernels._ext as ext

    if not ext.has_cpp():
        skip_or_fail(f"effnet_kernels._C is not built ({ext.IMPORT_ERROR}); run `pip install .`")
    return ext._C


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def pytest_report_header(config):
    import effnet_kernels

    return [f"effnet_kernels from {os.path.dirname(effnet_kernels.__file__)}", f"info: {effnet_kernels.info()}",
            f"EFFNET_REQUIRE_ALL={int(REQUIRE_ALL)}"]
