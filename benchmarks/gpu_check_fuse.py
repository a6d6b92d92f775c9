"""GPU check, fused model: fuse(model) on CUDA against eager — correctness (fp32 with TF32 off, fp16 by the
2x-eager-error rule against float64, autocast), batch-256 fp16 channels_last throughput, batch-1 latency
with CUDA graphs on both sides, and torch.compile of the eager model when the budget leaves time.

    python benchmarks/gpu_check_fuse.py --out $OUT --budget-s 35

Every step records its error instead of stopping the check (the fused GPU path had never run on a GPU
when this script was written). Writes gpu_fuse.json and gpu_fuse.md under --out.
"""
import argparse
import copy
import json
import time
import traceback
from pathlib import Path

import torch

import effnet_kernels as ek
from effnet_kernels.testing import randomize_bn_, rel_error


def cuda_ms(fn, warmup=3, repeats=10):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return sorted(times)[len(times) // 2]


def graphed(fn, x):
    """fn captured in a CUDA graph on a static copy of x: returns a replay function."""
    static = x.clone()
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


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, default=Path("."))
    p.add_argument("--budget-s", type=float, default=35.0)
    args = p.parse_args()
    start = time.time()
    left = lambda: args.budget_s - (time.time() - start)  # noqa: E731
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    res = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "steps": {}}

    def step(name, fn):
        t0 = time.time()
        try:
            res["steps"][name] = fn()
        except Exception as exc:  # noqa: BLE001  (record and go on)
            res["steps"][name] = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-1500:]}
        print(f"[{time.time() - start:5.1f}s] {name}: {json.dumps(res['steps'][name])[:300]}", flush=True)
        res["steps"][name]["seconds"] = round(time.time() - t0, 1)

    model = randomize_bn_(ek.efficientnet("b0").eval(), calibration_size=(4, 3, 224, 224)).cuda()
    x = torch.randn(2, 3, 227, 233, device="cuda")

    def correctness():
        with torch.inference_mode():
            ref = copy.deepcopy(model).double()(x.double())
            out = {"fp32_eager_err": rel_error(model(x), ref), "fp32_fused_err": rel_error(ek.fuse(model)(x), ref)}
            half = copy.deepcopy(model).half()
            xh = x.half()
            out["fp16_eager_err"] = rel_error(half(xh), ref)
            out["fp16_fused_err"] = rel_error(ek.fuse(half)(xh), ref)
            out["fp16_fused_after_err"] = rel_error(ek.fuse(model).half()(xh), ref)
            with torch.autocast("cuda", dtype=torch.float16):
                out["autocast_fused_err"] = rel_error(ek.fuse(model)(x).float(), ref)
        out["fp16_ok"] = out["fp16_fused_err"] <= 2 * out["fp16_eager_err"]
        out["fp32_ok"] = out["fp32_fused_err"] <= 1e-4
        return out

    step("correctness", correctness)
    half = copy.deepcopy(model).half().to(memory_format=torch.channels_last)
    fused_h = ek.fuse(copy.deepcopy(model).half())

    def throughput():
        xb = torch.randn(256, 3, 224, 224, device="cuda", dtype=torch.float16).contiguous(
            memory_format=torch.channels_last)
        with torch.inference_mode():
            e = cuda_ms(lambda: half(xb))
            f = cuda_ms(lambda: fused_h(xb))
        return {"batch": 256, "eager_ms": e, "fused_ms": f, "eager_img_s": 256e3 / e, "fused_img_s": 256e3 / f,
                "speedup": e / f}

    step("throughput_b256_fp16", throughput)

    def latency_graphs():
        x1 = torch.randn(1, 3, 224, 224, device="cuda", dtype=torch.float16).contiguous(
            memory_format=torch.channels_last)
        with torch.inference_mode():
            ge, gf = graphed(half, x1), graphed(fused_h, x1)
            e, f = cuda_ms(ge, repeats=30), cuda_ms(gf, repeats=30)
        return {"batch": 1, "eager_graph_ms": e, "fused_graph_ms": f, "ratio": f / e}

    step("latency_b1_cuda_graphs", latency_graphs)
    if left() > 25:
        def compiled():
            xb = torch.randn(256, 3, 224, 224, device="cuda", dtype=torch.float16).contiguous(
                memory_format=torch.channels_last)
            c = torch.compile(half)
            with torch.inference_mode():
                c(xb)
                t = cuda_ms(lambda: c(xb))
            return {"batch": 256, "compile_ms": t}

        step("compile_b256_fp16", compiled)
    else:
        res["steps"]["compile_b256_fp16"] = {"skipped": f"{left():.0f} s of budget left"}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_fuse.json").write_text(json.dumps(res, indent=1))
    lines = [f"Fused B0 on {res['device']}, torch {res['torch']}", ""]
    for k, v in res["steps"].items():
        lines.append(f"- {k}: " + ", ".join(f"{a}={b:.4g}" if isinstance(b, float) else f"{a}={b}"
                                            for a, b in v.items() if a != "trace"))
    (args.out / "gpu_fuse.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if all("error" not in v for v in res["steps"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
