"""Op microbenchmarks: the fused depthwise conv + BN + Swish at every depthwise layer shape of B0–B7.

    python -m effnet_kernels.bench.dwconv [--phis 0 4] [--batches 1 8] [--formats nchw channels_last] [--out DIR]

Per layer, in one run under ``torch.inference_mode()`` at the default thread count: eager
``Conv2d(groups=C)`` + ``BatchNorm2d`` (eval) + ``SiLU`` in the same memory format, the fused op through
its public entry point (:func:`effnet_kernels.ops.dwconv_bias_swish`, BN folded once beforehand), and two
floors: a copy of the same bytes (``dst.copy_(src)``, reading and writing as many bytes as the layer's
input + output) and the layer's multiply-adds at the rate ``torch.mm`` reaches on an in-cache 512³
problem. A third floor, the Swish compute: the package's vectorised Swish alone over the layer's output
(one thread, divided by the thread count) — work the fused kernel cannot skip that neither the copy nor
the multiply-add floor counts. Medians of repeated runs after warm-up.
"""
from __future__ import annotations

import sys
from typing import List, Optional

import torch
import torch.nn as nn

from .. import ops
from ..ops._validate import output_size
from .._ext import has_cpp
from ._util import (FORMATS, check_batches, machine_info, mm_rate, op_bench_args, progress_line, record_isa,
                    summed_over, write_op_results)
from ..timing import exact_fp32, summarize, time_fn
from ..reference import fold_bn
from ..scaling import DepthwiseShape, depthwise_shapes, dw_layer_shapes


