"""effnet-bench: EfficientNet at every φ on this device — the fused kernels against eager PyTorch (NCHW and
channels_last), torch.compile and, on the CPU, ONNX Runtime — and which φ fits a budget.

    effnet-bench --quick                      # every φ 0…7, eager + fused (+ ORT, compile at B0), ~2 min
    effnet-bench [--device cuda] [--phis 0 2.5 7] [--batch 8] [--out DIR]    # the full run
    effnet-bench --model timm:efficientnet_b0:features lukemelas:efficientnet-b2  # models people use
    effnet-bench fit --latency-ms 20          # the largest φ whose fused model runs in 20 ms here
    effnet-bench fit --macs 1e9 --params 10e6 # by cost alone (no measuring)
    effnet-bench fit --latency-ms 20 --alpha 1.4 --beta 1.05   # ... in your own compound-scaling family
    effnet-bench scaling --quick              # what depth, width and resolution each cost here (fused, eager)
    effnet-bench profile --phis 0 4           # where the fused CPU model's time goes
    effnet-bench render DIR/results.json      # the tables and plots again from a results file
    effnet-bench denormal --out DIR           # what subnormal inputs cost the fused ops and eager here

The run writes, under ``--out`` (default ``./effnet-bench-results``): ``results.json`` (machine, versions,
settings and every sample; schema: :mod:`effnet_kernels.bench.schema`), ``results.md`` (the tables) and
``latency.png`` / ``speedup.png`` (with matplotlib). Ctrl-C (or SIGTERM) stops it and still writes what was
measured. Same as ``python -m effnet_kernels.bench``.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path
from typing import List, Optional


from ._util import (DTYPES, FORMATS, CliError, OneLineParser, Progress, check_writable, machine_info, mm_rate,
                    parse_device, progress_line, record_isa, write_op_results)
from ..timing import default_device, summarize
from .e2e import LABELS, PROVIDERS
from ..budget import check_budget
from ..scaling import _check_phi

SCHEMA_ID = "effnet-bench/1"
ALL_PHIS = list(range(8))
# What --quick measures beyond eager + fused at every φ (batch 1), chosen to finish in < 5 min on 2 cores.
QUICK = {"rounds": 3, "per_round": 2, "compile_phis": [0], "ort_phi_max": 4, "throughput_phis": [0],
         "op_batches": [1], "op_min_seconds": 0.005, "op_repeats": 3}
FULL = {"rounds": 3, "per_round": 2, "op_min_seconds": 0.05, "op_repeats": 5}
# The clock of --time-limit-s and of the seconds recorded per row and run (a module attribute, so a test can
# drive the time limit with a fake clock).
clock = time.perf_counter


# ----------------------------------------------------------------------------------------------- arguments

PHI_MAX = 40.0  # beyond this a model does not fit any machine (and fit's search stops there too)


def _phi(text: str) -> float:
    """An argparse type: a real φ in [0, 40] (scaling's own check, as a one-line argparse error)."""
    try:
        v = _check_phi(float(text), "phi")
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}") from None
    if v > PHI_MAX:
        raise argparse.ArgumentTypeError(f"must be <= {PHI_MAX:g}, got {text!r}")
    return int(v) if v.is_integer() else v


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return v


def _budget(text: str) -> float:
    """An argparse type: a finite number > 0 (the budget API's own check, as a one-line argparse error)."""
    try:
        return check_budget(float(text), "value")
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}") from None


def _model_spec(text: str) -> str:
    from ..testing import spec_phi
    parts = text.split(":")
    if parts[0] not in ("ek", "timm", "tv", "lukemelas", "unet", "unet-encoder") or len(parts) < 2:
        raise argparse.ArgumentTypeError(
            f"expected timm:NAME[:features[:I,J]], tv:NAME[:features], lukemelas:NAME[:SIZE], "
            f"unet[-encoder]:timm|lukemelas:NAME or ek:PHI, got {text!r}")
    try:
        spec_phi(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _phi_set(text: str):
    """'all', 'none' or a φ."""
    if text in ("all", "none"):
        return text
    return _phi(text)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when present, else cpu)")
    p.add_argument("--dtype", choices=list(DTYPES), default=None,
                   help="fp32 (the only one on the CPU), fp16 (GPU default) or bf16")


