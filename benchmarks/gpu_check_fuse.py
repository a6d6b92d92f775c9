"""GPU check, fused model: fuse(model) on CUDA against float64 — fp32 with TF32 off, fp16 by the
2x-eager-error rule, autocast. (Its speed: effnet-bench --device cuda, the next step of gpu_check.sh.)

    python benchmarks/gpu_check_fuse.py --out $OUT [--smoke]

Every step records its error instead of stopping the check (the fused GPU path had never run on a GPU
when this script was written). Writes gpu_fuse.json and gpu_fuse.md under --out. ``--smoke``: the same
code on the CPU on a small input (gpu_check.sh --dry-run: the script still runs where there is no GPU).
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


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, default=Path("."))
    p.add_argument("--smoke", action="store_true", help="the same code on the CPU, small input (no GPU needed)")
    args = p.parse_args()
    start = time.time()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = "cpu" if args.smoke else "cuda"
    res = {"device": "cpu (smoke)" if args.smoke else torch.cuda.get_device_name(), "torch": torch.__version__,
           "steps": {}}

    def step(name, fn):
        t0 = time.time()
        try:
            res["steps"][name] = fn()
        except Exception as exc:  # noqa: BLE001  (record and go on)
            res["steps"][name] = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-1500:]}
        print(f"[{time.time() - start:5.1f}s] {name}: {json.dumps(res['steps'][name])[:300]}", flush=True)
        res["steps"][name]["seconds"] = round(time.time() - t0, 1)

    size = (2, 3, 37, 41) if args.smoke else (2, 3, 227, 233)
    calibration = (4, 3, 37, 41) if args.smoke else (4, 3, 224, 224)  # (the GPU runs' statistics, as before)
    torch.manual_seed(0)  # (one random model: its fp32 error is reproducible)
    model = randomize_bn_(ek.efficientnet("b0").eval(), calibration_size=calibration).to(dev)
    x = torch.randn(*size, device=dev)

    def correctness():
        with torch.inference_mode():
            ref = copy.deepcopy(model).double()(x.double())
            out = {"fp32_eager_err": rel_error(model(x), ref), "fp32_fused_err": rel_error(ek.fuse(model)(x), ref)}
            # the tests' rule: within 4x the source's own fp32 error, with a floor (that error can be ~0)
            out["fp32_ok"] = out["fp32_fused_err"] <= max(4 * out["fp32_eager_err"], 1e-5)
            if args.smoke:  # (a fused model on the CPU is fp32 only: it refuses fp16)
                return out
            half = copy.deepcopy(model).half()
            xh = x.half()
            out["fp16_eager_err"] = rel_error(half(xh), ref)
            out["fp16_fused_err"] = rel_error(ek.fuse(half)(xh), ref)
            out["fp16_fused_after_err"] = rel_error(ek.fuse(model).half()(xh), ref)
            with torch.autocast("cuda", dtype=torch.float16):
                out["autocast_fused_err"] = rel_error(ek.fuse(model)(x).float(), ref)
        out["fp16_ok"] = out["fp16_fused_err"] <= 2 * out["fp16_eager_err"]
        return out

    step("correctness", correctness)
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