class DwSetup:
    """One layer's tensors and callables: eager modules, folded weights, copy buffers."""

    # Built outside inference mode even when the caller times inside it, as a user's model is: weights made
    # in inference mode are inference tensors, which keep no version counter, so the ops cannot cache
    # their packed form and would repack them on every call.
    @torch.inference_mode(False)
    def __init__(self, shape: DepthwiseShape, batch: int, fmt: str, seed: int = 0, device="cpu",
                 dtype: torch.dtype = torch.float32):
        g = torch.Generator().manual_seed(seed)
        c, h, w, k, s = shape
        mf = FORMATS[fmt]
        self.shape, self.batch, self.fmt = shape, batch, fmt
        self.x = torch.randn(batch, c, h, w, generator=g).to(device, dtype).contiguous(memory_format=mf)
        self.conv = nn.Conv2d(c, c, k, s, padding=k // 2, groups=c, bias=False)
        self.bn = nn.BatchNorm2d(c).eval()
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(c, 1, k, k, generator=g) / k)
            self.bn.weight.copy_(torch.rand(c, generator=g) + 0.5)
            self.bn.bias.copy_(torch.randn(c, generator=g) * 0.1)
            self.bn.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
            self.bn.running_var.copy_(torch.rand(c, generator=g) + 0.5)
        wf, bf = fold_bn(self.conv.weight.detach().double(), self.bn.weight.double(), self.bn.bias.double(),
                         self.bn.running_mean.double(), self.bn.running_var.double(), self.bn.eps)
        self.eager = nn.Sequential(self.conv, self.bn, nn.SiLU()).eval().to(device, dtype).to(memory_format=mf)
        self.w, self.b = wf.to(device, dtype), bf.to(device, dtype)
        _, _, out_h, out_w = output_size(h, w, k, s, "symmetric")
        size = self.x.element_size()
        self.in_bytes = self.x.numel() * size
        self.out_bytes = batch * c * out_h * out_w * size
        self.macs = batch * c * out_h * out_w * k * k
        half = (self.in_bytes + self.out_bytes) // (2 * size)  # elements: read + write = input + output bytes
        self.src = torch.randn(half).to(device, dtype)
        self.dst = torch.empty_like(self.src)
        # The Swish floor's buffer (CPU fp32 only): values that stay put under repeated in-place Swish
        # (swish(30) = 30), so no denormals creep in.
        self.act = torch.full((self.out_bytes // size,), 30.0) if self.x.device.type == "cpu" else None

    def run_eager(self):
        return self.eager(self.x)

    def run_fused(self, backend=None):
        return ops.dwconv_bias_swish(self.x, self.w, self.b, self.shape.stride, "symmetric", backend=backend)

    def run_copy(self):
        return self.dst.copy_(self.src)

    def run_swish(self):
        """The vectorised Swish alone over the output, single-threaded, divided by the thread count below:
        work every fused kernel must do besides the multiply-adds (the third floor)."""
        from .._ext import _C
        _C.swish_inplace(self.act.data_ptr(), self.act.numel())


def bench_dwconv(phis=range(8), batches=(1, 8), formats=("nchw", "channels_last"), min_seconds: float = 0.05,
                 progress=None, device="cpu", dtype: torch.dtype = torch.float32, all_backends: bool = False,
                 repeats: int = 5, into: Optional[dict] = None) -> dict:
    """Every distinct depthwise layer shape of ``phis``: eager, the fused op (its default backend on this device;
    with ``all_backends`` every other available backend too, as ``backend_<name>_ms``), the copy floor, the
    multiply-add floor and on the CPU the Swish floor. ``progress(text)`` is called after each shape. The result
    is filled in ``into`` (a dict) as rows are measured, so an interrupted run keeps them."""
    device = torch.device(device)
    cpu = device.type == "cpu"
    default = ops.available_backends(device.type)[0]
    extra = [b for b in ops.available_backends(device.type)[1:] if all_backends]
    rows = []
    result = into if into is not None else {}
    result.update(machine=machine_info(device), dtype=str(dtype).replace("torch.", ""), rows=rows, backend=default)
    rate = mm_rate(4096 if device.type == "cuda" else 512, device=device, dtype=dtype)
    result["mm_rate_gmacs"] = rate / 1e9
    shapes = dw_layer_shapes(phis)
    with torch.inference_mode(), exact_fp32(device):
        for batch in batches:
            for fmt in formats:
                for shape in shapes:
                    st = DwSetup(shape, batch, fmt, device=device, dtype=dtype)
                    providers = [("eager", st.run_eager), ("fused", st.run_fused), ("copy", st.run_copy)]
                    providers += [(f"backend_{b}", lambda b=b: st.run_fused(b)) for b in extra]
                    if cpu and has_cpp() and dtype == torch.float32:
                        providers.append(("swish", st.run_swish))
                    t = {name: summarize(time_fn(fn, warmup=2, repeats=repeats, min_seconds=min_seconds,
                                                 device=device))["median_ms"]
                         for name, fn in providers}
                    mac_floor = st.macs / rate * 1e3
                    swish_floor = t.get("swish", 0.0) / torch.get_num_threads()
                    row = dict(shape=list(shape), batch=batch, format=fmt, eager_ms=t["eager"], fused_ms=t["fused"],
                               backend=default, copy_ms=t["copy"], mac_floor_ms=mac_floor, swish_floor_ms=swish_floor,
                               bytes=st.in_bytes + st.out_bytes, macs=st.macs,
                               **{f"{k}_ms": v for k, v in t.items() if k.startswith("backend_")})
                    rows.append(row)
                    if progress:
                        progress(f"dw b{batch} {fmt} {tuple(shape)}: eager {t['eager']:.3f} fused {t['fused']:.3f} "
                                 f"copy {t['copy']:.3f} ms")
    return result


def gbps(nbytes: int, ms: float) -> float:
    """Bytes the op must read and write once, per second, in GB/s."""
    return nbytes / (ms * 1e-3) / 1e9


def layer_sums(result: dict, phi, batch: int, fmt: str) -> dict:
    """Eager and fused time summed over every depthwise layer of efficientnet(phi) (repeats counted)."""
    return summed_over(result, depthwise_shapes(phi), batch, fmt)


def markdown(result: dict, phis) -> str:
    m = result["machine"]
    lines = [f"Depthwise conv + BN + Swish, {result.get('dtype', 'float32')}, {m['threads']} threads, "
             f"{m.get('device_name', m.get('cpu', m['processor']))}, "
             f"torch {m['torch']}, ISA {m.get('isa', '?')}, {m['date']}; fused = the `{result.get('backend', 'cpp')}` "
             f"backend. torch.mm rate {result.get('mm_rate_gmacs', float('nan')):.1f} GMAC/s. Times in µs (median).", ""]
    batches = sorted({r["batch"] for r in result["rows"]})
    formats = list(dict.fromkeys(r["format"] for r in result["rows"]))
    lines += ["### Summed over every depthwise layer of the model", "",
              "| model | batch | format | eager ms | fused ms | speed-up |", "|---|---|---|---|---|---|"]
    for phi in phis:
        for b in batches:
            for f in formats:
                s = layer_sums(result, phi, b, f)
                if s is None:
                    continue
                lines.append(f"| B{phi} | {b} | {f} | {s['eager_ms']:.2f} | {s['fused_ms']:.2f} | {s['speedup']:.1f}× |")
    lines += ["", "### Per layer", "",
              "| C | H×W | k | s | batch | format | eager | fused | copy floor | MAC floor | Swish floor | "
              "fused GB/s | copy GB/s | eager/fused | fused/max(copy, MAC) | fused/(MAC + Swish) |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        c, h, w, k, s = r["shape"]
        floor = max(r["copy_ms"], r["mac_floor_ms"])
        compute = r["mac_floor_ms"] + r["swish_floor_ms"]  # (no Swish floor on a GPU: then the MAC floor alone)
        swish = f"{r['swish_floor_ms'] * 1e3:.1f}" if r["swish_floor_ms"] > 0 else "—"
        lines.append(f"| {c} | {h}×{w} | {k} | {s} | {r['batch']} | {r['format']} | {r['eager_ms'] * 1e3:.1f} | "
                     f"{r['fused_ms'] * 1e3:.1f} | {r['copy_ms'] * 1e3:.1f} | {r['mac_floor_ms'] * 1e3:.1f} | "
                     f"{swish} | {gbps(r['bytes'], r['fused_ms']):.1f} | "
                     f"{gbps(r['bytes'], r['copy_ms']):.1f} | {r['eager_ms'] / r['fused_ms']:.1f}× | "
                     f"{r['fused_ms'] / floor:.2f} | {r['fused_ms'] / compute:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    p = op_bench_args("python -m effnet_kernels.bench.dwconv", __doc__.split("\n\n")[0], "dwconv")
    args = p.parse_args(argv)
    check_batches(p, args)
    result = bench_dwconv(args.phis, args.batches, args.formats, args.min_seconds, progress=progress_line)
    record_isa(result)
    write_op_results(result, markdown(result, args.phis), args.out, "dwconv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
