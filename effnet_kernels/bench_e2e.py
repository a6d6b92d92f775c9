"""End-to-end CPU benchmark of ``fuse(model)`` against eager PyTorch (NCHW and channels_last), ONNX Runtime
(when installed) and ``torch.compile`` (inductor with freezing, for the φ listed in ``--compile-phis``).

    python -m effnet_kernels.bench_e2e --phis 0 1 2 --batch 1 --out benchmarks/results/cpu-x86_64-2core

Every model is this package's EfficientNet at φ with randomized BatchNorm statistics, fp32, at the paper's
resolution. Providers are timed in interleaved rounds (a few runs each per round, so drift on a shared
machine hits all of them alike); the table gives medians over all rounds and the ratios against eager in
its faster memory format and against ONNX Runtime. All runs use ``torch.inference_mode()``, the default
thread count and the default precision flags; the fused time includes nothing the caller would not do
(the input goes in as NCHW). For φ ≥ 4 it also gives the fused model's multiply-adds per second against
``torch.mm``'s rate on this machine, measured in the same run (the GEMM floor).
"""
from __future__ import annotations

import argparse
import io
import sys
import time
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

from .bench import machine_info, summarize, write_op_results
from .fuse import fuse
from .models import efficientnet
from .scaling import compound, model_cost
from .testing import randomize_bn_, rel_error

PROVIDERS = ("eager_nchw", "eager_cl", "compile", "ort", "fused")


