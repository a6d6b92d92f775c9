"""What one engine call per swapped block costs against one chain: transformers' EfficientNet encoder (a Python
loop over its blocks, which no adapter knows) fused, and the same fused blocks run as one chain.

    python benchmarks/chain_vs_calls.py [--rounds 5]

Batch 1, fp32, B0-sized config, BatchNorm calibrated; the two are timed interleaved in one process (median of
each round's 20 calls, then the median over rounds)."""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import effnet_kernels as ek
from effnet_kernels import swapped
from effnet_kernels.testing import randomize_bn_


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    import transformers as tf

    cfg = tf.EfficientNetConfig(width_coefficient=1.0, depth_coefficient=1.0, image_size=224, hidden_dim=1280)
    model = randomize_bn_(tf.EfficientNetForImageClassification(cfg).eval(), calibration_size=(2, 3, 224, 224))
    fused = ek.fuse(model)
    blocks = list(fused.efficientnet.encoder.blocks)
    assert all(isinstance(b, swapped.FusedMBConv) for b in blocks)
    x = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        h = fused.efficientnet.embeddings(x)
    engine = swapped._Engine()

    def per_block():
        y = h
        for b in blocks:
            y = b(y)
        return y

    def chain():
        return swapped.run_chain(engine, blocks, h)

    with torch.inference_mode():
        assert torch.allclose(per_block(), chain(), rtol=1e-4, atol=1e-4)
        a, b = [], []
        for _ in range(args.rounds):
            for fn, out in ((per_block, a), (chain, b)):
                ts = []
                for _ in range(20):
                    t = time.perf_counter()
                    fn()
                    ts.append(time.perf_counter() - t)
                out.append(statistics.median(ts))
    pa, pb = 1e3 * statistics.median(a), 1e3 * statistics.median(b)
    print(f"16 blocks, one engine call each: {pa:.2f} ms; one chain: {pb:.2f} ms; ratio {pa / pb:.2f} "
          f"({torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
