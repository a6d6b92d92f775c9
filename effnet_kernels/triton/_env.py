"""The environment flags of the Triton kernels, read once when the package is imported (Triton decorates
the kernels at import, so a later change has no effect).

* ``TRITON_INTERPRET=1``: Triton's interpreter runs the kernels on CPU tensors (tests without a GPU).
* ``EFFNET_TRITON_AUTOTUNE=0``: one config per layout, no tuning — for test runs over many shapes, where
  every new shape would otherwise compile and time every config.
"""
import os

INTERPRET = os.environ.get("TRITON_INTERPRET", "") not in ("", "0")
AUTOTUNE = os.environ.get("EFFNET_TRITON_AUTOTUNE", "1") not in ("", "0")