def mm_rate(seconds: float = 1.0) -> float:
    """torch.mm multiply-adds per second on 1024 x 1024 fp32 (the machine's GEMM rate, all threads)."""
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    out = torch.empty(1024, 1024)
    for _ in range(3):
        torch.mm(a, b, out=out)
    samples = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        samples.append(time.perf_counter() - t0)
    return 1024 ** 3 / sorted(samples)[len(samples) // 2]


def ort_session(model: torch.nn.Module, x: torch.Tensor):
    """An ONNX Runtime CPU session for ``model`` (None when onnxruntime / the exporter is unavailable)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), buf, dynamo=False, input_names=["x"], output_names=["logits"],
                          opset_version=17, dynamic_axes={"x": {0: "batch"}})
    so = ort.SessionOptions()
    so.intra_op_num_threads = torch.get_num_threads()
    sess = ort.InferenceSession(buf.getvalue(), so, providers=["CPUExecutionProvider"])
    return lambda xin: torch.from_numpy(sess.run(None, {"x": xin.numpy()})[0])


def compiled(model: torch.nn.Module, x: torch.Tensor):
    """torch.compile (inductor, freezing) of the eager model in channels_last; freezing is restored after."""
    import torch._inductor.config as cfg
    old = cfg.freezing
    cfg.freezing = True
    try:
        m = torch.compile(model.to(memory_format=torch.channels_last))
        xc = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            m(xc)  # compiles here, outside the timed rounds
    finally:
        cfg.freezing = old
    return lambda xin: m(xin.contiguous(memory_format=torch.channels_last))


def bench_phi(phi, batch: int, rounds: int, per_round: int, compile_it: bool, use_ort: bool,
              progress: Callable[[str], None]) -> dict:
    sc = compound(phi)
    cost = model_cost(phi)
    res = sc.resolution
    model = randomize_bn_(efficientnet(phi).eval(), calibration_size=(2, 3, res, res))
    x = torch.randn(batch, 3, res, res, generator=torch.Generator().manual_seed(1))
    eager_cl = efficientnet(phi).eval()
    eager_cl.load_state_dict(model.state_dict())
    eager_cl = eager_cl.to(memory_format=torch.channels_last)
    fns: Dict[str, Callable] = {
        "eager_nchw": lambda xin: model(xin),
        "eager_cl": lambda xin: eager_cl(xin.contiguous(memory_format=torch.channels_last)),
        "fused": fuse(model),
    }
    if use_ort:
        f = ort_session(model, x)
        if f is not None:
            fns["ort"] = f
    if compile_it:
        c = efficientnet(phi).eval()
        c.load_state_dict(model.state_dict())
        fns["compile"] = compiled(c, x)
    row = {"phi": phi, "resolution": res, "batch": batch, "params": cost.params, "macs": cost.macs * batch}
    samples: Dict[str, List[float]] = {k: [] for k in fns}
    with torch.inference_mode():
        ref = model(x)
        row["fused_rel_err"] = rel_error(fns["fused"](x), ref)
        if "ort" in fns:
            row["ort_rel_err"] = rel_error(fns["ort"](x), ref)
        for fn in fns.values():  # warm-up
            fn(x)
        for r in range(rounds):
            for name in PROVIDERS:
                if name not in fns:
                    continue
                # Let the previous provider's worker threads stop spinning (ONNX Runtime's and OpenMP's
                # spin for milliseconds after a run and would take the cores from the next provider).
                time.sleep(0.05)
                fns[name](x)
                for _ in range(per_round):
                    t0 = time.perf_counter()
                    fns[name](x)
                    samples[name].append(time.perf_counter() - t0)
            progress(f"phi={phi:g} round {r + 1}/{rounds}: " + "  ".join(
                f"{k} {sorted(v)[len(v) // 2] * 1e3:.1f}" for k, v in samples.items()))
    for name, s in samples.items():
        row[name] = summarize(s)
        row[name]["samples_ms"] = [v * 1e3 for v in s]
    return row


def profile_fused(phi, batch: int = 1, runs: int = 10) -> dict:
    """Where the fused model's time goes: the C++ engine's per-step wall times (median over ``runs``
    forward passes), summed per kind of step (stem, expand_dw: the banded expand + depthwise of large
    layers, expand, dw, se_gate, project, head, classifier)."""
    res = compound(phi).resolution
    model = randomize_bn_(efficientnet(phi).eval(), calibration_size=(2, 3, res, res))
    fused = fuse(model)
    x = torch.randn(batch, 3, res, res)
    with torch.inference_mode():
        fused(x)
        net = fused._engine()
        net.set_profiling(True)
        steps: Dict[str, List[float]] = {}
        try:
            for _ in range(runs):
                fused(x)
                for name, sec in net.last_profile():
                    steps.setdefault(name, []).append(sec * 1e3)
        finally:
            net.set_profiling(False)
    med = {k: sorted(v)[len(v) // 2] for k, v in steps.items()}
    kinds: Dict[str, float] = {}
    for k, v in med.items():
        kinds[k.split(".")[0]] = kinds.get(k.split(".")[0], 0.0) + v
    return {"phi": phi, "batch": batch, "resolution": res, "steps_ms": med, "kinds_ms": kinds}


def profile_table(profiles: List[dict]) -> str:
    kinds = ["stem", "expand_dw", "expand", "dw", "se_gate", "project", "head", "classifier"]
    lines = ["| φ | batch | " + " | ".join(f"{k} ms" for k in kinds) + " | sum ms |", "|" + "---|" * (len(kinds) + 3)]
    for p in profiles:
        total = sum(p["kinds_ms"].values())
        lines.append(f"| {p['phi']:g} | {p['batch']} | " + " | ".join(
            f"{p['kinds_ms'].get(k, 0.0):.2f} ({100 * p['kinds_ms'].get(k, 0.0) / total:.0f} %)" for k in kinds) +
            f" | {total:.2f} |")
    return "\n".join(lines)


def table(rows: List[dict], mm: float) -> str:
    provs = [p for p in PROVIDERS if any(p in r for r in rows)]
    head = ("| φ | res | batch | " + " | ".join(f"{p} ms" for p in provs) +
            " | fused vs eager (best) | fused vs ORT | fused GMAC/s (% of mm) |")
    lines = [head, "|" + "---|" * (3 + len(provs) + 3)]
    for r in rows:
        cells = [f"{r['phi']:g}", str(r["resolution"]), str(r["batch"])]
        for p in provs:
            cells.append(f"{r[p]['median_ms']:.1f}" if p in r else "—")
        fused = r["fused"]["median_ms"]
        eager = min(r["eager_nchw"]["median_ms"], r["eager_cl"]["median_ms"])
        cells.append(f"{eager / fused:.2f}×")
        cells.append(f"{r['ort']['median_ms'] / fused:.2f}×" if "ort" in r else "—")
        rate = r["macs"] / (fused / 1e3)
        cells.append(f"{rate / 1e9:.1f} ({100 * rate / mm:.0f} %)")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m effnet_kernels.bench_e2e", description=__doc__.split("\n\n")[0])
    p.add_argument("--phis", type=float, nargs="+", default=list(range(8)))
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--per-round", type=int, default=3, help="runs of each provider per round")
    p.add_argument("--compile-phis", type=float, nargs="*", default=[0],
                   help="phis for which torch.compile is also timed (compiling takes tens of seconds each)")
    p.add_argument("--no-ort", action="store_true")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--name", default="e2e")
    p.add_argument("--profile", action="store_true",
                   help="only profile the fused model per phi (per-step times inside the C++ engine)")
    args = p.parse_args(argv)
    if args.batch < 1 or args.rounds < 1 or args.per_round < 1:
        p.error("--batch, --rounds and --per-round must be >= 1")
    if any(not (v >= 0) for v in args.phis):
        p.error(f"--phis must be numbers >= 0, got {args.phis}")
    phis = [int(v) if float(v).is_integer() else v for v in args.phis]
    meta = machine_info()
    mm = mm_rate()
    meta["mm_macs_per_s"] = mm
    try:
        import onnxruntime
        meta["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        meta["onnxruntime"] = None
    if args.profile:
        profiles = [profile_fused(phi, args.batch) for phi in phis]
        text = (f"Fused model, per-step profile (median of 10 runs), batch {args.batch} — {meta.get('cpu', '')}, "
                f"{meta['threads']} threads, {meta['date']}\n\n{profile_table(profiles)}\n")
        write_op_results({"machine": meta, "profiles": profiles}, text, args.out, args.name)
        return 0
    rows = []

    def progress(s):
        print("  " + s, file=sys.stderr, flush=True)

    title = (f"End to end, batch {args.batch}, fp32, {meta['threads']} threads — {meta.get('cpu', '')}, torch "
             f"{meta['torch']}, onnxruntime {meta['onnxruntime']}, {meta['date']}; torch.mm {mm / 1e9:.1f} GMAC/s")
    try:
        for phi in phis:
            rows.append(bench_phi(phi, args.batch, args.rounds, args.per_round, phi in args.compile_phis,
                                  not args.no_ort, progress))
    except KeyboardInterrupt:
        print("interrupted: writing the rows measured so far", file=sys.stderr)
    write_op_results({"machine": meta, "rows": rows}, f"{title}\n\n{table(rows, mm)}\n", args.out, args.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
