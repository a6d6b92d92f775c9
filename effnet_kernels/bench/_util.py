"""What every benchmark in this package shares beyond the core's timing (``effnet_kernels.timing``): the
GEMM rate floors are held against, machine facts, progress output, result files, and the command-line parser
that reports a user error in one line."""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Optional

import torch

from ..timing import exact_fp32, time_fn

FORMATS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class CliError(Exception):
    """A user error on the command line: reported as one line, exit status 2."""


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr (``prog: error: …``) and exit status 2: no
    usage block, no traceback."""

    def error(self, message: str):  # noqa: D102  (argparse API)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def parse_device(text: str) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N`` that exists on this machine; anything else raises CliError."""
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise CliError(f"--device must be cpu, cuda or cuda:N, got {text!r}") from None
    if dev.type == "cpu":
        return torch.device("cpu")
    if dev.type != "cuda":
        raise CliError(f"--device must be cpu, cuda or cuda:N, got {text!r}")
    if not torch.cuda.is_available():
        raise CliError(f"--device {text}: no CUDA device on this machine (torch.cuda.is_available() is False)")
    index = 0 if dev.index is None else dev.index
    if index >= torch.cuda.device_count():
        raise CliError(f"--device {text}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return torch.device("cuda", index)


def op_bench_args(prog: str, description: str, out_name: str) -> argparse.ArgumentParser:
    """The command-line options every op microbenchmark (bench.dwconv, bench.se) takes."""
    p = OneLineParser(prog=prog, description=description)
    p.add_argument("--phis", type=int, nargs="+", default=list(range(8)), choices=range(8), metavar="PHI")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--formats", nargs="+", choices=list(FORMATS), default=list(FORMATS))
    p.add_argument("--min-seconds", type=float, default=0.05, help="minimum timed seconds per measurement")
    p.add_argument("--out", type=Path, default=None, help=f"folder for {out_name}.json and {out_name}.md")
    return p


def check_batches(p: argparse.ArgumentParser, args) -> None:
    """The op benchmarks' own checks: batches >= 1, a finite non-negative --min-seconds."""
    if any(b < 1 for b in args.batches):
        p.error(f"--batches must be >= 1, got {args.batches}")
    if not (0 <= args.min_seconds < float("inf")):
        p.error(f"--min-seconds must be a finite number >= 0, got {args.min_seconds}")


def check_writable(p: argparse.ArgumentParser, out: Path, name: str) -> None:
    """Find out before minutes of measuring that ``out/name`` cannot be written: a one-line ``--out`` error."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / name).touch()
    except OSError as exc:
        p.error(f"--out {out}: cannot write results there ({exc.strerror or exc})")


def progress_line(line: str) -> None:
    print("  " + line, file=sys.stderr, flush=True)


class Progress:
    """A progress bar on stderr: redrawn in place on a terminal, one line per step otherwise (logs). Not tqdm:
    ~30 lines here against a dependency of the package for users who never run a benchmark, and its
    one-line-per-step mode off a terminal is what CI logs and --no-progress callers need."""

    def __init__(self, total: int, enabled: bool = True, stream=None):
        self.total, self.done, self.enabled = max(int(total), 1), 0, enabled
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = time.perf_counter()

    def step(self, text: str, n: int = 1) -> None:
        self.done = min(self.done + n, self.total)
        if not self.enabled:
            return
        frac = self.done / self.total
        elapsed = time.perf_counter() - self.start
        head = f"[{'#' * int(24 * frac):<24}] {100 * frac:3.0f}% {elapsed:5.0f}s"
        if self.tty:
            self.stream.write(f"\r\033[K{head} {text[:80]}")
            if self.done == self.total:
                self.stream.write("\n")
        else:
            self.stream.write(f"{head} {text}\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty and self.done < self.total:
            self.stream.write("\n")
            self.stream.flush()


def record_isa(result: dict) -> None:
    """Put the CPU kernel path in use into the result's machine info (its tables print it)."""
    try:
        from ..cpu import isa_info
        result["machine"]["isa"] = isa_info()["default"]
    except RuntimeError:
        result["machine"]["isa"] = "none (reference fallback)"


def write_op_results(result: dict, text: str, out: Optional[Path], name: str) -> None:
    """Print the table; write NAME.json and NAME.md under out (when given)."""
    print(text)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{name}.json").write_text(json.dumps(result, indent=1))
        (out / f"{name}.md").write_text(text)


def summed_over(result: dict, shapes, batch: int, fmt: str) -> Optional[dict]:
    """Eager and fused time of an op benchmark's rows summed over ``shapes`` (a model's layer shapes, repeats
    counted) at one batch and memory format; None when a shape was not measured (an interrupted run)."""
    by_shape = {(tuple(r["shape"]), r["batch"], r["format"]): r for r in result["rows"]}
    eager = fused = 0.0
    for s in shapes:
        r = by_shape.get((tuple(s), batch, fmt))
        if r is None:
            return None
        eager += r["eager_ms"]
        fused += r["fused_ms"]
    return {"eager_ms": eager, "fused_ms": fused, "speedup": eager / fused}


def mm_rate(n: int = 512, seconds: float = 0.3, device="cpu", dtype: torch.dtype = torch.float32) -> float:
    """Multiply-adds per second ``torch.mm`` reaches on n×n×n in ``dtype`` on ``device``: the fastest of
    repeated runs, the machine's best GEMM rate that the kernels' multiply-adds are held against (a median
    taken during a slow moment of a shared host would flatter them)."""
    a, b = torch.randn(n, n).to(device, dtype), torch.randn(n, n).to(device, dtype)
    out = torch.empty_like(a)
    with exact_fp32(device):
        samples = time_fn(lambda: torch.mm(a, b, out=out), warmup=3, repeats=5, min_seconds=seconds, device=device)
    return n ** 3 / min(samples)


def machine_info(device=None) -> dict:
    """Versions (``effnet_kernels.info()``), the CPU model, the date and, for a CUDA device, its name."""
    from .. import info

    d = info()
    d.update({"processor": platform.processor() or platform.machine(), "node": platform.node(),
              "date": time.strftime("%Y-%m-%d %H:%M:%S")})
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    d["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    dev = torch.device("cpu") if device is None else torch.device(device)
    d["device"] = str(dev)
    d["device_name"] = torch.cuda.get_device_name(dev) if dev.type == "cuda" else d.get("cpu", d["processor"])
    try:
        import onnxruntime
        d["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        d["onnxruntime"] = None
    return d
