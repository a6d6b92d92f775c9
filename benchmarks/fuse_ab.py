"""Same-machine A/B of two builds of effnet_kernels on whole classifiers: fused latency (batch 1, fp32, CPU) and
fuse() time, cold (the first fuse of a process: torch.export imported on the way) and warm (the second).

    python benchmarks/fuse_ab.py --a /path/to/site-or-checkout-A --b /path/to/checkout-B [--rounds 4]

Each (model, build) runs in its own process with PYTHONPATH pointing at that build; the builds alternate
within each round (A, B, A, B, ...) so that drift of this shared machine falls on both. Prints a Markdown table:
per model the median over rounds of each build's median latency, the median of the per-round ratios B / A, and
fuse() times."""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import json, sys, time, statistics, torch, torchvision
import effnet_kernels as ek
from effnet_kernels.testing import randomize_bn_
lib, name, res, runs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
def build():
    torch.manual_seed(0)
    m = getattr(torchvision.models, name)() if lib == "tv" else ek.efficientnet(name)
    return randomize_bn_(m.eval(), calibration_size=(2, 3, res, res))
m = build()
t = time.perf_counter(); ek.fuse(m); cold = time.perf_counter() - t
t = time.perf_counter(); f = ek.fuse(m); warm = time.perf_counter() - t
x = torch.randn(1, 3, res, res)
ts = []
with torch.inference_mode():
    for _ in range(5):
        f(x)
    for _ in range(runs):
        t = time.perf_counter(); f(x); ts.append(time.perf_counter() - t)
print(json.dumps({"ms": 1e3 * statistics.median(ts), "cold_s": cold, "warm_s": warm, "file": ek.__file__, "type": type(f).__name__}))
"""

MODELS = [("tv", "efficientnet_b0", 224, 150), ("tv", "efficientnet_b4", 380, 30), ("ours", "b0", 224, 150),
          ("tv", "efficientnet_b7", 600, 6)]


def run(path: str, lib: str, name: str, res: int, runs: int) -> dict:
    env = dict(os.environ, PYTHONPATH=path)
    out = subprocess.run([sys.executable, "-c", CHILD, lib, name, str(res), str(runs)], env=env, check=True, cwd="/",
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--a", required=True, help="PYTHONPATH of build A (the baseline)")
    ap.add_argument("--b", required=True, help="PYTHONPATH of build B")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--skip-b7", action="store_true", help="leave out B7 at 600 px (slow)")
    args = ap.parse_args()
    rows = []
    for lib, name, res, runs in MODELS:
        if args.skip_b7 and name.endswith("b7"):
            continue
        a, b = [], []
        for _ in range(args.rounds):
            a.append(run(args.a, lib, name, res, runs))
            b.append(run(args.b, lib, name, res, runs))
        ratio = statistics.median(y["ms"] / x["ms"] for x, y in zip(a, b))
        med = lambda rs, k: statistics.median(r[k] for r in rs)  # noqa: E731
        rows.append(f"| {lib}:{name} | {res} | {med(a, 'ms'):.2f} | {med(b, 'ms'):.2f} | {ratio:.3f} | "
                    f"{med(a, 'cold_s'):.2f} / {med(a, 'warm_s'):.2f} | {med(b, 'cold_s'):.2f} / {med(b, 'warm_s'):.2f} |")
        print(rows[-1], flush=True)
    print("\n| model | px | A ms | B ms | B / A (median of rounds) | A fuse s cold / warm | B fuse s cold / warm |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
