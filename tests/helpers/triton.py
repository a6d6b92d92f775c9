"""What every Triton test module shares: the device the kernels run on here, and the autouse fixture that
skips (or, with EFFNET_REQUIRE_ALL=1, fails) when they cannot run on it. Import ``needs_triton`` into a
test module to apply it there."""
import pytest
import torch

from effnet_kernels import triton as tk

from conftest import skip_or_fail

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"


def needs_cuda(what: str) -> None:
    """Skip (a hardware fact, allowed in CI) unless CUDA is present; ``what`` says what needs it."""
    if not CUDA:
        skip_or_fail(f"needs CUDA: {what}")


@pytest.fixture(autouse=True)
def needs_triton():
    if not tk.available(DEVICE):
        skip_or_fail(f"the Triton kernels cannot run on {DEVICE} here (Triton installed: {tk.HAS_TRITON}; "
                     f"without CUDA run this folder with TRITON_INTERPRET=1)")
