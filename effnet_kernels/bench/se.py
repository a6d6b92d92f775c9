"""Squeeze-excitation benchmarks: the stand-alone fused SE at every SE shape of B0–B7, and B0's fused MBConv
blocks with and without their SE.

    python -m effnet_kernels.bench.se [--phis 0 4] [--batches 1 8] [--formats nchw channels_last] [--out DIR]

In one run, under ``torch.inference_mode()`` at the default thread count, medians of repeated runs after
warm-up:

* per SE shape: eager torchvision ``SqueezeExcitation(activation=SiLU)``, the fused op
  (:func:`effnet_kernels.ops.squeeze_excite`) and the copy floor — ``dst.copy_(src)`` over 3× the input's
  bytes, what any stand-alone SE moves (read x for the pool, read x and write y for the scale);
* per block of B0 (channels_last, the fused model's layout): the fused block — expand 1×1 (GEMM + bias,
  Swish), :func:`~effnet_kernels.ops.dwconv_bias_swish_pool`, the SE gate folded into the projection with
  the residual (``effnet_kernels.cpu.SeProjection``: :func:`~effnet_kernels.ops.se_project` with its weights packed once,
  as a fused model holds them) — against the same fused block with the SE removed (depthwise without the
  pool, the projection GEMM + bias + residual alone). Their ratio is what the SE costs inside a block.
"""
from __future__ import annotations

import sys
from typing import List, Optional

import torch
import torch.nn as nn

from .. import ops, timing
from ..cpu import Conv1x1, SeProjection
from ._util import (FORMATS, check_batches, machine_info, op_bench_args, progress_line, record_isa, summed_over,
                    write_op_results)
from ..timing import exact_fp32, summarize, time_fn
from .dwconv import gbps
from ..scaling import SEShape, _out, arch_spec, se_layer_shapes, se_shapes


def _se_weights(c: int, s: int, g: torch.Generator):
    return (torch.randn(s, c, 1, 1, generator=g) * (2 / c ** 0.5), torch.randn(s, generator=g),
            torch.randn(c, s, 1, 1, generator=g) * (2 / s ** 0.5), torch.randn(c, generator=g))


class SeSetup:
    """One SE shape's tensors and callables: torchvision's module, the fused op, the copy floor."""

    # Built outside inference mode even when the caller times inside it, as a user's model is: weights made
    # in inference mode are inference tensors, which keep no version counter, so the ops cannot cache
    # their packed form and would repack them on every call.
    @torch.inference_mode(False)
    def __init__(self, shape: SEShape, batch: int, fmt: str, seed: int = 0, device="cpu",
                 dtype: torch.dtype = torch.float32):
        from torchvision.ops import SqueezeExcitation

        g = torch.Generator().manual_seed(seed)
        c, s, h, w, _ = shape
        self.shape, self.batch, self.fmt = shape, batch, fmt
        self.x = (torch.randn(batch, c, h, w, generator=g) + 0.3).to(device, dtype).contiguous(
            memory_format=FORMATS[fmt])
        self.module = SqueezeExcitation(c, s, activation=nn.SiLU).eval()
        with torch.no_grad():
            for p, t in zip(self.module.parameters(), _se_weights(c, s, g)):
                p.copy_(t)
        self.module.to(device, dtype)
        self.weights = tuple(p.detach() for p in self.module.parameters())
        size = self.x.element_size()
        self.bytes = 3 * self.x.numel() * size
        half = self.bytes // (2 * size)
        self.src = torch.randn(half).to(device, dtype)
        self.dst = torch.empty_like(self.src)

    def run_eager(self):
        return self.module(self.x)

    def run_fused(self, backend=None):
        return ops.squeeze_excite(self.x, *self.weights, backend=backend)

    def run_copy(self):
        return self.dst.copy_(self.src)