def run_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="effnet-bench", description=__doc__.split("\n\n")[0])
    _common(p)
    p.add_argument("--quick", action="store_true",
                   help="< 5 min on 2 cores: every φ for eager and fused at batch 1; torch.compile at φ=0, ONNX "
                        "Runtime at φ<=4, the throughput batch at φ=0, op shapes at batch 1 (the table says so)")
    p.add_argument("--phis", type=_phi, nargs="+", default=None, metavar="PHI",
                   help="compound coefficients for the end-to-end part (default 0 1 … 7)")
    p.add_argument("--model", type=_model_spec, nargs="+", default=None, metavar="SPEC",
                   help="models of the libraries people use instead of φ: timm:NAME[:features[:I,J]], "
                        "tv:NAME[:features], lukemelas:NAME[:SIZE], unet[-encoder]:timm|lukemelas:NAME, ek:PHI "
                        "(each at its own input size, batch 1 unless --batch; the whole-model EfficientNet of "
                        "each φ is measured too, as the reference of the speed-ups); EfficientNet-B0…B7 or a "
                        "cousin: tv:mobilenet_v3_large, timm:tf_efficientnet_lite0, tv:mnasnet1_0, …")
    p.add_argument("--batch", type=_positive_int, default=None,
                   help="the throughput batch, measured besides batch 1 (default 8 on CPU, 64 on GPU; 1: latency only)")
    p.add_argument("--providers", nargs="+", choices=list(PROVIDERS), default=list(PROVIDERS))
    p.add_argument("--compile-phis", type=_phi_set, nargs="+", default=None, metavar="PHI|all|none",
                   help="φ at which torch.compile is measured (default: all; --quick: 0)")
    p.add_argument("--ort-phis", type=_phi_set, nargs="+", default=None, metavar="PHI|all|none",
                   help="φ at which ONNX Runtime is measured (CPU; default: all; --quick: 0…4)")
    p.add_argument("--rounds", type=_positive_int, default=None, help="interleaved rounds per model (default 3)")
    p.add_argument("--per-round", type=_positive_int, default=None, help="timed runs per provider and round")
    part = p.add_mutually_exclusive_group()
    part.add_argument("--no-ops", action="store_true", help="skip the op microbenchmarks")
    part.add_argument("--ops-only", action="store_true", help="only the op microbenchmarks")
    p.add_argument("--op-phis", type=int, nargs="+", default=ALL_PHIS, choices=ALL_PHIS, metavar="PHI",
                   help="models whose layer shapes the op microbenchmarks cover (default 0 … 7)")
    p.add_argument("--op-batches", type=_positive_int, nargs="+", default=None,
                   help="batches of the op microbenchmarks (default: 1 and the throughput batch; --quick: 1)")
    p.add_argument("--time-limit-s", type=_budget, default=None,
                   help="start nothing new after this many seconds (what is left is listed as skipped)")
    p.add_argument("--out", type=Path, default=Path("effnet-bench-results"), help="results folder")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return p


def fit_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="effnet-bench fit",
                      description="The largest φ (to 0.01) whose fused model fits every budget given.")
    _common(p)
    p.add_argument("--latency-ms", type=_budget, default=None, help="median latency of the fused model here")
    p.add_argument("--macs", type=_budget, default=None, help="multiply-adds per image (no measuring)")
    p.add_argument("--params", type=_budget, default=None, help="parameters (no measuring)")
    p.add_argument("--batch", type=_positive_int, default=1, help="batch for the latency (default 1)")
    p.add_argument("--phi-max", type=_phi, default=12.0, help="largest φ considered (default 12)")
    p.add_argument("--json", action="store_true", help="print the answer as JSON after the phi= line")
    p.add_argument("--no-progress", action="store_true")
    from .scaling import add_coefficients
    add_coefficients(p, "search the family of these compound-scaling coefficients instead of the official table")
    return p


def profile_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="effnet-bench profile",
                      description="Per-step times inside the fused CPU model (the C++ engine).")
    p.add_argument("--phis", type=_phi, nargs="+", default=[0, 4, 7], metavar="PHI")
    p.add_argument("--batch", type=_positive_int, default=1)
    p.add_argument("--out", type=Path, default=None, help="folder for fused_profile.json and .md")
    return p


