"""Denormal inputs: what they cost the fused ops and eager PyTorch here (a benchmark row, not a timed test).

    effnet-bench denormal [--device cpu] [--batch 1] [--rounds 5] [--out DIR]

A subnormal float32 (|x| < 1.18e-38) can cost a CPU far more than a normal one: on many x86 cores an
arithmetic instruction with a subnormal operand or result takes a microcode assist unless the thread runs with
flush-to-zero (FTZ) and denormals-are-zero (DAZ). The package's kernels set neither (the caller's FP
environment is left as it is, so results match eager PyTorch's, which does not set them either); this
benchmark shows what that choice costs on the machine it runs on.

Per op, the same layer with three inputs: ``normal`` (randn), ``denormal x`` (randn · 1e-39: every multiply has
a subnormal operand, the bias brings the sums back to normal numbers) and ``denormal x, zero bias`` (the
outputs are subnormal too). Eager and fused are timed in interleaved rounds (median of every sample after
warm-up); the ratio columns are each one's time against its own time on normal input. Fused-vs-eager error is
recorded per row, and the caller's thread is checked for leaked FTZ/DAZ after the run.
"""
from __future__ import annotations

import copy
import statistics
from typing import Dict, List

import torch

from .. import ops
from ._util import machine_info, record_isa
from ..timing import exact_fp32, interleaved, summarize, time_fn
from .dwconv import DwSetup
from ..scaling import DepthwiseShape, SEShape
from ..testing import denormals_survive, rel_error

TINY = 1e-39  # randn · TINY: every element subnormal in float32 (|randn| < 11.7)
FLT_MIN = torch.finfo(torch.float32).tiny

# B0's first depthwise layer (32 ch at 112², k3) and a k5 layer of its fourth stage; B0's first SE.
DW_SHAPES = [DepthwiseShape(32, 112, 112, 3, 1), DepthwiseShape(480, 14, 14, 5, 1)]
SE_SHAPES = [SEShape(32, 8, 112, 112, 16)]


def _subnormal_share(t: torch.Tensor) -> float:
    a = t.detach().abs()
    return ((a < FLT_MIN) & (a > 0)).float().mean().item()


def _dw_cases(shape: DepthwiseShape, batch: int, fmt: str, device) -> List[dict]:
    st = DwSetup(shape, batch, fmt, device=device)
    k, s = shape.kernel, shape.stride
    zero_bias = copy.deepcopy(st.eager)
    with torch.no_grad():
        zero_bias[1].bias.zero_()
        zero_bias[1].running_mean.zero_()
    b0 = torch.zeros_like(st.b)
    tiny = st.x * TINY
    label = f"dwconv_bias_swish {shape.channels}×{shape.height}×{shape.width} k{k} s{s}"
    return [
        dict(op=label, input="normal", x=st.x, eager=lambda: st.eager(st.x),
             fused=lambda: ops.dwconv_bias_swish(st.x, st.w, st.b, s, "symmetric")),
        dict(op=label, input="denormal x", x=tiny, eager=lambda: st.eager(tiny),
             fused=lambda: ops.dwconv_bias_swish(tiny, st.w, st.b, s, "symmetric")),
        dict(op=label, input="denormal x, zero bias", x=tiny, eager=lambda: zero_bias(tiny),
             fused=lambda: ops.dwconv_bias_swish(tiny, st.w, b0, s, "symmetric")),
    ]


def _se_cases(shape: SEShape, batch: int, fmt: str, device) -> List[dict]:
    from .se import SeSetup

    st = SeSetup(shape, batch, fmt, device=device)
    tiny = st.x * TINY
    label = f"squeeze_excite {shape.channels}×{shape.height}×{shape.width} s{shape.squeeze}"
    return [
        dict(op=label, input="normal", x=st.x, eager=lambda: st.module(st.x),
             fused=lambda: ops.squeeze_excite(st.x, *st.weights)),
        dict(op=label, input="denormal x", x=tiny, eager=lambda: st.module(tiny),
             fused=lambda: ops.squeeze_excite(tiny, *st.weights)),
    ]


def bench_denormal(device="cpu", batch: int = 1, fmt: str = "channels_last", rounds: int = 5, per_round: int = 5,
                   progress=None) -> dict:
    """Rows of {op, input, subnormal_share, eager, fused (summaries), eager_x, fused_x (time / normal input's),
    rel_error (fused vs eager)}."""
    device = torch.device(device)
    result: Dict[str, object] = {"machine": machine_info(device), "batch": batch, "format": fmt, "rows": []}
    record_isa(result)
    with torch.inference_mode(), exact_fp32(device):
        groups = [_dw_cases(s, batch, fmt, device) for s in DW_SHAPES]
        groups += [_se_cases(s, batch, fmt, device) for s in SE_SHAPES]
        for cases in groups:
            fns = {(i, impl): case[impl] for i, case in enumerate(cases) for impl in ("eager", "fused")}
            samples = interleaved(fns, rounds, lambda key, fn, r: time_fn(fn, warmup=2 if r == 0 else 0,
                                                                           repeats=per_round, device=device))
            base = {impl: statistics.median(samples[(0, impl)]) for impl in ("eager", "fused")}
            for i, case in enumerate(cases):
                y_eager, y_fused = case["eager"](), case["fused"]()
                row = {"op": case["op"], "input": case["input"],
                       "subnormal_share_in": _subnormal_share(case["x"]),
                       "subnormal_share_out": _subnormal_share(y_fused),
                       "rel_error": rel_error(y_fused, y_eager)}
                for impl in ("eager", "fused"):
                    row[impl] = summarize(samples[(i, impl)])
                    row[f"{impl}_x"] = statistics.median(samples[(i, impl)]) / base[impl]
                result["rows"].append(row)
                if progress is not None:
                    progress(f"{case['op']}  {case['input']}: eager {row['eager']['median_ms']:.3f} ms, fused "
                             f"{row['fused']['median_ms']:.3f} ms")
    result["ftz_leaked"] = not denormals_survive()
    return result


def denormal_table(result: dict) -> str:
    m = result["machine"]
    lines = [f"Denormal inputs — {m.get('device_name', '')}, ISA {m.get('isa')}, {m['threads']} threads, "
             f"batch {result['batch']}, {result['format']}, torch {m['torch']}, {m['date']}",
             "",
             "| op | input | subnormal in / out | eager ms | fused ms | eager × normal | fused × normal | "
             "fused vs eager |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        lines.append(f"| {r['op']} | {r['input']} | {r['subnormal_share_in']:.0%} / {r['subnormal_share_out']:.0%} | "
                     f"{r['eager']['median_ms']:.3f} | {r['fused']['median_ms']:.3f} | {r['eager_x']:.2f} | "
                     f"{r['fused_x']:.2f} | {r['rel_error']:.1e} |")
    lines += ["", "× normal: the median time against the same implementation's on normal input, in the same run. "
              "The kernels set no FTZ/DAZ" + (" — but this run found them set on the caller's thread afterwards!"
                                                if result["ftz_leaked"] else
                                                "; the caller's thread still computes subnormals after the run.")]
    return "\n".join(lines) + "\n"