class BlockSetup:
    """One MBConv block of a model as fused ops, channels_last, BN already folded (random weights)."""

    # Built outside inference mode even when the caller times inside it, as a user's model is: weights made
    # in inference mode are inference tensors, which keep no version counter, so the ops cannot cache
    # their packed form and would repack them on every call.
    @torch.inference_mode(False)
    def __init__(self, block, height: int, width: int, batch: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.block, self.batch = block, batch
        cin, cmid, cout, k = block.in_channels, block.mid_channels, block.out_channels, block.kernel
        cl = torch.channels_last
        self.x = torch.randn(batch, cin, height, width, generator=g).contiguous(memory_format=cl)
        self.expand = None
        if block.expand_ratio != 1:
            # the fused model's 1×1 GEMM, weight packed once
            self.expand = Conv1x1(torch.randn(cmid, cin, generator=g) / cin ** 0.5, torch.randn(cmid, generator=g) * 0.1)
        self.dw = (torch.randn(cmid, 1, k, k, generator=g) / k, torch.randn(cmid, generator=g) * 0.1)
        self.se = _se_weights(cmid, block.se_channels, g)
        self.proj = (torch.randn(cout, cmid, generator=g) / cmid ** 0.5, torch.randn(cout, generator=g) * 0.1)
        self.skip = block.has_skip
        # Packed once, as a fused model does at fuse time (the ops' eager path would look them up per call).
        self.se_projection = SeProjection(*self.se, *self.proj)

    def _expanded(self):
        return self.x if self.expand is None else self.expand(self.x, swish=True)

    def run_with_se(self):
        y, pooled = ops.dwconv_bias_swish_pool(self._expanded(), *self.dw, self.block.stride)
        return self.se_projection(y, pooled, self.x if self.skip else None)

    def run_without_se(self):
        y = ops.dwconv_bias_swish(self._expanded(), *self.dw, self.block.stride)
        w, b = self.proj
        n, cmid, h, wd = y.shape
        out = torch.empty((n, w.shape[0], h, wd), memory_format=torch.channels_last)
        o = out.permute(0, 2, 3, 1).view(-1, w.shape[0])
        acc = self.x.permute(0, 2, 3, 1).reshape(-1, w.shape[0]) if self.skip else b
        torch.addmm(acc, y.permute(0, 2, 3, 1).reshape(-1, cmid), w.t(), out=o)
        if self.skip:
            o.add_(b)
        return out


def model_blocks(phi):
    """(BlockSpec, input height, input width) for every block of efficientnet(phi) at its resolution."""
    spec = arch_spec(phi)
    h = w = _out(spec.resolution, 2)
    out = []
    for b in spec.blocks:
        out.append((b, h, w))
        h, w = _out(h, b.stride), _out(w, b.stride)
    return out


def _median(fn, min_seconds, device=None, repeats=7):
    return summarize(time_fn(fn, warmup=2, repeats=repeats, min_seconds=min_seconds, device=device))["median_ms"]


def interleaved(fns: dict, min_seconds: float, rounds: int = 5, device=None, repeats: int = 7) -> dict:
    """Median per callable of its per-round medians, over ``rounds`` interleaved rounds (timing.interleaved)."""
    per_round = timing.interleaved(fns, rounds, lambda name, fn, r: [_median(fn, min_seconds / rounds, device, repeats)])
    return {k: sorted(v)[len(v) // 2] for k, v in per_round.items()}


def bench_se(phis=range(8), batches=(1, 8), formats=("nchw", "channels_last"), block_phis=(0,),
             min_seconds: float = 0.05, progress=None, device="cpu", dtype: torch.dtype = torch.float32,
             all_backends: bool = False, rounds: int = 5, repeats: int = 7, into: Optional[dict] = None) -> dict:
    """Every distinct SE shape of ``phis``: eager torchvision ``SqueezeExcitation``, the fused op (default
    backend; with ``all_backends`` the others too, as ``backend_<name>_ms``) and the copy floor; then the
    fused blocks of ``block_phis`` with and without their SE (CPU only). ``progress(text)`` after each. The
    result is filled in ``into`` (a dict) as rows are measured, so an interrupted run keeps them."""
    device = torch.device(device)
    default = ops.available_backends(device.type)[0]
    extra = [b for b in ops.available_backends(device.type)[1:] if all_backends]
    if device.type != "cpu":
        block_phis = ()  # the block setup is the CPU engine's (packed GEMM weights)
    rows, blocks = [], []
    result = into if into is not None else {}
    result.update(machine=machine_info(device), dtype=str(dtype).replace("torch.", ""), rows=rows, blocks=blocks,
                  backend=default)
    with torch.inference_mode(), exact_fp32(device):
        for batch in batches:
            for fmt in formats:
                for shape in se_layer_shapes(phis):
                    st = SeSetup(shape, batch, fmt, device=device, dtype=dtype)
                    big = st.x.numel() > (1 << 22)  # tens of ms per call: 3 rounds, not 5
                    fns = {"eager": st.run_eager, "fused": st.run_fused, "copy": st.run_copy}
                    fns.update({f"backend_{b}": (lambda b=b: st.run_fused(b)) for b in extra})
                    t = interleaved(fns, min_seconds, rounds=min(rounds, 3) if big else rounds, device=device,
                                    repeats=repeats)
                    rows.append(dict(shape=list(shape), batch=batch, format=fmt, bytes=st.bytes, backend=default,
                                     **{f"{k}_ms": v for k, v in t.items()}))
                    if progress:
                        progress(f"SE b{batch} {fmt} {tuple(shape)}: eager {t['eager']:.3f} fused {t['fused']:.3f} "
                                 f"copy {t['copy']:.3f} ms")
        for phi in block_phis:
            for i, (block, h, w) in enumerate(model_blocks(phi)):
                st = BlockSetup(block, h, w, 1, seed=i)
                t = interleaved({"with": st.run_with_se, "without": st.run_without_se}, min_seconds)
                row = dict(phi=phi, block=i, in_channels=block.in_channels, mid_channels=block.mid_channels,
                           out_channels=block.out_channels, se_channels=block.se_channels, kernel=block.kernel,
                           stride=block.stride, height=h, width=w, with_se_ms=t["with"], without_se_ms=t["without"])
                blocks.append(row)
                if progress:
                    progress(f"B{phi} block {i}: with SE {row['with_se_ms']:.3f} without {row['without_se_ms']:.3f} ms")
    return result


def se_sums(result: dict, phi, batch: int, fmt: str) -> dict:
    """Eager and fused SE time summed over every block of efficientnet(phi) (repeats counted)."""
    return summed_over(result, se_shapes(phi), batch, fmt)


def markdown(result: dict, phis) -> str:
    m = result["machine"]
    lines = [f"Squeeze-excitation, {result.get('dtype', 'float32')}, {m['threads']} threads, "
             f"{m.get('device_name', m.get('cpu', m['processor']))}, fused = the `{result.get('backend', 'cpp')}` "
             f"backend, torch {m['torch']}, "
             f"ISA {m.get('isa', '?')}, {m['date']}. Times: medians, one run.", ""]
    batches = sorted({r["batch"] for r in result["rows"]})
    formats = list(dict.fromkeys(r["format"] for r in result["rows"]))
    lines += ["### Stand-alone SE summed over every block of the model (eager torchvision SqueezeExcitation vs "
              "fused)", "", "| model | batch | format | eager ms | fused ms | speed-up |", "|---|---|---|---|---|---|"]
    for phi in phis:
        for b in batches:
            for f in formats:
                s = se_sums(result, phi, b, f)
                if s is None:
                    continue
                lines.append(f"| B{phi} | {b} | {f} | {s['eager_ms']:.3f} | {s['fused_ms']:.3f} | {s['speedup']:.1f}× |")
    if result["blocks"]:
        lines += ["", "### Fused MBConv blocks with and without their SE (batch 1, channels_last)", "",
                  "| model | block | Cin→Cmid→Cout | S | k | s | H×W in | with SE µs | without µs | ratio |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        totals = {}
        for r in result["blocks"]:
            t = totals.setdefault(r["phi"], [0.0, 0.0])
            t[0] += r["with_se_ms"]
            t[1] += r["without_se_ms"]
            lines.append(f"| B{r['phi']} | {r['block']} | {r['in_channels']}→{r['mid_channels']}→{r['out_channels']} | "
                         f"{r['se_channels']} | {r['kernel']} | {r['stride']} | {r['height']}×{r['width']} | "
                         f"{r['with_se_ms'] * 1e3:.1f} | {r['without_se_ms'] * 1e3:.1f} | "
                         f"{r['with_se_ms'] / r['without_se_ms']:.2f} |")
        for phi, (a, b) in totals.items():
            lines.append(f"| B{phi} | all | | | | | | {a * 1e3:.1f} | {b * 1e3:.1f} | **{a / b:.3f}** |")
    lines += ["", "### Per SE shape", "",
              "| C | S | H×W | batch | format | eager µs | fused µs | copy floor µs | fused GB/s | copy GB/s | "
              "eager/fused | fused/copy |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        c, s, h, w, _ = r["shape"]
        lines.append(f"| {c} | {s} | {h}×{w} | {r['batch']} | {r['format']} | {r['eager_ms'] * 1e3:.1f} | "
                     f"{r['fused_ms'] * 1e3:.1f} | {r['copy_ms'] * 1e3:.1f} | {gbps(r['bytes'], r['fused_ms']):.1f} | "
                     f"{gbps(r['bytes'], r['copy_ms']):.1f} | {r['eager_ms'] / r['fused_ms']:.1f}× | "
                     f"{r['fused_ms'] / r['copy_ms']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    p = op_bench_args("python -m effnet_kernels.bench.se", __doc__.split("\n\n")[0], "se")
    p.add_argument("--block-phis", type=int, nargs="*", default=[0], choices=range(8), metavar="PHI",
                   help="models whose fused blocks are timed with and without SE (default: B0)")
    args = p.parse_args(argv)
    check_batches(p, args)
    result = bench_se(args.phis, args.batches, args.formats, args.block_phis, args.min_seconds,
                      progress=progress_line)
    record_isa(result)
    write_op_results(result, markdown(result, args.phis), args.out, "se")
    return 0


if __name__ == "__main__":
    sys.exit(main())