def _device_and_dtype(args):
    device = default_device() if args.device is None else parse_device(args.device)
    name = args.dtype or ("fp16" if device.type == "cuda" else "fp32")
    if device.type == "cpu" and name != "fp32":
        raise CliError(f"--dtype {name}: the fused CPU model runs in fp32 only (use --dtype fp32 on the CPU)")
    return device, DTYPES[name]


def _resolve_phis(choice, phis: List, default) -> List:
    if choice is None:
        choice = default
    if choice == ["all"] or choice == "all":
        return list(phis)
    if choice == ["none"] or choice == "none":
        return []
    if any(c in ("all", "none") for c in choice):
        raise CliError(f"'all' and 'none' stand alone, got {choice}")
    return [p for p in phis if p in choice]


# --------------------------------------------------------------------------------------------------- tables

def _ms(s: Optional[dict]) -> str:
    if s is None:
        return "—"
    half = (s["q3_ms"] - s["q1_ms"]) / 2
    return f"{s['median_ms']:.2f} ±{half:.2f}" if s["median_ms"] < 10 else f"{s['median_ms']:.1f} ±{half:.1f}"


def best_eager(row: dict) -> Optional[float]:
    t = [row["providers"][k]["median_ms"] for k in ("eager_nchw", "eager_cl") if k in row["providers"]]
    return min(t) if t else None


def e2e_table(rows: List[dict], mm_gmacs: Optional[float] = None) -> str:
    """One table per batch: φ, resolution, cost, each provider's median ± half the IQR (ms), the fused
    model's speed-up over eager (its faster memory format), torch.compile and ONNX Runtime, and (given the
    device's torch.mm rate) its multiply-add rate against that."""
    out = []
    rate = mm_gmacs is not None
    provs = [p for p in PROVIDERS if any(p in r["providers"] or p in r["skipped"] for r in rows)]
    for batch in sorted({r["batch"] for r in rows}):
        rs = [r for r in rows if r["batch"] == batch]
        out += [f"**Batch {batch}** ({rs[0]['dtype']}; ms: median ± half the interquartile range)", "",
                "| φ | res | params | GMACs | " + " | ".join(LABELS[p] for p in provs) +
                " | fused vs eager | fused vs compile | fused vs ORT |" + (" fused GMAC/s (% of mm) |" if rate else ""),
                "|" + "---|" * (4 + len(provs) + 3 + rate)]
        by_model = any("model" in r for r in rs)
        if by_model:
            out[-2] = out[-2].replace("| φ | res |", "| model | φ | res |", 1) + " swapped / left |"
            out[-1] += "---|---|"
        for r in rs:
            cells = ["—" if r["phi"] is None else f"{r['phi']:g}", str(r["resolution"]), f"{r['params'] / 1e6:.1f}M",
                     f"{r['macs'] / 1e9:.2f}"]
            if by_model:
                cells.insert(0, f"`{r.get('model', '')}`")
            cells += [_ms(r["providers"].get(p)) for p in provs]
            fused = r["providers"].get("fused")
            eager = best_eager(r)
            for base in (eager, *(r["providers"][k]["median_ms"] if k in r["providers"] else None
                                  for k in ("compile", "ort"))):
                cells.append(f"{base / fused['median_ms']:.2f}×" if fused and base else "—")
            if rate:
                g = r["macs"] / (fused["median_ms"] * 1e6) if fused else None
                cells.append(f"{g:.1f} ({100 * g / mm_gmacs:.0f} %)" if g else "—")
            if by_model:
                cells.append(f"{r['swapped']} / {r['left']}" if "swapped" in r else "—")
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def _times(v: Optional[float]) -> str:
    return f"{v:.2f}×" if v else "—"


def _what(row: dict) -> str:
    """A row's model spec, or its φ."""
    return row.get("model") or f"φ={row['phi']:g}"


def speedup(row: dict) -> Optional[float]:
    """The fused model's speed-up over eager (its faster memory format) in a row, or None."""
    eager, fused = best_eager(row), row["providers"].get("fused")
    return eager / fused["median_ms"] if eager and fused else None


