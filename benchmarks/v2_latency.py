"""EfficientNetV2 on the CPU: fused (fused-MBConv blocks as the engine's dense block type, the rest as MBConv
blocks, one chain) against eager PyTorch, batch 1, fp32, timm's models at their test resolution.

    python benchmarks/v2_latency.py [--rounds 5] [--models efficientnetv2_rw_t tf_efficientnetv2_s]

BatchNorm calibrated; fused and eager timed interleaved in one process (each round: 10 calls of each, their
median; then the median over rounds and of the per-round ratios). Also the fused-MBConv stages alone: the
blocks timm builds as EdgeResidual, eager against one chain of their fused units."""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

import effnet_kernels as ek
from effnet_kernels import swapped
from effnet_kernels.testing import randomize_bn_


def _median_ms(fn, calls: int = 10) -> float:
    ts = []
    for _ in range(calls):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return 1e3 * statistics.median(ts)


def _interleaved(a, b, rounds: int):
    ra, rb = [], []
    for _ in range(rounds):
        ra.append(_median_ms(a))
        rb.append(_median_ms(b))
    return statistics.median(ra), statistics.median(rb), statistics.median(y / x for x, y in zip(ra, rb))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--models", nargs="+", default=["efficientnetv2_rw_t", "tf_efficientnetv2_s"])
    args = ap.parse_args()
    import timm

    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, timm {timm.__version__}, "
          f"{torch.get_num_threads()} threads, batch 1, fp32\n")
    print("| model | input | eager ms | fused ms | fused / eager | fused-MBConv stages: eager ms | fused ms | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.models:
        model = timm.create_model(name).eval()
        res = model.pretrained_cfg.get("test_input_size", model.pretrained_cfg["input_size"])[-1]
        model = randomize_bn_(model, calibration_size=(2, 3, res, res))
        x = torch.randn(1, 3, res, res)
        fused = ek.fuse(model, example_inputs=x)
        assert not ek.fuse_report(fused).left, ek.fuse_report(fused)
        # the stages timm builds as EdgeResidual (fused-MBConv), and their input
        stages = [i for i, s in enumerate(model.blocks) if type(s[0]).__name__ == "EdgeResidual"]
        with torch.inference_mode():
            h = model.bn1(model.conv_stem(x))
            for s in model.blocks[:stages[0]]:
                h = s(h)
            eager_edge = torch.nn.Sequential(*[model.blocks[i] for i in stages])
            units = [u for i in stages for u in fused.blocks[i]]
            engine = swapped._Engine()
            assert all(isinstance(u, swapped.FusedMBConv) and u.dense for u in units)
            ea, fa, ra = _interleaved(lambda: model(x), lambda: fused(x), args.rounds)
            eb, fb, rb = _interleaved(lambda: eager_edge(h), lambda: swapped.run_chain(engine, units, h), args.rounds)
        print(f"| timm {name} | {res}x{res} | {ea:.1f} | {fa:.1f} | {ra:.2f} | {eb:.1f} | {fb:.1f} | {rb:.2f} |")


if __name__ == "__main__":
    main()
