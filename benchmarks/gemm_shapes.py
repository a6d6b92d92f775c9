"""The engine's GEMM against torch.addmm on every GEMM shape of the EfficientNet-family models.

    python benchmarks/gemm_shapes.py [--threads 1 2] [--batches 1] [--isa avx512] [--out DIR]

Every convolution a model runs as a GEMM on the CPU: its 1x1 convolutions (M = batch x H x W pixels, K input
channels, N output channels; the SE's own 1x1 convs on the pooled vector are not GEMMs of the engine) and its
dense k x k convolutions (EfficientNetV2's fused-MBConv stages and the stem: M pixels, K = Cin x k x k after
im2col, N = Cout). Shapes come from a forward pass of each model at its usual input size, deduplicated; each is
timed as

  * engine: ``_C.gemm`` (packed weight, bias, the layer's activation in the epilogue), the kernel the fused
    model's chain runs per layer (inside the chain, an expand GEMM runs band by band: the whole-layer call is
    its upper bound);
  * floor: ``torch.addmm(bias, A, W^T)`` followed by the same activation in place (the same work in
    torch's best form on the CPU);
  * mm: ``torch.mm(A, W^T)`` alone (the multiply-adds and nothing else: the machine's GEMM rate on the shape),

interleaved in rounds (each round the median of repeated calls of each; then the median over rounds). The
table lists every shape with both rates; per model, the MAC-weighted ratio (the sum of the floor's times over
the sum of the engine's, each shape counted as often as the model runs it), and torch.mm's alone beside it. With ``--isa avx2`` on an AVX-512
machine hold the engine's AVX2 path against an AVX2 floor: start the process with
``MKL_ENABLE_INSTRUCTIONS=AVX2`` (torch's MKL reads it once; the result records it)."""
from __future__ import annotations

import argparse
import json
import os
import statistics
from collections import Counter, OrderedDict
from pathlib import Path

import torch

from effnet_kernels import timing
from effnet_kernels._ext import _C
from effnet_kernels.bench._util import machine_info
from effnet_kernels.testing import model_from_spec

# (model spec as effnet-bench --model takes it, input size, activation of its expand / dense layers)
MODELS = [
    ("tv:efficientnet_b0", 224, "silu"),
    ("tv:efficientnet_b1", 240, "silu"),
    ("tv:efficientnet_b2", 260, "silu"),
    ("tv:efficientnet_b3", 300, "silu"),
    ("tv:efficientnet_b4", 380, "silu"),
    ("tv:mobilenet_v2", 224, "relu6"),
    ("tv:mobilenet_v3_large", 224, "hardswish"),
    ("tv:mnasnet1_0", 224, "relu"),
    ("timm:efficientnet_lite0", 224, "relu6"),
    ("tv:efficientnet_v2_s", 224, "silu"),
]
ACTS = {"silu": torch.nn.functional.silu, "relu": torch.relu_, "relu6": lambda t: torch.clamp_(t, 0, 6),
        "hardswish": torch.nn.functional.hardswish, "identity": None}


def model_shapes(model: torch.nn.Module, size: int, batch: int, act: str) -> Counter:
    """Counter of (kind, M, K, N, act) over the model's GEMM convolutions at ``size``."""
    found: Counter = Counter()
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.groups == 1]

    def hook(m, inp, out):
        n, _, h, w = out.shape
        if h * w == 1 and m.kernel_size == (1, 1):
            return  # an SE conv on the pooled vector
        k = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
        kind = "1x1" if m.kernel_size == (1, 1) else f"{m.kernel_size[0]}x{m.kernel_size[1]}"
        # a 1x1 conv whose output is wider than its input is an expand (activation after it); otherwise a
        # projection (no activation); a dense conv has one unless it is a block's last.
        a = act if (m.out_channels > m.in_channels or kind != "1x1") else "identity"
        found[(kind, n * h * w, k, m.out_channels, a)] += 1

    handles = [c.register_forward_hook(hook) for c in convs]
    try:
        with torch.inference_mode():
            model(torch.randn(batch, 3, size, size))
    finally:
        for hd in handles:
            hd.remove()
    return found