def whole_model_table(rows: List[dict]) -> str:
    """Per model row: its fused speed-up over eager against that of the whole-model EfficientNet of the same
    φ and batch in the same run (the ek:φ rows), and against ONNX Runtime."""
    refs = {(r["batch"], r["phi"]): r for r in rows if str(r.get("model", "")).startswith("ek:")}
    lines = ["| model | batch | fused vs eager | whole-model ek:φ fused vs eager | ratio | fused vs ORT |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        if "model" not in r or r["model"].startswith("ek:"):
            continue
        ref = refs.get((r["batch"], r["phi"]))
        mine, theirs = speedup(r), speedup(ref) if ref else None
        ort, fused = r["providers"].get("ort"), r["providers"].get("fused")
        vs_ort = ort["median_ms"] / fused["median_ms"] if ort and fused else None
        cells = [f"`{r['model']}`", str(r["batch"]), _times(mine), _times(theirs),
                 f"{mine / theirs:.2f}" if mine and theirs else "—", _times(vs_ort)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) if len(lines) > 2 else ""


def budget_table(rows: List[dict], budgets_ms=(5, 10, 20, 50, 100, 200, 500, 1000, 2000)) -> str:
    """The largest measured φ whose fused batch-1 median fits each latency budget."""
    rs = sorted((r for r in rows if r["batch"] == 1 and "fused" in r["providers"] and "model" not in r),
                key=lambda r: r["phi"])
    if not rs:
        return ""
    lines = ["| latency budget | largest measured φ (fused, batch 1) | its latency |", "|---|---|---|"]
    for b in budgets_ms:
        fit = [r for r in rs if r["providers"]["fused"]["median_ms"] <= b]
        if fit:
            r = fit[-1]
            lines.append(f"| {b} ms | {r['phi']:g} | {r['providers']['fused']['median_ms']:.1f} ms |")
        else:
            lines.append(f"| {b} ms | none of those measured | |")
    return "\n".join(lines)


def markdown(result: dict) -> str:
    m, st = result["machine"], result["settings"]
    lines = [f"# effnet-bench — {m['device_name']} ({m['device']}), {m['date']}", "",
             f"torch {m['torch']}, triton {m['triton']}, onnxruntime {m['onnxruntime']}, effnet_kernels "
             f"{m['effnet_kernels']}, CPU kernel path {m.get('isa')}, {m['threads']} threads, {st['dtype']}"
             f"{', --quick' if st['quick'] else ''}. Medians of {st['rounds']} interleaved rounds × {st['per_round']} "
             f"runs after warm-up{'; CUDA-graph replays at batch 1' if m['device'].startswith('cuda') else ''}.", ""]
    if result.get("interrupted"):
        lines += ["**Interrupted: the tables hold what was measured before the stop.**", ""]
    if result["e2e"] or result.get("failed"):
        mm = m.get("mm_gmacs")
        lines += ["## End to end", ""]
        if mm:
            lines += [f"torch.mm on this device: {mm:.1f} GMAC/s (the GEMM rate the fused model's multiply-adds are "
                      "compared with).", ""]
        lines += [e2e_table(result["e2e"], mm)]
        wt = whole_model_table(result["e2e"])
        if wt:
            lines += ["### Models against the whole-model EfficientNet of their φ", "", wt, ""]
        bt = budget_table(result["e2e"])
        if bt:
            lines += ["### Which φ fits a latency budget", "", bt, "",
                      "Between the measured φ: `effnet-bench fit --latency-ms MS` (bisection to 0.01).", ""]
        errs = [f"- {_what(r)} batch {r['batch']} {k}: {v}" for r in result["e2e"] for k, v in r["errors"].items()]
        errs += [f"- {_what(f)} batch {f['batch']}: {f['error']}" for f in result.get("failed", [])]
        if errs:
            lines += ["Errors:", "", *errs, ""]
    if result["notes"]:
        lines += ["Notes:", "", *[f"- {n}" for n in result["notes"]], ""]
    ops = result.get("ops", {})
    if "rows" in ops.get("dwconv", {}):
        from .dwconv import markdown as dw_md
        lines += ["## Depthwise conv + BN + Swish per layer shape", "", dw_md(ops["dwconv"], _op_phis(ops["dwconv"]))]
    if "rows" in ops.get("se", {}):
        from .se import markdown as se_md
        lines += ["## Squeeze-excitation per layer shape", "", se_md(ops["se"], _op_phis(ops["se"]))]
    return "\n".join(lines).rstrip() + "\n"


def _op_phis(op_result: dict) -> List[int]:
    return op_result.get("phis", ALL_PHIS)


# ----------------------------------------------------------------------------------------------------- run

def _plan(args, device, phis):
    quick = args.quick
    cfg = QUICK if quick else FULL
    throughput = args.batch if args.batch is not None else (64 if device.type == "cuda" else 8)
    plan = {"rounds": args.rounds or cfg["rounds"], "per_round": args.per_round or cfg["per_round"],
            "compile_phis": _resolve_phis(args.compile_phis, phis, QUICK["compile_phis"] if quick else "all"),
            "ort_phis": _resolve_phis(args.ort_phis, phis,
                                      [p for p in phis if p <= QUICK["ort_phi_max"]] if quick else "all"),
            "batches": [1] + ([throughput] if throughput > 1 else []),
            "throughput_phis": [p for p in phis if p in QUICK["throughput_phis"]] if quick else list(phis)}
    jobs = []  # (batch, φ or model spec, providers)
    if args.model:
        from ..testing import spec_phi
        specs = list(dict.fromkeys(args.model))
        refs = [f"ek:{spec_phi(m):g}" for m in specs if spec_phi(m) is not None]  # (none for MobileNet & co)
        specs += [r for r in dict.fromkeys(refs) if r not in specs]
        plan["batches"] = [1] + ([args.batch] if args.batch and args.batch > 1 else [])
        plan["throughput_phis"] = []
        for batch in plan["batches"]:
            jobs += [(batch, spec, list(args.providers)) for spec in specs]
        return plan, jobs
    for batch in plan["batches"]:
        for phi in (phis if batch == 1 else plan["throughput_phis"]):
            provs = [p for p in args.providers if (p != "compile" or phi in plan["compile_phis"])
                     and (p != "ort" or phi in plan["ort_phis"])]
            if quick and batch > 1:  # the throughput batch: eager and fused (compiling again would double the time)
                provs = [p for p in provs if p != "compile"]
            jobs.append((batch, phi, provs))
    return plan, jobs


def _notes(args, plan, phis, device) -> List[str]:
    """What the end-to-end tables leave out on purpose (empty for --ops-only)."""
    from .e2e import ort_available

    notes = []
    if args.ops_only:
        return notes
    if args.model:
        return ["each model at the input size it was built for (U-Nets: 256); fused vs whole-model: the model's fused "
                "speed-up over its eager over that of this package's whole EfficientNet of the same φ (ek:φ rows), "
                "in the same run"]
    if args.quick:
        notes.append("--quick: every φ for eager and fused at batch 1; the rest limited as listed (and torch.compile "
                     "not at the throughput batch)")
    for name, key in (("torch.compile", "compile_phis"), ("ONNX Runtime", "ort_phis")):
        prov = "compile" if key == "compile_phis" else "ort"
        if prov not in args.providers or plan[key] == list(phis):
            continue
        if prov == "ort" and (device.type == "cuda" or not ort_available()):
            continue  # the rows say why (CPU only / not installed)
        if not plan[key]:
            notes.append(f"{name} not measured")
        else:
            notes.append(f"{name} measured at φ = {', '.join(f'{p:g}' for p in plan[key])} only"
                         + (" (compiling takes tens of seconds per model)" if prov == "compile" else ""))
    if len(plan["batches"]) > 1 and plan["throughput_phis"] != list(phis):
        notes.append(f"throughput batch {plan['batches'][1]} measured at φ = "
                     f"{', '.join(f'{p:g}' for p in plan['throughput_phis']) or 'none'} only")
    return notes


def run(argv: Optional[List[str]] = None) -> int:
    p = run_parser()
    args = p.parse_args(argv)
    try:
        device, dtype = _device_and_dtype(args)
    except CliError as exc:
        p.error(str(exc))
    if args.model and args.phis is not None:
        p.error("--model and --phis: give one (a run measures models or φ)")
    phis = list(dict.fromkeys(args.phis)) if args.phis is not None else ALL_PHIS
    try:
        plan, jobs = _plan(args, device, phis)
    except CliError as exc:
        p.error(str(exc))
    if args.ops_only:
        jobs = []
    if args.model and not args.ops_only:
        args.no_ops = True  # a run over models measures models (the op shapes are φ's: effnet-bench --ops-only)
    op_batches = args.op_batches or (QUICK["op_batches"] if args.quick else plan["batches"])
    op_phis = sorted(set(args.op_phis))
    do_ops = not args.no_ops
    check_writable(p, args.out, "results.json")
    meta = machine_info(device)
    record_isa({"machine": meta})
    if jobs:  # the GEMM rate of this device, the floor the fused model's multiply-adds are held against
        meta["mm_gmacs"] = mm_rate(4096 if device.type == "cuda" else 1024, 0.5, device, dtype) / 1e9
    result = {"schema": SCHEMA_ID, "machine": meta, "complete": False, "interrupted": False,
              "settings": {"device": str(device), "dtype": str(dtype).replace("torch.", ""), "quick": args.quick,
                           "phis": list(phis), "providers": list(args.providers), "rounds": plan["rounds"],
                           "per_round": plan["per_round"], "batches": plan["batches"],
                           "compile_phis": plan["compile_phis"], "ort_phis": plan["ort_phis"],
                           "throughput_phis": plan["throughput_phis"], "ops": do_ops, "op_batches": op_batches,
                           "models": list(args.model or []),
                           "op_phis": op_phis,
                           "argv": list(sys.argv[1:] if argv is None else argv)},
              "notes": _notes(args, plan, phis, device), "e2e": [], "failed": [], "ops": {}}
    n_ops = 0
    if do_ops:
        from ..scaling import dw_layer_shapes, se_layer_shapes
        from .se import model_blocks
        n_ops = (len(dw_layer_shapes(op_phis)) + len(se_layer_shapes(op_phis))) * len(op_batches) * len(FORMATS)
        n_ops += len(model_blocks(0)) if _se_block_phis(args.quick, op_phis, device) else 0
    from .e2e import ort_available
    runs_ort = device.type == "cpu" and ort_available()
    n_e2e = sum(len([p for p in j[2] if p != "ort" or runs_ort]) for j in jobs) * plan["rounds"]
    progress = Progress(n_e2e + n_ops, enabled=not args.no_progress)
    print(f"# effnet-bench on {meta['device_name']} ({device}), {result['settings']['dtype']}, {meta['threads']} "
          f"threads; writing to {args.out}", file=sys.stderr, flush=True)
    start = clock()
    old_term = signal.signal(signal.SIGTERM, _raise_interrupt)
    cut_short = False
    try:
        from .e2e import bench_model, bench_phi
        for i, (batch, phi, provs) in enumerate(jobs):
            if i > 0 and args.time_limit_s is not None and clock() - start > args.time_limit_s:
                result["notes"].append(f"--time-limit-s {args.time_limit_s:g} reached: not measured: "
                                       + ", ".join(f"{q if isinstance(q, str) else f'φ={q:g}'} batch {b}"
                                                   for b, q, _ in jobs[i:]))
                cut_short, do_ops = True, False
                break
            t0 = clock()
            try:
                bench = bench_model if isinstance(phi, str) else bench_phi
                row = bench(phi, batch, provs, plan["rounds"], plan["per_round"], device, dtype,
                            progress=progress.step)
            except Exception as exc:  # noqa: BLE001  (out of memory, a failing provider mid-round: go on)
                what = phi if isinstance(phi, str) else f"phi={phi:g}"
                failed = {"phi": phi, "batch": batch, "error": f"{type(exc).__name__}: {exc}"[:500]}
                if isinstance(phi, str):
                    from ..testing import spec_phi
                    failed.update(phi=spec_phi(phi), model=phi)
                result["failed"].append(failed)
                progress.step(f"{what} batch {batch} failed: {type(exc).__name__}", n=0)
                continue
            row["seconds"] = round(clock() - t0, 1)
            result["e2e"].append(row)
            write_results(result, args.out, plots=False, quiet=True)  # what is measured survives even a crash
            for name in row["errors"]:
                progress.step(f"{name} failed", n=plan["rounds"])
        if do_ops:
            if args.time_limit_s is not None and clock() - start > args.time_limit_s:
                result["notes"].append(f"--time-limit-s {args.time_limit_s:g} reached: op benchmarks not run")
                cut_short = True
            else:
                _run_ops(result, device, dtype, op_phis, op_batches, args.quick, progress)
        result["complete"] = not cut_short
    except KeyboardInterrupt:
        result["interrupted"] = True
        result["notes"].append("interrupted (Ctrl-C or SIGTERM): results up to the stop")
    finally:
        signal.signal(signal.SIGTERM, old_term)
        progress.close()
        result["seconds"] = round(clock() - start, 1)
        write_results(result, args.out, plots=not args.no_plots)
    if result["interrupted"]:
        return 130
    # A provider or a whole model that failed is a failed run (the tables and the JSON say which and why).
    return 1 if result["failed"] or any(r["errors"] for r in result["e2e"]) else 0


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _se_block_phis(quick: bool, op_phis, device) -> tuple:
    """B0's fused blocks with and without SE: in a full CPU run that covers B0."""
    return () if quick or 0 not in op_phis or device.type != "cpu" else (0,)


def _run_ops(result: dict, device, dtype, phis, batches, quick: bool, progress: Progress) -> None:
    """The op microbenchmarks, their rows landing in ``result["ops"]`` as they are measured."""
    from .dwconv import bench_dwconv
    from .se import bench_se

    cfg = QUICK if quick else FULL
    common = dict(batches=batches, formats=list(FORMATS), min_seconds=cfg["op_min_seconds"], progress=progress.step,
                  device=device, dtype=dtype, all_backends=not quick)
    result["ops"]["dwconv"] = {"phis": list(phis)}
    bench_dwconv(phis, repeats=cfg["op_repeats"], into=result["ops"]["dwconv"], **common)
    try:
        import torchvision  # noqa: F401  (the eager SE is torchvision's SqueezeExcitation)
    except ImportError:
        result["notes"].append("SE op benchmark skipped: torchvision is not installed (its SqueezeExcitation is "
                               "the eager baseline)")
        return
    result["ops"]["se"] = {"phis": list(phis)}
    bench_se(phis, block_phis=_se_block_phis(quick, phis, device), rounds=3 if quick else 5, repeats=cfg["op_repeats"],
             into=result["ops"]["se"], **common)


def write_results(result: dict, out: Path, plots: bool = True, quiet: bool = False) -> None:
    """results.json, results.md and (with matplotlib) latency.png / speedup.png under ``out``; prints the
    Markdown to stdout unless ``quiet``."""
    text = markdown(result)
    if not quiet:
        print(text)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=1))
    (out / "results.md").write_text(text)
    if plots and result["e2e"]:
        from .plots import plot_results
        made = plot_results(result, out)
        if made:
            print(f"plots: {', '.join(str(p) for p in made)}", file=sys.stderr)
        else:
            print("plots skipped: matplotlib is not installed (pip install matplotlib)", file=sys.stderr)


