# pytest-benchmark suite: `pytest benchmarks/ --benchmark-only`. Shapes and setup come from the package
# (effnet_kernels.scaling, effnet_kernels.bench) so the CLI and this suite measure the same things.
