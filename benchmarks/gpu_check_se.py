"""GPU check, part 3: squeeze-excitation and the SE folded into the projection, on a GPU.

    python benchmarks/gpu_check_se.py --out DIR [--budget-s 35] [--smoke]

Run by benchmarks/gpu_check.sh after the depthwise benchmark. Per distinct SE shape of B0, B4 and B7 at
batch 32 in fp16, channels_last, medians of CUDA-event timings (triton.testing.do_bench, L2 flushed):

* stand-alone: the fused op (:func:`effnet_kernels.ops.squeeze_excite`: pool, gate, scale) against eager
  torchvision ``SqueezeExcitation`` (cuDNN, TF32 off); target ≥ 3× eager;
* folded: :func:`effnet_kernels.ops.se_project` (the gate kernel + the projection GEMM that scales its A
  tiles, bias and residual in the epilogue) against the projection alone (eager 1×1 conv + bias +
  residual, cuDNN) and against eager SE → conv → + residual; target: ≤ 5 % over the projection alone.

Stops measuring past the time budget (rows marked skipped). ``--smoke`` runs the same code on tiny shapes
on the CPU through Triton's interpreter.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_check import bench, elapsed  # noqa: E402  (same timing helper and clock as part 2)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--budget-s", type=float, default=35.0)
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args()
    if args.smoke:
        os.environ.setdefault("TRITON_INTERPRET", "1")
    elif not torch.cuda.is_available():
        print("gpu_check_se.py: no CUDA device (use --smoke on a CPU)", file=sys.stderr)
        return 2
    device, dtype, batch = ("cpu", torch.float32, 2) if args.smoke else ("cuda", torch.float16, 32)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    from torchvision.ops import SqueezeExcitation

    from effnet_kernels import ops
    from effnet_kernels.scaling import se_layer_shapes
    from effnet_kernels.testing import rel_error

    start = time.time()
    shapes = se_layer_shapes((0, 4, 7))
    if args.smoke:
        shapes = [s._replace(height=min(s.height, 5), width=min(s.width, 5), channels=min(s.channels, 32),
                             squeeze=min(s.squeeze, 8), out_channels=min(s.out_channels, 16)) for s in shapes[:3]]
    rows = []
    g = torch.Generator().manual_seed(0)
    for shape in shapes:
        c, s, h, w, cout = shape
        row = dict(shape=list(shape), batch=batch, dtype=str(dtype).replace("torch.", ""))
        rows.append(row)
        if time.time() - start > args.budget_s:
            row["skipped"] = "time budget"
            continue
        cl = torch.channels_last
        x = (torch.randn(batch, c, h, w, generator=g) + 0.3).to(device, dtype).contiguous(memory_format=cl)
        se = SqueezeExcitation(c, s, activation=nn.SiLU).eval().to(device, dtype)
        sew = tuple(t.detach() for t in (se.fc1.weight, se.fc1.bias, se.fc2.weight, se.fc2.bias))
        pw = (torch.randn(cout, c, 1, 1, generator=g) / c ** 0.5).to(device, dtype)
        pb = torch.randn(cout, generator=g).to(device, dtype)
        res = torch.randn(batch, cout, h, w, generator=g).to(device, dtype).contiguous(memory_format=cl)
        pooled = x.float().mean((2, 3))
        with torch.inference_mode():
            ref = se(x)
            row["se_rel_err"] = rel_error(ops.squeeze_excite(x, *sew), ref)
            row["se_eager_ms"] = bench(lambda: se(x), args.smoke)
            row["se_fused_ms"] = bench(lambda: ops.squeeze_excite(x, *sew), args.smoke)
            row["proj_alone_ms"] = bench(lambda: F.conv2d(x, pw, pb) + res, args.smoke)
            row["proj_eager_se_ms"] = bench(lambda: F.conv2d(se(x), pw, pb) + res, args.smoke)
            row["se_project_ms"] = bench(lambda: ops.se_project(x, pooled, *sew, pw, pb, res), args.smoke)
            row["proj_rel_err"] = rel_error(ops.se_project(x, pooled, *sew, pw, pb, res),
                                            F.conv2d(se(x), pw, pb) + res)
        print(f"[gpu_check_se] {tuple(shape)}: SE eager {row['se_eager_ms']:.4f} fused {row['se_fused_ms']:.4f} | "
              f"projection alone {row['proj_alone_ms']:.4f} eager SE+proj {row['proj_eager_se_ms']:.4f} "
              f"se_project {row['se_project_ms']:.4f} ms", flush=True)
    done = [r for r in rows if "se_fused_ms" in r]
    lines = [f"SE on {torch.cuda.get_device_name() if not args.smoke else 'cpu (smoke)'}, {row['dtype']}, batch "
             f"{batch}, channels_last, medians (ms). {len(done)}/{len(rows)} shapes measured.", "",
             "| C | S | H×W | Cout | SE eager | SE fused | ×eager | proj alone | eager SE+proj | se_project | "
             "se_project / proj alone | rel err SE | rel err proj |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        c, s, h, w, cout = r["shape"]
        if "se_fused_ms" not in r:
            lines.append(f"| {c} | {s} | {h}×{w} | {cout} | {r.get('skipped', 'failed')} | | | | | | | | |")
            continue
        lines.append(f"| {c} | {s} | {h}×{w} | {cout} | {r['se_eager_ms']:.4f} | {r['se_fused_ms']:.4f} | "
                     f"{r['se_eager_ms'] / r['se_fused_ms']:.2f} | {r['proj_alone_ms']:.4f} | {r['proj_eager_se_ms']:.4f} | "
                     f"{r['se_project_ms']:.4f} | {r['se_project_ms'] / r['proj_alone_ms']:.2f} | "
                     f"{r['se_rel_err']:.1e} | {r['proj_rel_err']:.1e} |")
    if done:
        tot = {k: sum(r[k] for r in done) for k in ("se_eager_ms", "se_fused_ms", "proj_alone_ms", "se_project_ms")}
        lines += ["", f"Summed over the measured shapes: stand-alone SE {tot['se_eager_ms'] / tot['se_fused_ms']:.2f}× "
                      f"eager; se_project {tot['se_project_ms'] / tot['proj_alone_ms']:.2f}× the projection alone."]
    text = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_se.md").write_text(text)
    (args.out / "gpu_se.json").write_text(json.dumps({"rows": rows, "elapsed_s": elapsed()}, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
