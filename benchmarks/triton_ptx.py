"""Compile the Triton depthwise kernel for an H100 (sm_90a) without a GPU and count what each thread does.

    python benchmarks/triton_ptx.py

For every config of the autotuner, channels_last and NCHW, k=3/s=1 and k=5/s=2: registers (ptxas -v),
global loads per thread and how many of them are vector loads, vector stores, and fp32 FMAs. It is how the
kernel's code is checked on a machine without a GPU: scalar loads, spills or a register count that
leaves few warps per SM show up before any timing. The specialisation is what a channels_last EfficientNet
layer gets at run time: pointers 16-byte aligned, C and the outer strides divisible by 16, unit inner
stride. Written for the Triton of CI (3.8); the compiler API it uses is internal and may move.
"""
from __future__ import annotations

import os
import re
import subprocess
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from effnet_kernels.triton import dwconv

SIZES = ["C", "H", "W", "OH", "OW", "num_ptiles", "pad_top", "pad_left"]
STRIDES = ["sxn", "sxc", "sxh", "sxw", "syn", "syc", "syh", "syw"]


def compile_kernel(dtype: str, channels_last: bool, k: int, s: int, config: triton.Config, pool: bool = True):
    jit = dwconv.dwconv_bias_swish_kernel.fn.fn  # autotuner -> heuristics -> jit function
    names = list(jit.arg_names)
    sig = {n: f"*{dtype}" for n in ("x_ptr", "w_ptr", "b_ptr", "y_ptr")}
    sig["part_ptr"] = "*fp32"
    sig.update({n: "i32" for n in SIZES + STRIDES})
    unit = ("sxc", "syc") if channels_last else ("sxw", "syw")
    const = dict(K=k, S=s, CHANNELS_LAST=channels_last, POOL=pool, I64=False, EVEN_C=False, ACT=0, **config.kwargs)
    const.update({n: 1 for n in unit})
    sig.update({n: "constexpr" for n in const})
    aligned = ["x_ptr", "w_ptr", "b_ptr", "y_ptr", "part_ptr", "C"] + [n for n in STRIDES if n not in unit]
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in aligned}
    src = ASTSource(fn=jit, signature=sig, constexprs=const, attrs=attrs)
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": config.num_warps})


def registers(ptx: str) -> str:
    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "k.ptx")
        with open(path, "w") as f:
            f.write(ptx)
        out = subprocess.run([ptxas, "-v", "-arch=sm_90a", path, "-o", os.path.join(tmp, "k.cubin")],
                             capture_output=True, text=True)
    found = re.findall(r"Used (\d+) registers", out.stdout + out.stderr)
    spills = re.findall(r"(\d+) bytes spill stores", out.stdout + out.stderr)
    return f"{found[0] if found else '?'}" + (f" (spills {spills[0]} B)" if spills and spills[0] != "0" else "")


def count(pattern: str, text: str) -> int:
    return len(re.findall(pattern, text))


def main() -> None:
    configs = dwconv._CL_CONFIGS + dwconv._NCHW_CONFIGS
    print("| layout | dtype | k | s | BLOCK_W×BLOCK_C×TH, warps | outputs/thread | registers | loads | vector loads "
          "| vector stores | FMAs |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for cfg in configs:
        cl = cfg.kwargs["CL_TILE"]
        for dtype in (("fp16", "fp32") if cl else ("fp32",)):
            for k, s in ((3, 1), (5, 2)):
                ptx = compile_kernel(dtype, cl, k, s, cfg).asm["ptx"]
                loads, vloads = count(r"ld\.global", ptx), count(r"ld\.global[^\n]*\.v[248]", ptx)
                vstores, fmas = count(r"st\.global[^\n]*\.v[248]", ptx), count(r"fma\.rn\.f32", ptx)
                kw = cfg.kwargs
                per_thread = kw["BLOCK_W"] * kw["BLOCK_C"] * kw["TH"] // (32 * cfg.num_warps)
                print(f"| {'cl' if cl else 'nchw'} | {dtype} | {k} | {s} | {kw['BLOCK_W']}×{kw['BLOCK_C']}×{kw['TH']}, "
                      f"{cfg.num_warps} | {per_thread} | {registers(ptx)} | {loads} | {vloads} | {vstores} | {fmas} |")


if __name__ == "__main__":
    main()
