# pytest-benchmark suite: `pytest benchmarks/ --benchmark-only`. Shapes and setup come from the package
# (effnet_kernels.scaling, effnet_kernels.bench) so the CLI and this suite measure the same things.


def pytest_addoption(parser):
    parser.addoption("--smoke", action="store_true",
                     help="each benchmark function once, at its first parameter set (the smallest φ / first layer "
                          "shape): CI's check that the suite still runs, not a measurement; use with "
                          "--benchmark-disable")


def pytest_collection_modifyitems(config, items):
    if not config.getoption("--smoke"):
        return
    seen, keep, drop = set(), [], []
    for item in items:
        key = (str(item.fspath), item.originalname)
        (drop if key in seen else keep).append(item)
        seen.add(key)
    config.hook.pytest_deselected(items=drop)
    items[:] = keep