# ----------------------------------------------------------------------------------------------------- fit

def fit_main(argv: List[str]) -> int:
    from ..budget import fit_phi

    p = fit_parser()
    args = p.parse_args(argv)
    if args.latency_ms is None and args.macs is None and args.params is None:
        p.error("give a budget: --latency-ms, --macs or --params")
    try:
        device, dtype = _device_and_dtype(args)
    except CliError as exc:
        p.error(str(exc))
    show = None if args.no_progress else (lambda s: print("  " + s, file=sys.stderr, flush=True))
    try:
        res = fit_phi(latency_ms=args.latency_ms, macs=args.macs, params=args.params, device=device,
                      batch=args.batch, dtype=dtype, phi_max=args.phi_max, progress=show, alpha=args.alpha,
                      beta=args.beta, gamma=args.gamma)
    except ValueError as exc:  # no φ fits
        print(f"effnet-bench fit: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("effnet-bench fit: interrupted", file=sys.stderr)
        return 130
    print(res.line())
    if args.json:
        print(json.dumps(res.as_dict()))
    return 0


def profile_main(argv: List[str]) -> int:
    from .e2e import profile_fused, profile_table
    p = profile_parser()
    args = p.parse_args(argv)
    from .._ext import IMPORT_ERROR, has_cpp
    if not has_cpp():
        p.error(f"the fused CPU engine needs the compiled module effnet_kernels._C ({IMPORT_ERROR}); pip install .")
    meta = machine_info()
    profiles = [profile_fused(phi, args.batch) for phi in args.phis]
    text = (f"Fused model, per-step profile (median of 10 runs), batch {args.batch} — {meta.get('cpu', '')}, "
            f"{meta['threads']} threads, {meta['date']}\n\n{profile_table(profiles)}\n")
    write_op_results({"machine": meta, "profiles": profiles}, text, args.out, "fused_profile")
    return 0


def denormal_main(argv: List[str]) -> int:
    from .denormal import __doc__ as doc, bench_denormal, denormal_table

    p = OneLineParser(prog="effnet-bench denormal", description=doc.split("\n\n")[0])
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when present, else cpu)")
    p.add_argument("--batch", type=_positive_int, default=1)
    p.add_argument("--format", choices=list(FORMATS), default="channels_last")
    p.add_argument("--rounds", type=_positive_int, default=5, help="interleaved rounds (default 5)")
    p.add_argument("--per-round", type=_positive_int, default=5, help="timed runs per variant and round")
    p.add_argument("--out", type=Path, default=None, help="folder for denormal.json and denormal.md")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    try:
        device = default_device() if args.device is None else parse_device(args.device)
    except CliError as exc:
        p.error(str(exc))
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        p.error(f"--out must be a folder, got the file {args.out}")
    result = bench_denormal(device, args.batch, args.format, args.rounds, args.per_round,
                            progress=None if args.no_progress else progress_line)
    write_op_results(result, denormal_table(result), args.out, "denormal")
    return 1 if result["ftz_leaked"] else 0


