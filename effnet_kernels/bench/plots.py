"""The plots of an effnet-bench run (matplotlib, optional): ``latency.png`` — median latency per φ and
provider on a log scale, the interquartile range as error bars, one panel per batch; ``speedup.png`` — each
provider's speed-up over eager PyTorch (its faster memory format) per φ, one panel per batch."""
from __future__ import annotations

from pathlib import Path
from typing import List

from .e2e import LABELS, PROVIDERS

STYLE = {"eager_nchw": ("#7f7f7f", "o", "--"), "eager_cl": ("#bcbd22", "s", "--"), "compile": ("#1f77b4", "^", "-"),
         "ort": ("#9467bd", "D", "-"), "fused": ("#d62728", "*", "-")}


def plot_results(result: dict, out: Path) -> List[Path]:
    """Write latency.png and speedup.png under ``out``; returns their paths ([] without matplotlib)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    rows = result["e2e"]
    batches = sorted({r["batch"] for r in rows})
    by_model = any("model" in r for r in rows)
    # a φ run: x is φ; a --model run: one position per model, in the order measured
    order = {r.get("model"): i for i, r in enumerate(dict((r.get("model"), r) for r in rows).values())}
    xval = (lambda r: order[r.get("model")]) if by_model else (lambda r: r["phi"])
    m = result["machine"]
    title = f"{m['device_name']} ({m['device']}), {result['settings']['dtype']}, {m['threads']} threads — {m['date'][:10]}"
    paths = []

    fig, axes = plt.subplots(1, len(batches), figsize=(6.5 * len(batches), 4.6), squeeze=False)
    for ax, batch in zip(axes[0], batches):
        rs = sorted((r for r in rows if r["batch"] == batch), key=xval)
        for prov in PROVIDERS:
            pts = [(xval(r), r["providers"][prov]) for r in rs if prov in r["providers"]]
            if not pts:
                continue
            color, marker, ls = STYLE[prov]
            x = [p for p, _ in pts]
            y = [s["median_ms"] for _, s in pts]
            err = [[s["median_ms"] - s["q1_ms"] for _, s in pts], [s["q3_ms"] - s["median_ms"] for _, s in pts]]
            ax.errorbar(x, y, yerr=err, color=color, marker=marker, linestyle="none" if by_model else ls, capsize=2,
                        label=LABELS[prov])
        phis = [xval(r) for r in rs]
        if phis and max(phis) - min(phis) < 1:  # one φ (or a narrow range): give the points room
            ax.set_xlim(min(phis) - 0.5, max(phis) + 0.5)
        ax.set_yscale("log")
        _label(ax, batch, f"latency per batch of {batch} (ms, log)", grid_axis="both")
        if by_model:
            _model_ticks(ax, rs, xval)
    paths.append(_save(fig, out / "latency.png", f"EfficientNet latency per {'model' if by_model else 'φ'} — {title}"))

    fig, axes = plt.subplots(1, len(batches), figsize=(6.5 * len(batches), 4.6), squeeze=False)
    for ax, batch in zip(axes[0], batches):
        rs = sorted((r for r in rows if r["batch"] == batch), key=xval)
        provs = [p for p in ("fused", "compile", "ort") if any(p in r["providers"] for r in rs)]
        width = 0.8 / max(len(provs), 1)
        for i, prov in enumerate(provs):
            xs, ys = [], []
            for j, r in enumerate(rs):
                eager = [r["providers"][k]["median_ms"] for k in ("eager_nchw", "eager_cl") if k in r["providers"]]
                if prov in r["providers"] and eager:
                    xs.append(j + (i - (len(provs) - 1) / 2) * width)
                    ys.append(min(eager) / r["providers"][prov]["median_ms"])
            ax.bar(xs, ys, width=width, color=STYLE[prov][0], label=LABELS[prov])
            for x, y in zip(xs, ys):
                ax.annotate(f"{y:.1f}", (x, y), ha="center", va="bottom", fontsize=6)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(rs)), [r["model"] if by_model else f"{r['phi']:g}" for r in rs],
                      rotation=60 if by_model else 0, ha="right" if by_model else "center", fontsize=7 if by_model else None)
        _label(ax, batch, "speed-up over eager (faster memory format)", grid_axis="y")
        if by_model:
            ax.set_xlabel("model")
    paths.append(_save(fig, out / "speedup.png", f"Speed-up over eager PyTorch — {title}"))
    return paths


def _model_ticks(ax, rs, xval) -> None:
    ax.set_xticks([xval(r) for r in rs], [r["model"] for r in rs], rotation=60, ha="right", fontsize=7)
    ax.set_xlabel("model")


def _label(ax, batch: int, ylabel: str, grid_axis: str) -> None:
    """What both figures' panels share: axis labels, title, grid and (when anything was drawn) the legend."""
    ax.set_xlabel("compound coefficient φ")
    ax.set_ylabel(ylabel)
    ax.set_title(f"batch {batch}")
    if grid_axis == "both":
        ax.grid(True, which="both", alpha=0.3)
    else:
        ax.grid(True, axis=grid_axis, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def _save(fig, path, suptitle: str):
    import matplotlib.pyplot as plt

    fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
