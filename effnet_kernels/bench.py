"""Eager EfficientNet latency on this device, φ = 0…7 (the README's first Quick start command).

    python -m effnet_kernels.bench [--phis 0 1 2.5] [--batch 1] [--repeats 5] [--out DIR]

Builds this package's eager model at each φ (random weights, randomised BN statistics — a default
initialised model produces denormal-sized activations that distort CPU timings), runs it at the φ's
own resolution under ``torch.inference_mode()`` in NCHW and channels_last, and prints the median
latency (ms) with the spread of repeated runs after warm-up. The fused-kernel columns arrive with
the kernel issues.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch

from . import info
from .models import efficientnet
from .scaling import compound, model_cost
from .testing import randomize_bn_

FORMATS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}


def op_bench_args(prog: str, description: str, out_name: str) -> argparse.ArgumentParser:
    """The command-line options every op microbenchmark (bench_ops, bench_se) takes."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--phis", type=int, nargs="+", default=list(range(8)), choices=range(8), metavar="PHI")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--formats", nargs="+", choices=list(FORMATS), default=list(FORMATS))
    p.add_argument("--min-seconds", type=float, default=0.05, help="minimum timed seconds per measurement")
    p.add_argument("--out", type=Path, default=None, help=f"folder for {out_name}.json and {out_name}.md")
    return p


def check_batches(p: argparse.ArgumentParser, args) -> None:
    if any(b < 1 for b in args.batches):
        p.error(f"--batches must be >= 1, got {args.batches}")


def progress_line(line: str) -> None:
    print("  " + line, file=sys.stderr, flush=True)


def record_isa(result: dict) -> None:
    """Put the CPU kernel path in use into the result's machine info (its tables print it)."""
    try:
        from ._cpu import isa_info
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


def summed_over(result: dict, shapes, batch: int, fmt: str) -> dict:
    """Eager and fused time of an op benchmark's rows summed over ``shapes`` (a model's layer shapes, repeats
    counted) at one batch and memory format."""
    by_shape = {(tuple(r["shape"]), r["batch"], r["format"]): r for r in result["rows"]}
    eager = fused = 0.0
    for s in shapes:
        r = by_shape[(tuple(s), batch, fmt)]
        eager += r["eager_ms"]
        fused += r["fused_ms"]
    return {"eager_ms": eager, "fused_ms": fused, "speedup": eager / fused}


def time_fn(fn, warmup: int, repeats: int, min_seconds: float = 0.0) -> List[float]:
    """Wall-clock samples (seconds) of ``fn()`` after ``warmup`` calls; at least ``repeats`` samples,
    more while the total is under ``min_seconds``."""
    for _ in range(warmup):
        fn()
    samples: List[float] = []
    start = time.perf_counter()
    while len(samples) < repeats or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return samples


def summarize(samples: List[float]) -> Dict[str, float]:
    ms = sorted(s * 1e3 for s in samples)
    q = statistics.quantiles(ms, n=4) if len(ms) >= 2 else [ms[0]] * 3
    return {"median_ms": statistics.median(ms), "q1_ms": q[0], "q3_ms": q[2], "min_ms": ms[0], "n": len(ms)}


def bench_eager(phis, batch: int = 1, repeats: int = 5, warmup: int = 1, formats=("nchw", "channels_last"),
                progress=None) -> List[dict]:
    rows = []
    for phi in phis:
        sc = compound(phi)
        cost = model_cost(phi)
        model = randomize_bn_(efficientnet(phi)).eval()
        x = torch.randn(batch, 3, sc.resolution, sc.resolution)
        row = {"phi": phi, "resolution": sc.resolution, "params": cost.params, "macs": cost.macs, "batch": batch}
        for fmt in formats:
            mf = FORMATS[fmt]
            m = model.to(memory_format=mf)
            xf = x.contiguous(memory_format=mf)
            with torch.inference_mode():
                row[fmt] = summarize(time_fn(lambda: m(xf), warmup, repeats))
            if progress:
                progress(f"phi={phi:g} {fmt}: {row[fmt]['median_ms']:.1f} ms")
        rows.append(row)
    return rows


def markdown_table(rows: List[dict], formats) -> str:
    head = "| φ | res | params (M) | GMACs | " + " | ".join(f"eager {f} ms (q1–q3)" for f in formats) + " |"
    sep = "|" + "---|" * (4 + len(formats))
    lines = [head, sep]
    for r in rows:
        cells = [f"{r['phi']:g}", str(r["resolution"]), f"{r['params'] / 1e6:.2f}", f"{r['macs'] / 1e9:.2f}"]
        for f in formats:
            s = r[f]
            cells.append(f"{s['median_ms']:.1f} ({s['q1_ms']:.1f}–{s['q3_ms']:.1f})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine_info() -> dict:
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
    return d


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m effnet_kernels.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--phis", type=float, nargs="+", default=list(range(8)), help="compound coefficients (default 0…7)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5, help="timed runs per model and format after warm-up")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--formats", nargs="+", choices=list(FORMATS), default=list(FORMATS))
    p.add_argument("--out", type=Path, default=None, help="folder for results.json and results.md")
    args = p.parse_args(argv)
    for name in ("batch", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.warmup < 0:
        p.error(f"--warmup must be >= 0, got {args.warmup}")
    if any(not (phi >= 0) for phi in args.phis):
        p.error(f"--phis must be real numbers >= 0, got {args.phis}")
    phis = [int(v) if float(v).is_integer() else v for v in args.phis]
    meta = machine_info()
    print(f"# eager EfficientNet latency, batch {args.batch}, fp32, {meta['threads']} threads, "
          f"torch {meta['torch']}, {meta.get('cpu', meta['processor'])}", flush=True)
    rows = bench_eager(phis, args.batch, args.repeats, args.warmup, args.formats,
                       progress=lambda s: print("  " + s, file=sys.stderr, flush=True))
    table = markdown_table(rows, args.formats)
    print(table)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps({"machine": meta, "rows": rows}, indent=2))
        (args.out / "results.md").write_text(
            f"Eager latency, batch {args.batch}, fp32, {meta['threads']} threads — {meta.get('cpu', '')}, "
            f"torch {meta['torch']}, {meta['date']}\n\n{table}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