def render_main(argv: List[str]) -> int:
    """Tables and plots again from a results.json (another machine's, or after a change to the tables)."""
    p = OneLineParser(prog="effnet-bench render", description=render_main.__doc__)
    p.add_argument("results", type=Path, help="a results.json written by effnet-bench")
    p.add_argument("--out", type=Path, default=None, help="folder for results.md and the plots (default: its own)")
    args = p.parse_args(argv)
    try:
        result = json.loads(args.results.read_text())
    except (OSError, ValueError) as exc:
        p.error(f"results: cannot read {args.results} as JSON ({exc})")
    from ..balance import SCHEMA_ID as SCALING_SCHEMA
    if result.get("schema") == SCALING_SCHEMA:  # an effnet-bench scaling result
        from ..balance import describe
        from .scaling import write as write_scaling
        fits = result.get("fits", {})
        result["words"] = describe({k: v for k, v in fits.items() if k != "flops"}, fits["flops"])  # today's words
        write_scaling(result, args.out or args.results.parent)
        return 0
    if result.get("schema") != SCHEMA_ID:
        p.error(f"results: {args.results} is not an effnet-bench result (schema {result.get('schema')!r}, "
                f"expected {SCHEMA_ID!r})")
    for row in result.get("e2e", []):  # the summaries again from the samples (the same rule as a run's)
        for name, summary in row["providers"].items():
            row["providers"][name] = summarize([v / 1e3 for v in summary["samples_ms"]], keep_samples=True)
    write_results(result, args.out or args.results.parent)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "fit":
        return fit_main(argv[1:])
    if argv and argv[0] == "render":
        return render_main(argv[1:])
    if argv and argv[0] == "profile":
        return profile_main(argv[1:])
    if argv and argv[0] == "denormal":
        return denormal_main(argv[1:])
    if argv and argv[0] == "scaling":
        from .scaling import main as scaling_main
        return scaling_main(argv[1:])
    if argv and argv[0] == "run":
        argv = argv[1:]
    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
