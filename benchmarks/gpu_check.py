"""GPU check, part 2: the fused depthwise op against eager and torch.compile on a GPU.

    python benchmarks/gpu_check.py --out DIR [--budget-s 170] [--smoke]

Run by benchmarks/gpu_check.sh after the install and the CUDA tests. On the distinct depthwise layer
shapes of B0 (fp32), B4 and B7 (fp16), at batch 32 and 128, per layer: the fused op (channels_last input,
the registered op's CUDA kernel = the Triton launcher), eager Conv2d(groups=C) + BatchNorm2d + SiLU in
channels_last and in NCHW (cuDNN, TF32 off), and torch.compile of the same function (channels_last).
Timing: CUDA events through triton.testing.do_bench (L2 flushed before every run), median after
warm-up. The floor: bytes the op must move (input read once, output written once) over the measured
device-to-device copy bandwidth (a 1 GiB copy, bytes read + written).

A time budget keeps the whole check under a few minutes: measurements past it are reported as
skipped, never silently dropped. ``--smoke`` runs the same code on tiny shapes on the CPU (Triton's
interpreter, host timers, no torch.compile) so CI-less edits can be checked without a GPU.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

T0 = time.time()


def elapsed() -> float:
    return time.time() - T0


def bench(fn, smoke: bool) -> float:
    """Median milliseconds of fn()."""
    if smoke:
        fn()
        samples = []
        for _ in range(1):  # (the interpreter: ~0.1-1 s a call; smoke checks that the code runs)
            t = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - t) * 1e3)
        return statistics.median(samples)
    import triton.testing
    return triton.testing.do_bench(fn, warmup=10, rep=40, return_mode="median")


def copy_bandwidth(device, smoke: bool) -> float:
    """Device-to-device copy of a 1 GiB fp32 tensor: GB/s counting bytes read + written."""
    n = (1 << 20) if smoke else (1 << 28)
    src = torch.randn(n, device=device)
    dst = torch.empty_like(src)
    ms = bench(lambda: dst.copy_(src), smoke)
    return 2 * n * 4 / (ms * 1e-3) / 1e9


def layer_shapes(phi: int, smoke: bool):
    from effnet_kernels.scaling import depthwise_shapes
    shapes = depthwise_shapes(phi, distinct=True)
    if smoke:
        shapes = [s._replace(channels=min(s.channels, 16), height=min(s.height, 5), width=min(s.width, 5))
                  for s in shapes[:2]]
    return shapes


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--budget-s", type=float, default=170.0, help="stop measuring after this many seconds")
    p.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU through Triton's interpreter")
    args = p.parse_args()
    smoke = args.smoke
    if smoke:
        os.environ.setdefault("TRITON_INTERPRET", "1")
    elif not torch.cuda.is_available():
        print("gpu_check.py: no CUDA device (use --smoke on a CPU)", file=sys.stderr)
        return 2
    device = "cpu" if smoke else "cuda"
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False

    import effnet_kernels
    from effnet_kernels import ops, reference

    args.out.mkdir(parents=True, exist_ok=True)
    info = {"device": torch.cuda.get_device_name() if not smoke else f"cpu (smoke) {platform.processor()}",
            "torch": torch.__version__, "effnet_kernels": effnet_kernels.__version__,
            "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    try:
        import triton
        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    bw = copy_bandwidth(device, smoke)
    info["copy_gbs"] = bw
    print(f"[gpu_check] {info}", flush=True)

    # One compiled function per (k, stride): dynamic shapes, so a new layer shape should not recompile.
    compiled = {}

    def eager_fn(x, w, scale, shift, s, pad):
        z = F.conv2d(x, w, None, s, pad, 1, x.shape[1])
        return F.silu(z * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1))

    rows = []
    # Most informative first, in case the time budget cuts the tail: batch 32 of each model, then the
    # batch-128 layers (most of those past 256 MB, where the bandwidth target applies).
    plan = [(0, torch.float32, 32), (4, torch.float16, 32), (7, torch.float16, 128), (4, torch.float16, 128),
            (7, torch.float16, 32), (0, torch.float32, 128)]
    if smoke:
        plan = [(phi, dtype, 1) for phi, dtype, _ in plan[:2]]
    for phi, dtype, batch in plan:
        for layer_index, shape in enumerate(layer_shapes(phi, smoke)):
            c, h, w, k, s = shape
            row = dict(phi=phi, dtype=str(dtype).replace("torch.", ""), batch=batch, shape=list(shape))
            rows.append(row)
            if elapsed() > args.budget_s:
                row["skipped"] = "time budget"
                continue
            g = torch.Generator(device="cpu").manual_seed(0)
            x = torch.randn(batch, c, h, w, generator=g).to(device=device, dtype=dtype)
            x_cl = x.contiguous(memory_format=torch.channels_last)
            conv_w = (torch.randn(c, 1, k, k, generator=g) / k).to(device)
            gamma, beta = torch.rand(c, generator=g) + 0.5, torch.randn(c, generator=g) * 0.1
            mean, var = torch.randn(c, generator=g) * 0.1, torch.rand(c, generator=g) + 0.5
            scale = (gamma / torch.sqrt(var + 1e-5)).to(device)
            shift = (beta - mean * gamma / torch.sqrt(var + 1e-5)).to(device)
            wf, bf = reference.fold_bn(conv_w.double(), gamma.double().to(device), beta.double().to(device),
                                       mean.double().to(device), var.double().to(device), 1e-5)
            wf, bf = wf.to(dtype), bf.to(dtype)
            conv_w, scale, shift = conv_w.to(dtype), scale.to(dtype), shift.to(dtype)
            bn = [t.to(device, dtype) for t in (mean, var, gamma, beta)]
            pad = k // 2

            def eager_bn(xx):
                z = F.conv2d(xx, conv_w, None, s, pad, 1, c)
                return F.silu(F.batch_norm(z, bn[0], bn[1], bn[2], bn[3], False, 0.0, 1e-5))

            # The registered op (its CUDA kernel is the Triton launcher); the interpreter when smoke-testing.
            backend = "triton" if smoke else None
            fused = lambda: ops.dwconv_bias_swish(x_cl, wf, bf, s, backend=backend)  # noqa: E731
            y = fused()
            # Accuracy beside the timing: the same math in fp32 (TF32 off) on the same inputs.
            ref = reference.dwconv_bias_swish(x_cl.float(), wf.float(), bf.float(), s)
            row["rel_err_vs_eager_fp32"] = ((y.float() - ref).norm() / ref.norm()).item()
            del ref
            bytes_moved = (x.numel() + y.numel()) * x.element_size()
            row["bytes"] = bytes_moved
            row["floor_ms"] = bytes_moved / (bw * 1e9) * 1e3
            row["fused_ms"] = bench(fused, smoke)
            row["eager_cl_ms"] = bench(lambda: eager_bn(x_cl), smoke)
            row["eager_nchw_ms"] = bench(lambda: eager_bn(x), smoke)
            # torch.compile recompiles for every channel count (conv2d's groups is a specialised int):
            # measured on every third layer of each model, so the check fits its call.
            if not smoke and elapsed() < args.budget_s and layer_index % 3 == 0:
                key = (k, s)
                if key not in compiled:
                    compiled[key] = torch.compile(eager_fn, dynamic=True)
                try:
                    fn = compiled[key]
                    fn(x_cl, conv_w, scale, shift, s, pad)
                    row["compile_ms"] = bench(lambda: fn(x_cl, conv_w, scale, shift, s, pad), smoke)
                except Exception as exc:  # reported in the table, not hidden
                    row["compile_error"] = f"{type(exc).__name__}: {exc}"[:200]
            row["pct_copy_bw"] = 100 * row["floor_ms"] / row["fused_ms"]
            print(f"[gpu_check] B{phi} {row['dtype']} b{batch} {tuple(shape)}: fused {row['fused_ms']:.4f} ms "
                  f"({row['pct_copy_bw']:.0f}% of copy bw), eager cl {row['eager_cl_ms']:.4f}, nchw "
                  f"{row['eager_nchw_ms']:.4f}, compile {row.get('compile_ms', float('nan')):.4f}", flush=True)

    result = {"info": info, "rows": rows, "elapsed_s": elapsed()}
    (args.out / "gpu_dwconv.json").write_text(json.dumps(result, indent=1))
    md = markdown(result)
    (args.out / "gpu_dwconv.md").write_text(md)
    print(summary(result))
    return 0


def markdown(result) -> str:
    i = result["info"]
    lines = [f"Fused depthwise conv + BN + Swish on {i['device']}, torch {i['torch']}, triton {i['triton']}, "
             f"{i['date']}. Copy bandwidth {i['copy_gbs']:.0f} GB/s (read + write). Times: ms, median (CUDA "
             "events, L2 flushed). Speed-ups = other / fused.", "",
             "| model | dtype | batch | C | H×W | k | s | MB moved | fused | floor | % copy bw | eager cl | "
             "eager nchw | compile | ×eager cl | ×eager nchw | ×compile | rel err |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        c, h, w, k, s = r["shape"]
        if "fused_ms" not in r:
            lines.append(f"| B{r['phi']} | {r['dtype']} | {r['batch']} | {c} | {h}×{w} | {k} | {s} | "
                         f"skipped ({r.get('skipped', '?')}) |" + " |" * 10)
            continue
        comp = r.get("compile_ms")
        comp_ms = "-" if comp is None else f"{comp:.4f}"
        comp_x = "-" if comp is None else f"{comp / r['fused_ms']:.2f}"
        lines.append(
            f"| B{r['phi']} | {r['dtype']} | {r['batch']} | {c} | {h}×{w} | {k} | {s} | {r['bytes'] / 1e6:.1f} | "
            f"{r['fused_ms']:.4f} | {r['floor_ms']:.4f} | {r['pct_copy_bw']:.0f} | {r['eager_cl_ms']:.4f} | "
            f"{r['eager_nchw_ms']:.4f} | {comp_ms} | "
            f"{r['eager_cl_ms'] / r['fused_ms']:.2f} | {r['eager_nchw_ms'] / r['fused_ms']:.2f} | "
            f"{comp_x} | {r['rel_err_vs_eager_fp32']:.1e} |")
    return "\n".join(lines) + "\n"


def summary(result) -> str:
    done = [r for r in result["rows"] if "fused_ms" in r]
    big = [r for r in done if r["bytes"] >= 256e6]
    lines = ["", f"== gpu_check summary: {result['info']['device']}, copy {result['info']['copy_gbs']:.0f} GB/s, "
             f"{len(done)}/{len(result['rows'])} layers measured in {result['elapsed_s']:.0f} s"]
    if done:
        def rng(key):
            v = sorted(r[key] for r in done)
            return f"min {v[0]:.2f} median {v[len(v) // 2]:.2f} max {v[-1]:.2f}"
        for r in done:
            r["x_cl"] = r["eager_cl_ms"] / r["fused_ms"]
            r["x_nchw"] = r["eager_nchw_ms"] / r["fused_ms"]
        lines.append(f"fused vs eager channels_last: {rng('x_cl')}")
        lines.append(f"fused vs eager NCHW:          {rng('x_nchw')}")
        comp = [r["compile_ms"] / r["fused_ms"] for r in done if "compile_ms" in r]
        if comp:
            comp.sort()
            lines.append(f"fused vs torch.compile:       min {comp[0]:.2f} median {comp[len(comp) // 2]:.2f} "
                         f"({len(comp)} layers)")
        if big:
            pct = sorted(r["pct_copy_bw"] for r in big)
            lines.append(f"layers >= 256 MB: % of copy bandwidth min {pct[0]:.0f} median {pct[len(pct) // 2]:.0f} "
                         f"({len(big)} layers)")
        errs = max(r["rel_err_vs_eager_fp32"] for r in done)
        lines.append(f"max rel err vs eager fp32: {errs:.1e}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
