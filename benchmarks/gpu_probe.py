"""Where the fused op's GPU time goes: launch overhead or the kernel itself.

    python benchmarks/gpu_probe.py --out DIR

The first GPU check (2026-11-28, H100) timed the public op at 0.1-0.4 ms on layers where eager took
0.03-0.15 ms, nearly independent of the layer's size: the signature of host-side overhead. Per layer this
times, with L2 flushed between runs: the public op as called (do_bench), the same call replayed from a
CUDA graph (no host overhead), eager channels_last from a graph, and the bare kernel at several tile
configurations from a graph (GPU time only), against the bytes / copy-bandwidth floor.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import triton
import triton.testing
import torch.nn.functional as F

from effnet_kernels import ops, reference
from effnet_kernels.scaling import depthwise_shapes
from effnet_kernels import triton as tk
from effnet_kernels.triton.dwconv import _CL_CONFIGS, dwconv_bias_swish_kernel

# Every channels_last config of the autotuner, launched as a fixed tile through the launcher.
TILES = [dict(BLOCK_W=c.kwargs["BLOCK_W"], BLOCK_C=c.kwargs["BLOCK_C"], TH=c.kwargs["TH"], num_warps=c.num_warps)
         for c in _CL_CONFIGS]


def graph_ms(fn) -> float:
    fn()
    torch.cuda.synchronize()
    return triton.testing.do_bench_cudagraph(fn, rep=30, return_mode="median")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.backends.cudnn.allow_tf32 = False
    n = 1 << 28
    src = torch.randn(n, device="cuda")
    dst = torch.empty_like(src)
    bw = 2 * n * 4 / (triton.testing.do_bench(lambda: dst.copy_(src), return_mode="median") * 1e-3) / 1e9
    del src, dst
    layers = [(0, torch.float32, 32, s) for s in depthwise_shapes(0, distinct=True)[::2]]
    layers += [(7, torch.float16, 128, s) for s in depthwise_shapes(7, distinct=True)[:4]]
    rows = []
    t0 = time.time()
    for phi, dtype, batch, shape in layers:
        if time.time() - t0 > 100:
            break
        c, h, w, k, s = shape
        x = torch.randn(batch, c, h, w, device="cuda", dtype=dtype).contiguous(memory_format=torch.channels_last)
        wt = (torch.randn(c, 1, k, k, device="cuda") / k).to(dtype)
        b = torch.randn(c, device="cuda").to(dtype)
        y = ops.dwconv_bias_swish(x, wt, b, s)
        ref = reference.dwconv_bias_swish(x.float(), wt.float(), b.float(), s)
        err = ((y.float() - ref).norm() / ref.norm()).item()
        del ref
        floor = (x.numel() + y.numel()) * x.element_size() / (bw * 1e9) * 1e3
        row = dict(phi=phi, dtype=str(dtype), batch=batch, shape=list(shape), floor_ms=floor, rel_err=err)
        row["public_ms"] = triton.testing.do_bench(lambda: ops.dwconv_bias_swish(x, wt, b, s), return_mode="median")
        row["public_graph_ms"] = graph_ms(lambda: ops.dwconv_bias_swish(x, wt, b, s))
        mean, var = torch.zeros(c, device="cuda", dtype=dtype), torch.ones(c, device="cuda", dtype=dtype)
        row["eager_cl_graph_ms"] = graph_ms(lambda: F.silu(F.batch_norm(
            F.conv2d(x, wt, None, s, k // 2, 1, c), mean, var, var, mean, False, 0.0, 1e-5)))
        # Host overhead: 200 back-to-back calls without synchronising, per call.
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(200):
            ops.dwconv_bias_swish(x, wt, b, s)
        row["host_us_per_call"] = (time.perf_counter() - t) / 200 * 1e6
        torch.cuda.synchronize()
        best = dwconv_bias_swish_kernel.best_config
        row["tuned"] = str(best.kwargs) + f" warps={best.num_warps}"
        for tile in TILES:
            row["kernel_{BLOCK_W}x{BLOCK_C}x{TH}w{num_warps}_ms".format(**tile)] = graph_ms(
                lambda: tk.dwconv_bias_swish(x, wt, b, s, validate=False, tile=tile))
        rows.append(row)
        kern = min(v for key, v in row.items() if key.startswith("kernel_"))
        print(f"B{phi} {row['dtype']} b{batch} {tuple(shape)}: floor {floor:.4f} | public {row['public_ms']:.4f} "
              f"graph {row['public_graph_ms']:.4f} | best bare kernel {kern:.4f} ({100 * floor / kern:.0f}% bw) | "
              f"eager cl graph {row['eager_cl_graph_ms']:.4f} | host {row['host_us_per_call']:.0f} us/call | "
              f"tuned {row['tuned']}", flush=True)
    (args.out / "gpu_probe.json").write_text(json.dumps({"copy_gbs": bw, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
