"""effnet-bench scaling: what depth, width and resolution each cost on this device (fused and eager).

    effnet-bench scaling --quick                 # around B0, 5 points per path, 3 rounds: < 3 min on 2 cores
    effnet-bench scaling --base-phi 2 --out DIR  # around B2, 6 points per path, 5 rounds
    effnet-bench scaling --alpha 1.4 --beta 1.05 --gamma 1.1   # the compound path in your own direction

Writes ``scaling.json`` (schema ``effnet-bench-scaling/1``: machine, settings, every point with every sample
per round, the fits), ``scaling.md`` (the tables and the words) and ``scaling.png`` (latency against FLOPs per
path, log-log; with matplotlib) under ``--out`` (default ``./effnet-bench-scaling``). Ctrl-C (or SIGTERM)
stops the rounds and still writes what was measured. The method: :mod:`effnet_kernels.balance`.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import List, Optional

from ._util import CliError, OneLineParser, Progress, check_writable, machine_info, parse_device, record_isa, DTYPES

QUICK = {"points": 5, "rounds": 3, "per_round": 3}
FULL = {"points": 6, "rounds": 11, "per_round": 5}
PATH_STYLE = {"depth": ("#1f77b4", "o"), "width": ("#2ca02c", "s"), "resolution": ("#d62728", "^"),
              "compound": ("#9467bd", "D")}


def _coefficient(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number >= 1, got {text!r}") from None
    if not (v >= 1 and v < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 1, got {text!r}")
    return v


def add_coefficients(p: argparse.ArgumentParser, what: str) -> None:
    """--alpha/--beta/--gamma: the custom compound-scaling coefficients (shared with effnet-bench fit)."""
    for name, sym, default in (("alpha", "α", 1.2), ("beta", "β", 1.1), ("gamma", "γ", 1.15)):
        p.add_argument(f"--{name}", type=_coefficient, default=None, metavar=sym,
                       help=f"{what} (>= 1; any of the three given: the pure powers of them, the others "
                            f"{default} as the paper's)")


def parser() -> argparse.ArgumentParser:
    from .cli import _phi, _positive_int
    p = OneLineParser(prog="effnet-bench scaling", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when present, else cpu)")
    p.add_argument("--dtype", choices=list(DTYPES), default=None, help="fp32 (the only one on the CPU), fp16, bf16")
    p.add_argument("--quick", action="store_true",
                   help=f"{QUICK['points']} points per path, {QUICK['rounds']} rounds of {QUICK['per_round']} runs")
    p.add_argument("--base-phi", type=_phi, default=0, help="the φ the paths start from (default 0: B0)")
    p.add_argument("--points", type=_positive_int, default=None, help="points per path, the base included "
                   f"(default {FULL['points']}; --quick {QUICK['points']})")
    p.add_argument("--flops-max", type=float, default=2.0, help="how far each path goes, in x the base's FLOPs")
    p.add_argument("--resolution", type=_positive_int, default=None,
                   help="the base's input size instead of the φ's own (small: a fast smoke run)")
    p.add_argument("--batch", type=_positive_int, default=1)
    p.add_argument("--providers", nargs="+", choices=["fused", "eager"], default=["fused", "eager"])
    p.add_argument("--rounds", type=_positive_int, default=None, help=f"interleaved rounds (default {FULL['rounds']})")
    p.add_argument("--per-round", type=_positive_int, default=None, help="timed runs per model, provider and round")
    add_coefficients(p, "the compound path's direction and the base φ's family")
    p.add_argument("--out", type=Path, default=Path("effnet-bench-scaling"), help="results folder")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return p


def _f(v, digits=2) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def markdown(result: dict) -> str:
    """The tables and words of a scaling result (``ScalingProfile.as_dict()``)."""
    m, st = result["machine"], result["settings"]
    provs = st["providers"]
    co = st.get("coefficients")
    direction = (f"α={co['alpha']:g}, β={co['beta']:g}, γ={co['gamma']:g}" if co else "α=1.2, β=1.1, γ=1.15")
    out = [f"# What depth, width and resolution cost here — {m.get('device_name', m.get('device', ''))}", "",
           f"{m.get('date', '')}; effnet_kernels {m.get('effnet_kernels')}, torch {m.get('torch')}, "
           f"{st['threads']} threads, ISA {m.get('isa')}; {st['device']}, {st['dtype']}, batch {st['batch']}. "
           f"Base φ = {st['base_phi']:g} at {st['resolution']} px; compound path {direction}; {st['rounds']} "
           f"interleaved rounds of {st['per_round']} runs (order shuffled per round), medians."
           + ("" if result.get("complete", True) else " **Interrupted: results up to the stop.**"), ""]
    out += ["## In words", ""] + [f"- {w}" for w in result["words"]] + [""]
    fits = result["fits"]
    out += ["## Fitted exponents: latency ∝ d^a · w^b · r^c (realised multipliers, log-space least squares)", "",
            "± the larger of the least-squares standard error and the standard deviation over bootstrap resamples "
            "of the rounds", "",
            "| | depth a | width b | resolution c | rms log residual |", "|---|---|---|---|---|",
            f"| FLOPs (model_cost) | {fits['flops']['depth']:.2f} | {fits['flops']['width']:.2f} | "
            f"{fits['flops']['resolution']:.2f} | {fits['flops']['rms_log_residual']:.3f} |"]
    for prov in provs:
        f = fits.get(prov)
        if f:
            out.append(f"| {prov} latency | " + " | ".join(f"{f[d]:.2f} ± {f['spread'][d]:.2f}"
                                                          for d in ("depth", "width", "resolution"))
                       + f" | {f['rms_log_residual']:.3f} |")
    for prov in provs:
        f = fits.get(prov)
        if f and f.get("vs_flops"):
            out.append(f"| {prov} / FLOPs | " + " | ".join(f"{f['vs_flops'][d]:.2f}" for d in ("depth", "width",
                                                                                                  "resolution")) + " | |")
    out += ["", "## Latency per doubling of FLOPs along each path (latency ∝ FLOPs^s; 2.00× is FLOPs-proportional)",
            "", "| path | " + " | ".join(f"{p} s | {p} ×latency per 2× FLOPs (± 1 sd)" for p in provs) + " |",
            "|---|" + "---|---|" * len(provs)]
    for path in ("depth", "width", "resolution", "compound"):
        cells = []
        for prov in provs:
            pa = (fits.get(prov) or {}).get("paths", {}).get(path)
            cells += ([f"{pa['flops_slope']:.2f}", f"{pa['per_2x_flops']:.2f}× ({pa['per_2x_flops_range'][0]:.2f}–"
                                                    f"{pa['per_2x_flops_range'][1]:.2f})"] if pa else ["—", "—"])
        out.append(f"| {path} | " + " | ".join(cells) + " |")
    out += ["", "## The points", "",
            "| path | blocks | stem / head | res | realised d, w, r | GMACs | FLOPs × | "
            + " | ".join(f"{p} ms" for p in provs) + (" | fused vs eager |" if set(provs) >= {"fused", "eager"} else " |"),
            "|" + "---|" * (7 + len(provs) + (set(provs) >= {"fused", "eager"}))]
    for pt in result["points"]:
        r = pt["realised"]
        cells = [pt["path"], str(pt["blocks"]), f"{pt['stem']} / {pt['head']}", str(pt["resolution"]),
                 f"{r['depth']:.3f}, {r['width']:.3f}, {r['resolution']:.3f}", f"{pt['macs'] / 1e9:.3f}",
                 f"{pt['flops_ratio']:.3f}"]
        for prov in provs:
            s = pt["providers"].get(prov)
            cells.append(f"{s['median_ms']:.2f}" if s else "—")
        if set(provs) >= {"fused", "eager"}:
            f, e = pt["providers"].get("fused"), pt["providers"].get("eager")
            cells.append(f"{e['median_ms'] / f['median_ms']:.2f}×" if f and e else "—")
        out.append("| " + " | ".join(cells) + " |")
    errs = [f"{pt['name']}: {k}: {v}" for pt in result["points"] for k, v in pt.get("errors", {}).items()]
    errs += [f"{pt['name']}: fused error against float64 {pt['fused_err64']:.2e}, more than 4x eager fp32's "
             f"{pt['eager_err64']:.2e}" for pt in result["points"] if pt.get("accuracy_ok") is False]
    if errs:
        out += ["", "## Errors", ""] + [f"- {e}" for e in errs]
    return "\n".join(out) + "\n"


def plot(result: dict, out: Path) -> Optional[Path]:
    """scaling.png: latency against GMACs per path, log-log (fused solid, eager dashed), and beside it the
    same normalised to the base with the FLOPs-proportional line. None without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    pts = result["points"]
    base = pts[0]
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    for prov, ls, fill in (("fused", "-", True), ("eager", "--", False)):
        if prov not in result["settings"]["providers"] or prov not in base["providers"]:
            continue
        b = base["providers"][prov]["median_ms"]
        for path, (color, marker) in PATH_STYLE.items():
            on = sorted([p for p in pts if p["path"] in ("base", path) and prov in p["providers"]],
                        key=lambda p: p["macs"])
            if len(on) < 2:
                continue
            x = [p["macs"] / 1e9 for p in on]
            y = [p["providers"][prov]["median_ms"] for p in on]
            kw = dict(color=color, marker=marker, linestyle=ls, markerfacecolor=color if fill else "none",
                      label=f"{prov}: {path}")
            axes[0].plot(x, y, **kw)
            axes[1].plot([p["flops_ratio"] for p in on], [v / b for v in y], **kw)
    lim = [1, result["settings"]["flops_max"] * 1.05]
    axes[1].plot(lim, lim, color="#7f7f7f", linestyle=":", label="FLOPs-proportional")
    for ax, (xl, yl) in zip(axes, (("GMACs per image", "latency (ms)"),
                                   ("FLOPs / base FLOPs", "latency / base latency"))):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xl + " (log)")
        ax.set_ylabel(yl + " (log)")
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=7, ncol=2)
    m, st = result["machine"], result["settings"]
    fig.suptitle(f"Latency along depth, width, resolution and compound paths from φ={st['base_phi']:g} — "
                 f"{m.get('device_name', '')} ({st['device']}), {st['dtype']}, {st['threads']} threads, batch "
                 f"{st['batch']} — {m.get('date', '')[:10]}", fontsize=9)
    fig.tight_layout()
    path = out / "scaling.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write(result: dict, out: Path, plots: bool = True) -> List[Path]:
    """scaling.json, scaling.md and (with matplotlib) scaling.png under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "scaling.json").write_text(json.dumps(result, indent=1))
    (out / "scaling.md").write_text(markdown(result))
    made = [out / "scaling.json", out / "scaling.md"]
    if plots:
        png = plot(result, out)
        if png is None:
            print("plot skipped: matplotlib is not installed (pip install matplotlib)", file=sys.stderr)
        else:
            made.append(png)
    return made


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: Optional[List[str]] = None) -> int:
    from ..balance import scaling_points, scaling_profile
    from ..timing import default_device

    p = parser()
    args = p.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    points = args.points or cfg["points"]
    rounds = args.rounds or cfg["rounds"]
    per_round = args.per_round or cfg["per_round"]
    try:
        device = default_device() if args.device is None else parse_device(args.device)
    except CliError as exc:
        p.error(str(exc))
    dtype_name = args.dtype or ("fp16" if device.type == "cuda" else "fp32")
    if device.type == "cpu" and dtype_name != "fp32":
        p.error(f"--dtype {dtype_name}: the fused CPU model runs in fp32 only (use --dtype fp32 on the CPU)")
    try:  # the arguments scaling_points checks, checked before anything is built
        n_points = len(scaling_points(args.base_phi, points, args.flops_max, args.resolution, args.alpha, args.beta,
                                      args.gamma))
    except (ValueError, TypeError) as exc:
        p.error(str(exc))
    check_writable(p, args.out, "scaling.json")
    meta = machine_info(device)
    record_isa({"machine": meta})
    progress = Progress(n_points * (1 + rounds * len(args.providers)), enabled=not args.no_progress)
    print(f"# effnet-bench scaling on {meta['device_name']} ({device}), {dtype_name}, {meta['threads']} threads: "
          f"{n_points} models x {len(args.providers)} providers x {rounds} rounds; writing to {args.out}",
          file=sys.stderr, flush=True)
    old_term = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        prof = scaling_profile(args.base_phi, device=device, dtype=DTYPES[dtype_name], batch=args.batch,
                               points=points, flops_max=args.flops_max, rounds=rounds, per_round=per_round,
                               providers=args.providers, resolution=args.resolution, alpha=args.alpha,
                               beta=args.beta, gamma=args.gamma, progress=progress.step)
    finally:
        signal.signal(signal.SIGTERM, old_term)
        progress.close()
    prof.machine = meta
    result = prof.as_dict()
    result["settings"]["quick"] = args.quick
    result["settings"]["argv"] = list(sys.argv[2:] if argv is None else argv)
    text = markdown(result)
    print(text)
    made = write(result, args.out, plots=not args.no_plots)
    print(f"wrote {', '.join(str(m) for m in made)}", file=sys.stderr)
    if prof.interrupted:
        return 130
    return 1 if any(pt["errors"] or pt.get("accuracy_ok") is False for pt in result["points"]) else 0
