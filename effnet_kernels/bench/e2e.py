"""End-to-end benchmark of ``fuse(model)`` against eager PyTorch (NCHW and channels_last), ``torch.compile``
and, on the CPU, ONNX Runtime — the measuring half of ``effnet-bench`` (:mod:`effnet_kernels.bench`).

Every model is this package's EfficientNet at φ with randomized BatchNorm statistics (calibrated, so the
activations are of order 1, not denormal), at the paper's resolution. Providers are timed in interleaved
rounds (a few runs each per round, so drift on a shared machine hits all of them alike); a row keeps every
sample. All runs use ``torch.inference_mode()`` and torch's thread count; on a GPU, fp32 means no TF32 for any
provider (:func:`~effnet_kernels.timing.exact_fp32`). The fused time includes nothing the caller would
not do (the input goes in as NCHW). On a GPU, batch-1 latency is measured on CUDA-graph replays of every
provider, ``torch.compile``'d model included.
"""
from __future__ import annotations

import copy
import gc
import io
import statistics
import time
import warnings
from typing import Callable, Dict, List, Optional

import torch

from ..timing import cuda_graphed, exact_fp32, interleaved, summarize, time_fn
from .. import swapped
from ..fuse import fuse
from ..scaling import compound, model_cost
from ..testing import build_model, rel_error

# The wall clock of the warm-up that tells fast models from slow ones (a module attribute, so a test can
# replace it with a fake clock and fix how many calls a provider gets per round).
clock = time.perf_counter
SLOW_CALL_S = 0.05  # a first call longer than this: no untimed call before each round's samples

PROVIDERS = ("eager_nchw", "eager_cl", "compile", "ort", "fused")
LABELS = {"eager_nchw": "eager NCHW", "eager_cl": "eager channels_last", "compile": "torch.compile",
          "ort": "ONNX Runtime", "fused": "fused (effnet_kernels)"}


def ort_available() -> bool:
    try:
        import onnx  # noqa: F401  (the TorchScript exporter writes through it)
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def _tensors(out) -> List[torch.Tensor]:
    """A model's output as a list of tensors (a tensor, a list / tuple of feature maps, a dict)."""
    if isinstance(out, torch.Tensor):
        return [out]
    return list(out.values()) if isinstance(out, dict) else list(out)


def ort_session(model: torch.nn.Module, x: torch.Tensor):
    """An ONNX Runtime CPU session for ``model`` exported with the TorchScript exporter (opset 17, dynamic
    batch) at the caller's thread count; returns a callable on CPU tensors."""
    import onnxruntime as ort

    buf = io.BytesIO()
    if any(hasattr(m, "set_swish") for m in model.modules()):
        # efficientnet_pytorch's memory-efficient Swish is an autograd.Function the exporter cannot record:
        # the plain one computes the same
        model = copy.deepcopy(model)
        for m in model.modules():
            if hasattr(m, "set_swish") and type(m).__name__ == "EfficientNet":
                m.set_swish(memory_efficient=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), buf, dynamo=False, input_names=["x"], output_names=["logits"],
                          opset_version=17, dynamic_axes={"x": {0: "batch"}})
    so = ort.SessionOptions()
    so.intra_op_num_threads = torch.get_num_threads()
    sess = ort.InferenceSession(buf.getvalue(), so, providers=["CPUExecutionProvider"])
    def run(xin):
        outs = [torch.from_numpy(a) for a in sess.run(None, {"x": xin.numpy()})]
        return outs[0] if len(outs) == 1 else outs
    return run


def compiled(model: torch.nn.Module, x: torch.Tensor):
    """torch.compile (inductor) of the eager model in channels_last, compiled here, outside any timed region;
    with freezing on the CPU (the setting is restored after)."""
    import torch._inductor.config as cfg

    # A fresh dynamo state per model: compiled code of earlier models (kept alive by dynamo's caches, and
    # counted against its recompile limit, past which it silently runs eager) would otherwise pile up.
    # fullgraph=True: a model that cannot be compiled whole is an error here, not a quiet eager fallback.
    torch._dynamo.reset()
    old = cfg.freezing
    cfg.freezing = x.device.type == "cpu"
    try:
        m = torch.compile(model.to(memory_format=torch.channels_last), fullgraph=True)
        with torch.inference_mode():
            m(x.contiguous(memory_format=torch.channels_last))
    finally:
        cfg.freezing = old
    return lambda xin: m(xin.contiguous(memory_format=torch.channels_last))


