"""What every fused op shares: the backends and where they run, the one dtype rule, the refusal of autograd
and of torch.jit.trace, and the one dispatch function every public op goes through."""
from __future__ import annotations

import abc
from typing import Optional, Tuple

import torch
from torch import Tensor

from .._ext import has_cpp

BACKENDS = ("cpp", "triton", "torch")
FLOATS = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def available_backends(device_type: str = "cpu") -> Tuple[str, ...]:
    """The backends that can run on ``device_type`` ("cpu", "cuda", … : a torch device type) in this install."""
    if not isinstance(device_type, str):
        raise TypeError(f"device_type must be a torch device type string such as 'cpu' or 'cuda', got "
                        f"{type(device_type).__name__} {device_type!r}")
    try:
        parsed = torch.device(device_type).type
    except RuntimeError:
        raise ValueError(f"device_type must be a torch device type such as 'cpu' or 'cuda', got {device_type!r}") \
            from None
    if parsed != device_type:
        raise ValueError(f"device_type must be a device type without an index ({parsed!r}), got {device_type!r}")
    out = []
    if device_type == "cpu" and has_cpp():
        out.append("cpp")
    if triton_kernels(device_type) is not None:
        out.append("triton")
    out.append("torch")
    return tuple(out)


def triton_kernels(device_type: str):
    """The Triton launchers when they can run on ``device_type``, else None."""
    try:
        from .. import triton as triton_kernels  # noqa: F401  (added with the GPU kernels)
    except ImportError:
        return None
    return triton_kernels if triton_kernels.available(device_type) else None


def no_kernel(name: str, x: Tensor) -> str:
    devices = "cpu" + (", cuda" if triton_kernels("cuda") is not None else "")
    return (f"{name} must be on a device with a kernel for the fused ops in this install ({devices}) or use "
            f"backend='torch', got {name} on {x.device} (backends there: {available_backends(x.device.type)})")


def no_triton(x: Tensor) -> str:
    return (f"backend='triton' needs CUDA tensors (or CPU tensors with TRITON_INTERPRET=1 set before import and "
            f"Triton installed), got {x.device.type} tensors; the backends available for them here: "
            f"{available_backends(x.device.type)}")


def check_backend(backend) -> Optional[str]:
    if backend is None:
        return None
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend must be None or one of {BACKENDS}, got {backend!r}")
    return backend


_TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def dtypes_for(backend: Optional[str], device_type: str) -> Tuple[torch.dtype, ...]:
    """The one dtype rule, the same for the wrappers below and the registered ops they call:

    * ``"cpp"``: float32 (the C++ kernels are fp32);
    * ``"triton"``: float32, float16, bfloat16 (accumulating in fp32);
    * ``"torch"``: every float dtype (the eager reference);
    * ``None``: on the CPU every float dtype — float32 runs the C++ kernels (the reference when ``_C`` is not
      built), float16 / bfloat16 / float64 run the reference, in that dtype; on other devices the Triton
      kernel's dtypes.
    """
    if backend == "cpp":
        return (torch.float32,)
    if backend == "triton":
        return _TRITON_DTYPES
    if backend == "torch" or device_type == "cpu":
        return FLOATS
    return _TRITON_DTYPES


def refuse_autograd_and_trace(op: str, backend: Optional[str], named) -> None:
    """The kernels write through raw pointers (CPU) or launch Triton: autograd sees no computation and
    torch.jit.trace records only the output allocation. Refuse both rather than return an output without
    gradients or a trace that returns uninitialised memory; the reference (``backend="torch"``) is eager
    PyTorch and supports both. ``named``: (argument name, value) pairs (an iterable, read only if needed)."""
    if backend == "torch":
        return
    if torch.jit.is_tracing():
        raise RuntimeError(f"effnet_kernels.ops.{op} (backend={backend!r}) cannot be recorded by torch.jit.trace, "
                           f"which would record only the output allocation: use torch.compile or torch.export "
                           f"(the op is a registered torch.library op), or backend='torch' to trace the eager "
                           f"reference")
    if torch.is_grad_enabled():
        for name, t in named:
            if isinstance(t, Tensor) and t.requires_grad:
                raise RuntimeError(f"effnet_kernels.ops.{op} (backend={backend!r}) computes no gradients, but {name} "
                                   f"requires grad while grad mode is on: call it under torch.no_grad() or "
                                   f"torch.inference_mode() (or detach {name}), or use backend='torch' for autograd "
                                   f"through the eager reference")