class Shape:
    """The tensors and both callables of one GEMM shape."""

    def __init__(self, m: int, k: int, n: int, act: str, threads: int, isa: str):
        g = torch.Generator().manual_seed(m * 131 + k * 7 + n)
        self.a = torch.randn(m, k, generator=g)
        self.w = torch.randn(n, k, generator=g) / k ** 0.5
        self.bias = torch.randn(n, generator=g)
        self.c = torch.empty(m, n)
        self.c_ref = torch.empty(m, n)
        self.packed = torch.empty(_C.gemm_packed_size(n, k, isa))
        _C.gemm_pack(n, k, self.w.data_ptr(), k, 1, self.packed.data_ptr(), isa)
        self.wt = self.w.t()
        self.m, self.k, self.n, self.act, self.threads, self.isa = m, k, n, act, threads, isa
        self.torch_act = ACTS[act]

    def engine(self):
        _C.gemm(self.m, self.n, self.k, self.a.data_ptr(), self.k, self.packed.data_ptr(), self.bias.data_ptr(),
                0, 0, 0, self.n, self.c.data_ptr(), self.n, self.act, self.threads, self.isa)

    def floor(self):
        torch.addmm(self.bias, self.a, self.wt, out=self.c_ref)
        if self.torch_act is not None:
            if self.act in ("silu", "hardswish"):
                self.torch_act(self.c_ref, inplace=True)
            else:
                self.torch_act(self.c_ref)

    def mm(self):
        torch.mm(self.a, self.wt, out=self.c_ref)

    def check(self) -> float:
        """Largest difference of the engine from the floor over the floor's scale (a wrong kernel must not be
        timed)."""
        self.engine()
        self.floor()
        return float((self.c - self.c_ref).abs().max() / self.c_ref.abs().max().clamp_min(1e-30))


