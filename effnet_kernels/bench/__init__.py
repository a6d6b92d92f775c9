"""Benchmarks: ``effnet-bench`` (``cli``: end to end at every φ, the op microbenchmarks, ``fit``, ``profile``,
``denormal``, ``render``), and its parts — ``e2e`` (eager, torch.compile, ONNX Runtime and fused models),
``dwconv`` and ``se`` (per-op benchmarks, also ``python -m effnet_kernels.bench.dwconv`` / ``.se``),
``denormal`` (subnormal inputs), ``plots``, ``schema`` (the results.json schema). The core package never
imports this one."""