class OpSpec(abc.ABC):
    """What one public op plugs into :func:`dispatch`, as methods taking the op's positional arguments
    ``args`` (one instance per op, built at import: a call creates no closures; a subclass that misses a
    method cannot be instantiated). ``names``: the argument names of the tensors among ``args``, in order,
    for the refusals' messages; the first decides the device."""

    op: str = ""
    names: Tuple[str, ...] = ()

    def fast(self, *args):
        """The eager CPU call for arguments seen valid before, or None (default: none; se_gate has none)."""
        return None

    @abc.abstractmethod
    def validate(self, backend, *args):
        """The full checks for ``backend``; returns what the kernels need (``v``)."""

    @abc.abstractmethod
    def cpp_runs(self, v, *args) -> bool:
        """backend=None on the CPU: do the C++ kernels take these dtypes?"""

    @abc.abstractmethod
    def cpp(self, backend, v, *args):
        """The C++ kernels."""

    @abc.abstractmethod
    def registered(self, v, *args):
        """The torch.library op."""

    @abc.abstractmethod
    def reference(self, v, *args):
        """The eager reference."""

    @abc.abstractmethod
    def triton(self, kernels, v, *args):
        """The Triton launcher (``kernels``: effnet_kernels.triton)."""


def dispatch(spec: OpSpec, backend, args: tuple):
    """Run one public op on the backend asked for (``None``: by device), the same ladder for every op:

    1. ``backend`` checked; autograd and torch.jit.trace refused (not for ``"torch"``);
    2. ``backend=None``, eager: ``spec.fast`` — the CPU call for arguments seen valid before, or None;
    3. ``v = spec.validate(backend, ...)``: the full checks for that backend's dtypes (the errors a user reads);
    4. the backend must be there: ``"cpp"`` needs ``_C``, ``"triton"`` (and ``None`` off the CPU) a device
       Triton runs on;
    5. ``None``: on the CPU ``spec.cpp`` when ``spec.cpp_runs`` (fp32 and ``_C`` built) outside
       torch.compile, else ``spec.registered`` (the ``torch.library`` op: under torch.compile, on CUDA, other
       dtypes); ``"cpp"``: ``spec.cpp``; ``"torch"``: ``spec.reference``; ``"triton"``: ``spec.triton``."""
    if backend is not None:
        backend = check_backend(backend)
    refuse_autograd_and_trace(spec.op, backend, zip(spec.names, args))
    compiling = torch.compiler.is_compiling()
    if backend is None and not compiling:
        out = spec.fast(*args)
        if out is not None:
            return out
    v = spec.validate(backend, *args)
    x = args[0]
    device = x.device.type
    kernels = None
    if backend == "cpp" and not has_cpp():
        raise ValueError("backend='cpp' needs the compiled module effnet_kernels._C, which is not built "
                         "(pip install . from the source tree)")
    if backend == "triton":
        kernels = triton_kernels(device)
        if kernels is None:
            raise ValueError(no_triton(x))
    if backend is None:
        if device != "cpu" and triton_kernels(device) is None:
            raise ValueError(no_kernel(spec.names[0], x))
        if device == "cpu" and not compiling and spec.cpp_runs(v, *args):
            return spec.cpp(backend, v, *args)
        return spec.registered(v, *args)
    if backend == "cpp":
        return spec.cpp(backend, v, *args)
    if backend == "torch":
        return spec.reference(v, *args)
    return spec.triton(kernels, v, *args)


# The registered ops have no backward: called directly with an input that requires grad (grad mode on),
# they refuse at the call, not at .backward(). (Only reached then: without such an input the autograd
# layer calls the kernel straight away.)

def refuse_backward(op, name: str) -> None:
    """Give the registered op ``op`` (``torch.ops.effnet_kernels.<name>``) an autograd formula that refuses."""
    backward, setup_context = _refusals(name)
    op.register_autograd(backward, setup_context=setup_context)


def _refusals(name: str):
    def setup_context(ctx, inputs, output):
        raise RuntimeError(f"torch.ops.effnet_kernels.{name} computes no gradients, but an input requires grad while "
                           f"grad mode is on: call it under torch.no_grad() or torch.inference_mode(), or use "
                           f"effnet_kernels.ops.{name}(..., backend='torch') for autograd through the eager reference")

    def backward(ctx, *grads):  # never reached: setup_context refused the forward
        raise RuntimeError(f"torch.ops.effnet_kernels.{name} has no backward")

    return backward, setup_context