def bench_phi(phi, batch: int, providers=PROVIDERS, rounds: int = 3, per_round: int = 2, device="cpu",
              dtype: torch.dtype = torch.float32, graphs: Optional[bool] = None,
              progress: Optional[Callable[[str], None]] = None) -> dict:
    """One row: every provider in ``providers`` that can run here, timed in ``rounds`` interleaved rounds of
    ``per_round`` runs after one warm-up call. Providers that cannot run are listed under ``skipped`` with the
    reason, ones that fail under ``errors``. ``graphs`` (default: batch 1 on CUDA) times CUDA-graph replays.
    ``progress(text)`` is called once per provider and round."""
    device = torch.device(device)
    graphs = (device.type == "cuda" and batch == 1) if graphs is None else graphs
    with exact_fp32(device):
        return _bench_phi(phi, batch, providers, rounds, per_round, device, dtype, graphs, progress)


def make_providers(model: torch.nn.Module, x: torch.Tensor, names=PROVIDERS, graphs: bool = False) -> dict:
    """The providers ``names`` for ``model`` (eval, on x's device and dtype) as zero-argument callables on
    ``x`` (CUDA-graph replays when ``graphs``), in ``"calls"``; what cannot run here in ``"skipped"`` (name →
    reason), what failed to build in ``"errors"``, and the fused model's error against eager
    (``"fused_rel_err"``, before any graph capture). Shared by effnet-bench and the pytest-benchmark suite."""
    out = {"calls": {}, "skipped": {}, "errors": {}}
    fns: Dict[str, Callable] = {}
    cuda = x.device.type == "cuda"

    def add(name, make):
        try:
            fns[name] = make()
        except Exception as exc:  # noqa: BLE001  (one provider failing must not lose the others' numbers)
            out["errors"][name] = f"{type(exc).__name__}: {exc}"[:500]

    def make_cl():
        m = copy.deepcopy(model).to(memory_format=torch.channels_last)
        return lambda xin: m(xin.contiguous(memory_format=torch.channels_last))

    for name in names:
        if name == "eager_nchw":
            add(name, lambda: (lambda xin: model(xin)))
        elif name == "eager_cl":
            add(name, make_cl)
        elif name == "fused":
            add(name, lambda: fuse(model, example_inputs=x[:1]))
            if name in fns:
                from ..fuse import fuse_report
                report = fuse_report(fns[name])
                out["fused_report"] = (len(report.swapped), len(report.left))
        elif name == "ort":
            if cuda:
                out["skipped"][name] = "CPU only (the CUDA execution provider is not benchmarked)"
            elif x.dtype != torch.float32:
                out["skipped"][name] = "fp32 only"
            elif not ort_available():
                out["skipped"][name] = "onnxruntime / onnx not installed (pip install onnxruntime onnx)"
            else:
                add(name, lambda: ort_session(model, x))
        elif name == "compile":
            add(name, lambda: compiled(copy.deepcopy(model), x))
        else:
            raise ValueError(f"providers: unknown provider {name!r}, expected some of {PROVIDERS}")
    with torch.inference_mode():
        if "fused" in fns:
            try:
                out["fused_rel_err"] = max(rel_error(a, b) for a, b in zip(_tensors(fns["fused"](x)),
                                                                           _tensors(model(x))))
            except Exception as exc:  # noqa: BLE001
                out["errors"]["fused"] = f"{type(exc).__name__}: {exc}"[:500]
                del fns["fused"]
        for name, fn in fns.items():
            if graphs:
                try:
                    out["calls"][name] = cuda_graphed(fn, x)
                except Exception as exc:  # noqa: BLE001
                    out["errors"][name] = f"CUDA graph capture: {type(exc).__name__}: {exc}"[:500]
            else:
                out["calls"][name] = lambda fn=fn: fn(x)
    return out


