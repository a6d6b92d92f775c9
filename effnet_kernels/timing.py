"""Timing shared by the core (``fit_phi``) and every benchmark: samples on CPU and CUDA, their summary, the
interleaved rounds that keep a shared machine's drift out of a comparison, and fp32 without TF32.

Times are wall-clock (``time.perf_counter``) on the CPU and CUDA events on a GPU; a summary is the median
with the quartiles of repeated runs after warm-up, and keeps every sample on request.
"""
from __future__ import annotations

import contextlib
import statistics
import time
from typing import Callable, Dict, List, Optional, Tuple

import torch


def _is_cuda(device) -> bool:
    return device is not None and torch.device(device).type == "cuda"


def default_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def resolve_device_dtype(device, dtype) -> Tuple[torch.device, torch.dtype]:
    """The (device, dtype) a fused model is timed in: ``device`` None is CUDA when present, else the CPU;
    ``dtype`` None is fp16 on a GPU, fp32 on the CPU (the only dtype of the fused CPU model). Anything else is
    a ValueError / TypeError naming the argument."""
    try:
        dev = default_device() if device is None else torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}") from None
    if dev.type not in ("cpu", "cuda") or (dev.type == "cuda" and not torch.cuda.is_available()):
        raise ValueError(f"device must be 'cpu' or an available 'cuda' device, got {device!r}")
    if dtype is None:
        dtype = torch.float16 if dev.type == "cuda" else torch.float32
    if not isinstance(dtype, torch.dtype) or dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"dtype must be torch.float32, torch.float16 or torch.bfloat16, got {dtype!r}")
    if dev.type == "cpu" and dtype != torch.float32:
        raise ValueError(f"dtype must be torch.float32 on the CPU (the fused CPU model runs in float32 only), got "
                         f"{dtype}")
    return dev, dtype


def time_fn(fn: Callable[[], object], warmup: int, repeats: int, min_seconds: float = 0.0,
            device=None) -> List[float]:
    """Samples (seconds) of ``fn()`` after ``warmup`` calls; at least ``repeats`` samples, more while the total
    is under ``min_seconds``. On a CUDA ``device`` each sample is the time between two CUDA events around the
    call (the GPU's time, the launch included); elsewhere wall-clock time."""
    cuda = _is_cuda(device)
    for _ in range(warmup):
        fn()
    if cuda:
        torch.cuda.synchronize(device)
    samples: List[float] = []
    start = time.perf_counter()
    while len(samples) < repeats or time.perf_counter() - start < min_seconds:
        if cuda:
            with torch.cuda.device(device):
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                fn()
                b.record()
                b.synchronize()
                samples.append(a.elapsed_time(b) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t0)
    return samples


def cuda_graphed(fn: Callable[[torch.Tensor], object], x: torch.Tensor) -> Callable[[], object]:
    """``fn`` on a static copy of ``x`` captured in a CUDA graph (after three warm-up calls on a side stream);
    returns the replay. Batch-1 GPU latency is launch-bound, and a deployment that cares replays a graph."""
    static = x.clone()
    with torch.cuda.device(x.device):
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                fn(static)
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            fn(static)
    return g.replay


def summarize(samples: List[float], keep_samples: bool = False) -> Dict[str, object]:
    """Median, quartiles, minimum and count (ms) of ``samples`` (seconds); with ``keep_samples`` also every
    sample in ms, in the order taken."""
    ms = [s * 1e3 for s in samples]
    srt = sorted(ms)
    q = statistics.quantiles(srt, n=4, method="inclusive") if len(srt) >= 2 else [srt[0]] * 3
    out: Dict[str, object] = {"median_ms": statistics.median(srt), "q1_ms": q[0], "q3_ms": q[2], "min_ms": srt[0],
                              "n": len(srt)}
    if keep_samples:
        out["samples_ms"] = ms
    return out


@contextlib.contextmanager
def exact_fp32(device=None):
    """On a CUDA device: fp32 means fp32 for every provider — no TF32 in cuBLAS or cuDNN — for the duration
    (restored after; through ``fp32_precision`` where torch has it, else the ``allow_tf32`` flags)."""
    if not _is_cuda(device):
        yield
        return
    conv = getattr(torch.backends.cudnn, "conv", None)
    if hasattr(torch.backends.cuda.matmul, "fp32_precision") and hasattr(conv, "fp32_precision"):
        old = torch.backends.cuda.matmul.fp32_precision, conv.fp32_precision
        torch.backends.cuda.matmul.fp32_precision = conv.fp32_precision = "ieee"
        try:
            yield
        finally:
            torch.backends.cuda.matmul.fp32_precision, conv.fp32_precision = old
    else:
        old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def interleaved(fns: Dict[str, Callable[[], object]], rounds: int,
                sample: Callable[[str, Callable[[], object], int], List[float]],
                on_error: Optional[Callable[[str, int, Exception], None]] = None) -> Dict[str, List[float]]:
    """``{name: samples}``: round after round, every function in turn is sampled by ``sample(name, fn, round)``
    (a list of seconds, e.g. from :func:`time_fn`), so a slow moment of a shared machine hits all of them
    alike; compare medians, not single runs. With ``on_error``, a function whose sampling raises is reported
    there and dropped from the later rounds (the others' samples are kept); without it the error propagates."""
    out: Dict[str, List[float]] = {k: [] for k in fns}
    live = dict(fns)
    for r in range(rounds):
        for name, fn in list(live.items()):
            try:
                out[name] += sample(name, fn, r)
            except Exception as exc:  # noqa: BLE001
                if on_error is None:
                    raise
                on_error(name, r, exc)
                del live[name], out[name]
    return out