def time_shape(s: Shape, rounds: int, min_seconds: float):
    """(engine, floor, mm) ms: the median over rounds of each round's median (timing.interleaved)."""
    def sample(name, fn, r):
        return [timing.summarize(timing.time_fn(fn, warmup=1, repeats=5, min_seconds=min_seconds / rounds))
                ["median_ms"]]

    per_round = timing.interleaved({"engine": s.engine, "floor": s.floor, "mm": s.mm}, rounds, sample)
    return tuple(statistics.median(per_round[k]) for k in ("engine", "floor", "mm"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--batches", type=int, nargs="+", default=[1])
    p.add_argument("--isa", default="", help="engine ISA path (default: the best this CPU has)")
    p.add_argument("--models", nargs="+", default=None, help="names from the list in this file (default: all)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--min-seconds", type=float, default=0.1, help="timed seconds per callable and shape")
    p.add_argument("--out", type=Path, default=None, help="folder for gemm_shapes.json and gemm_shapes.md")
    args = p.parse_args()
    models = [m for m in MODELS if args.models is None or m[0].split(":")[1] in args.models]
    if args.models is not None and len(models) != len(set(args.models)):
        p.error(f"--models: known names are {[m[0].split(':')[1] for m in MODELS]}")
    isa = args.isa or _C.isa_info()["best"]

    per_model = OrderedDict()
    for spec, size, act in models:
        model, _ = model_from_spec(spec)
        name = spec.split(":")[1]
        for b in args.batches:
            per_model[(name, size, b)] = model_shapes(model, size, b, act)
    shapes = sorted({s for c in per_model.values() for s in c}, key=lambda s: (s[0], s[1], s[2], s[3]))

    rows, lines = [], []
    info = machine_info()
    info.update(isa=isa, mkl_enable_instructions=os.environ.get("MKL_ENABLE_INSTRUCTIONS"),
                torch_config=torch.__config__.parallel_info().splitlines()[:3])
    for t in args.threads:
        torch.set_num_threads(t)
        times = {}
        for kind, m, k, n, act in shapes:
            s = Shape(m, k, n, act, t, isa)
            err = s.check()
            if err > 1e-4:
                raise SystemExit(f"engine differs from torch.addmm on {(kind, m, k, n, act)}: {err:.2e}")
            eng, flo, mm = time_shape(s, args.rounds, args.min_seconds)
            times[(kind, m, k, n, act)] = (eng, flo, mm)
            macs = m * k * n
            row = dict(threads=t, kind=kind, m=m, k=k, n=n, act=act, engine_ms=eng, floor_ms=flo, mm_ms=mm,
                       engine_gmacs=macs / eng / 1e6, floor_gmacs=macs / flo / 1e6, mm_gmacs=macs / mm / 1e6,
                       ratio=flo / eng)
            rows.append(row)
            print(f"t={t} {kind:4s} M={m:6d} K={k:5d} N={n:5d} {act:9s} engine {row['engine_gmacs']:6.1f} "
                  f"floor {row['floor_gmacs']:6.1f} mm {row['mm_gmacs']:6.1f} GMAC/s  ratio {row['ratio']:.2f}",
                  flush=True)
        for (name, size, b), counter in per_model.items():
            for kinds, label in ((("1x1",), "1x1"), (None, "all GEMMs")):
                sel = [(s, c) for s, c in counter.items() if kinds is None or s[0] in kinds]
                if not sel:
                    continue
                e = sum(times[s][0] * c for s, c in sel)
                f = sum(times[s][1] * c for s, c in sel)
                mm = sum(times[s][2] * c for s, c in sel)
                macs = sum(s[1] * s[2] * s[3] * c for s, c in sel)
                lines.append(dict(threads=t, model=name, size=size, batch=b, convs=label, engine_ms=e, floor_ms=f,
                                  mm_ms=mm, ratio=f / e, gmacs_engine=macs / e / 1e6, gmacs_floor=macs / f / 1e6,
                                  gmacs_mm=macs / mm / 1e6))
                print(f"t={t} {name} {size}px b{b} {label}: engine {e:.2f} ms, floor {f:.2f} ms, mm {mm:.2f} ms, "
                      f"MAC-weighted ratio {f / e:.2f}", flush=True)

    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gemm_shapes.json").write_text(json.dumps(dict(machine=info, shapes=rows, models=lines),
                                                               indent=1))
        md = [f"# The engine's GEMM against torch.addmm, every GEMM shape of the models\n",
              f"Machine: {info.get('cpu')}; torch {torch.__version__}; engine ISA {isa}; "
              f"MKL_ENABLE_INSTRUCTIONS={info['mkl_enable_instructions']}; {info['date']}. "
              f"Rates in GMAC/s (multiply-adds per second); ratio = floor time / engine time (>= 1: the engine "
              f"is as fast). {args.rounds} interleaved rounds, median.\n",
              "## Per model (MAC-weighted over its GEMM convolutions)\n",
              "| threads | model | px | batch | convs | engine ms | floor ms | mm ms | engine GMAC/s | floor GMAC/s "
              "| mm GMAC/s | floor / engine | mm / engine |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for ln in lines:
            md.append(f"| {ln['threads']} | {ln['model']} | {ln['size']} | {ln['batch']} | {ln['convs']} | "
                      f"{ln['engine_ms']:.2f} | {ln['floor_ms']:.2f} | {ln['mm_ms']:.2f} | {ln['gmacs_engine']:.0f} | "
                      f"{ln['gmacs_floor']:.0f} | {ln['gmacs_mm']:.0f} | {ln['ratio']:.2f} | "
                      f"{ln['mm_ms'] / ln['engine_ms']:.2f} |")
        md += ["\n## Every shape\n", "| threads | conv | M | K | N | act | engine GMAC/s | floor GMAC/s | mm GMAC/s "
               "| floor / engine |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            md.append(f"| {r['threads']} | {r['kind']} | {r['m']} | {r['k']} | {r['n']} | {r['act']} | "
                      f"{r['engine_gmacs']:.0f} | {r['floor_gmacs']:.0f} | {r['mm_gmacs']:.0f} | {r['ratio']:.2f} |")
        (args.out / "gemm_shapes.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