def _bench_phi(phi, batch, providers, rounds, per_round, device, dtype, graphs, progress) -> dict:
    sc = compound(phi)
    cost = model_cost(phi)
    res = sc.resolution
    model = build_model(phi, device, dtype)
    x = torch.randn(batch, 3, res, res, generator=torch.Generator().manual_seed(1)).to(device, dtype)
    row = {"phi": phi, "resolution": res, "width": sc.width, "depth": sc.depth, "batch": batch,
           "dtype": str(dtype).replace("torch.", ""), "device": str(device), "cuda_graphs": graphs,
           "params": cost.params, "macs": cost.macs * batch}
    return _measure(model, x, row, providers, rounds, per_round, device, graphs, progress, f"phi={phi:g}")


def bench_model(spec: str, batch: int, providers=PROVIDERS, rounds: int = 3, per_round: int = 2, device="cpu",
                dtype: torch.dtype = torch.float32, graphs: Optional[bool] = None,
                progress: Optional[Callable[[str], None]] = None) -> dict:
    """One row for a model of the libraries people use (``spec`` as :func:`effnet_kernels.testing.
    model_from_spec`: ``timm:efficientnet_b3``, ``timm:efficientnet_b0:features``, ``tv:efficientnet_b0:
    features``, ``lukemelas:efficientnet-b2``, ``unet:timm:efficientnet_b0``, ``unet-encoder:...``) at the
    input size it was built for, as :func:`bench_phi` does for this package's EfficientNet at φ; ``"phi"``
    is the φ of the EfficientNet in it. Also records what fuse() swapped (``"swapped"`` / ``"left"``)."""
    from ..testing import model_from_spec, spec_phi

    device = torch.device(device)
    graphs = (device.type == "cuda" and batch == 1) if graphs is None else graphs
    with exact_fp32(device):
        _, res = model_from_spec(spec, calibration_size=None)
        # BatchNorm calibrated at the size it is measured at (calibrated at another, a random B4 at 380 was
        # so ill-conditioned that eager fp32 was 24 % from float64)
        model, _ = model_from_spec(spec, calibration_size=(2, 3, res, res))
        model = model.to(device, dtype)
        phi = spec_phi(spec)
        sc = compound(phi) if phi is not None else None
        x = torch.randn(batch, 3, res, res, generator=torch.Generator().manual_seed(1)).to(device, dtype)
        row = {"model": spec, "phi": phi, "resolution": res, "width": sc.width if sc else None,
               "depth": sc.depth if sc else None, "batch": batch,
               "dtype": str(dtype).replace("torch.", ""), "device": str(device), "cuda_graphs": graphs,
               "params": sum(p.numel() for p in model.parameters()), "macs": count_macs(model, x)}
        return _measure(model, x, row, providers, rounds, per_round, device, graphs, progress, spec)


def count_macs(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Multiply-adds of one forward pass on x: every Conv2d and Linear, counted by forward hooks."""
    total = [0]

    def conv(m, _inp, out):
        total[0] += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def linear(m, _inp, out):
        total[0] += out.numel() * m.in_features

    hooks = [m.register_forward_hook(conv if isinstance(m, torch.nn.Conv2d) else linear)
             for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    try:
        with torch.inference_mode():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return max(int(total[0]), 1)


def _measure(model, x, row, providers, rounds, per_round, device, graphs, progress, label) -> dict:
    """Time ``providers`` on ``model`` and ``x`` into ``row`` (interleaved rounds, see bench_phi)."""
    cuda = device.type == "cuda"
    batch = x.shape[0]
    made = make_providers(model, x, providers, graphs)
    row.update(providers={}, skipped=made["skipped"], errors=made["errors"])
    if "fused_rel_err" in made:
        row["fused_rel_err"] = made["fused_rel_err"]
    if "fused_report" in made:
        row["swapped"], row["left"] = made["fused_report"]
    call = made["calls"]
    with torch.inference_mode():
        slow = {}
        for name in list(call):  # warm-up, and a first sample to tell fast models from slow ones
            try:
                t0 = clock()
                call[name]()
                if cuda:
                    torch.cuda.synchronize(device)
                slow[name] = clock() - t0 > SLOW_CALL_S
            except Exception as exc:  # noqa: BLE001
                row["errors"][name] = f"{type(exc).__name__}: {exc}"[:500]
                del call[name]
        seen: Dict[str, List[float]] = {k: [] for k in call}  # (for the progress line)

        def sample(name, fn, r):
            if not cuda:
                # Let the previous provider's worker threads stop spinning (ONNX Runtime's and OpenMP's spin
                # for milliseconds after a run and would take the cores from the next provider); a fast
                # model also gets one untimed run to bring its caches back.
                time.sleep(0.05)
            got = time_fn(fn, 0 if slow[name] else 1, per_round, device=device)
            seen[name] += got
            if progress:
                progress(f"{label} batch {batch} {name} round {r + 1}/{rounds}: "
                         f"{statistics.median(seen[name]) * 1e3:.2f} ms")
            return got

        def dropped(name, r, exc):  # this provider's numbers go, the others' stay
            row["errors"][name] = f"round {r + 1}: {type(exc).__name__}: {exc}"[:500]

        samples = interleaved({n: call[n] for n in PROVIDERS if n in call}, rounds, sample, dropped)
    for name, s in samples.items():
        row["providers"][name] = summarize(s, keep_samples=True)
    del made, call
    gc.collect()  # this φ's models, sessions and compiled code go before the next φ's are built
    return row


def profile_fused(phi, batch: int = 1, runs: int = 10) -> dict:
    """Where the fused model's time goes: the C++ engine's per-step wall times (median over ``runs``
    forward passes), summed per kind of step (stem, expand_dw: the banded expand + depthwise of large
    layers, expand, dw, se_gate, project, head, classifier: the global mean and the linear layer)."""
    res = compound(phi).resolution
    x = torch.randn(batch, 3, res, res)
    fused = fuse(build_model(phi), example_inputs=x[:1])
    with torch.inference_mode():
        fused(x)
        (net,) = swapped.live_nets(fused)  # the stem, blocks, head and classifier: one chain
        net.set_profiling(True)
        steps: Dict[str, List[float]] = {}
        try:
            for _ in range(runs):
                fused(x)
                for name, sec in net.last_profile():
                    steps.setdefault(name, []).append(sec * 1e3)
        finally:
            net.set_profiling(False)
    last = f"layers.{net.layers - 1}"  # the chain's first layer is the stem conv, its last the head conv
    med = {k.replace("layers.0.", "stem.").replace(last + ".", "head."): statistics.median(v)
           for k, v in steps.items()}
    kinds: Dict[str, float] = {}
    for k, v in med.items():
        kinds[k.split(".")[0]] = kinds.get(k.split(".")[0], 0.0) + v
    return {"phi": phi, "batch": batch, "resolution": res, "steps_ms": med, "kinds_ms": kinds}


def profile_table(profiles: List[dict]) -> str:
    kinds = ["stem", "expand_dw", "expand", "dw", "se_gate", "project", "head", "classifier"]
    lines = ["| φ | batch | " + " | ".join(f"{k} ms" for k in kinds) + " | sum ms |", "|" + "---|" * (len(kinds) + 3)]
    for p in profiles:
        total = sum(p["kinds_ms"].values())
        lines.append(f"| {p['phi']:g} | {p['batch']} | " + " | ".join(
            f"{p['kinds_ms'].get(k, 0.0):.2f} ({100 * p['kinds_ms'].get(k, 0.0) / total:.0f} %)" for k in kinds) +
            f" | {total:.2f} |")
    return "\n".join(lines)
