"""effnet-bench: the run writes schema-valid results (JSON, Markdown, plots), survives Ctrl-C / SIGTERM,
rejects bad arguments in one line; `fit` answers the largest φ (to 0.01) that fits a budget."""
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

import effnet_kernels as ek
from conftest import import_or_skip, skip_or_fail
from effnet_kernels import budget
from effnet_kernels.bench import cli as bench, dwconv as bench_dwconv, e2e as bench_e2e
from effnet_kernels.bench.schema import SCHEMA, validate
from effnet_kernels.budget import fit_phi, measure_fused_latency
from effnet_kernels.scaling import model_cost

FAST = ["--rounds", "1", "--per-round", "1", "--no-progress"]


@pytest.fixture(autouse=True)
def _few_op_samples(monkeypatch):
    """The op microbenchmarks at their fewest samples (no minimum time, one repeat): these tests check what
    a run writes, not the numbers, and --rounds / --per-round reach only the end-to-end part."""
    for cfg in (bench.QUICK, bench.FULL):
        monkeypatch.setitem(cfg, "op_min_seconds", 0.0)
        monkeypatch.setitem(cfg, "op_repeats", 1)


def _run(tmp_path, *args):
    code = bench.main([*FAST, *args, "--out", str(tmp_path)])
    data = json.loads((tmp_path / "results.json").read_text())
    validate(data)
    return code, data


def test_run_writes_valid_results_tables_and_plots(tmp_path, capsys, one_thread):
    code, data = _run(tmp_path, "--phis", "0", "0.5", "--batch", "2", "--compile-phis", "none", "--op-phis", "0",
                      "--op-batches", "1")
    assert code == 0 and data["complete"] and not data["interrupted"]
    rows = {(r["phi"], r["batch"]): r for r in data["e2e"]}
    assert set(rows) == {(0, 1), (0.5, 1), (0, 2), (0.5, 2)}
    for r in rows.values():
        assert {"eager_nchw", "eager_cl", "fused"} <= set(r["providers"]) and not r["errors"]
        assert r["fused_rel_err"] < 1e-3
        assert "compile" not in r["providers"]
    assert rows[(0, 1)]["params"] == model_cost(0).params and rows[(0, 2)]["macs"] == 2 * model_cost(0).macs
    if bench_e2e.ort_available():
        assert "ort" in rows[(0, 1)]["providers"]
    else:
        assert "not installed" in rows[(0, 1)]["skipped"]["ort"]
    # op microbenchmarks: every depthwise and SE layer shape of B0, both formats, the copy floor
    dw, se = data["ops"]["dwconv"]["rows"], data["ops"]["se"]["rows"]
    assert len(dw) == 2 * len(ek.scaling.depthwise_shapes(0, distinct=True))
    assert len(se) == 2 * len(ek.scaling.se_shapes(0, distinct=True))
    assert all(r["copy_ms"] > 0 and r["fused_ms"] > 0 for r in dw + se)
    md = (tmp_path / "results.md").read_text()
    assert "| 0.5 | 232 |" in md and "fused vs eager" in md and "Which φ fits a latency budget" in md
    assert "torch.compile not measured" in md
    assert md in capsys.readouterr().out
    import_or_skip("matplotlib")
    for name in ("latency.png", "speedup.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_quick_plan_covers_every_phi_for_eager_and_fused_and_says_what_it_limits():
    args = bench.run_parser().parse_args(["--quick"])
    plan, jobs = bench._plan(args, torch.device("cpu"), bench.ALL_PHIS)
    latency = {phi: provs for batch, phi, provs in jobs if batch == 1}
    assert sorted(latency) == list(range(8))
    assert all({"eager_nchw", "eager_cl", "fused"} <= set(p) for p in latency.values())
    assert [phi for phi, p in latency.items() if "compile" in p] == [0]
    notes = bench._notes(args, plan, bench.ALL_PHIS, torch.device("cpu"))
    assert any("torch.compile measured at φ = 0 only" in n for n in notes)
    assert any("ONNX Runtime measured at φ = 0, 1, 2, 3, 4 only" in n for n in notes)


def test_compile_provider_runs_and_matches_eager():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.SiLU()).eval()
    x = torch.randn(2, 3, 16, 16)
    fn = bench_e2e.compiled(model, x)
    with torch.inference_mode():
        torch.testing.assert_close(fn(x), model(x), rtol=1e-4, atol=1e-5)


def test_ort_provider_matches_eager():
    if not bench_e2e.ort_available():
        skip_or_fail("onnxruntime / onnx not installed")
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.SiLU()).eval()
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(bench_e2e.ort_session(model, x)(x), model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("how", ["keyboard", "sigterm"])
def test_interrupt_writes_what_was_measured(tmp_path, monkeypatch, how):
    real = bench_e2e.bench_phi
    calls = []

    def second_call_interrupts(*a, **k):
        calls.append(a[0])
        if len(calls) == 2:
            if how == "keyboard":
                raise KeyboardInterrupt
            os.kill(os.getpid(), signal.SIGTERM)  # the run's handler turns it into the same stop
        return real(*a, **k)

    monkeypatch.setattr(bench_e2e, "bench_phi", second_call_interrupts)
    before = signal.getsignal(signal.SIGTERM)
    code, data = _run(tmp_path, "--phis", "0", "1", "--batch", "1", "--providers", "eager_nchw", "fused")
    assert code == 130 and data["interrupted"] and not data["complete"]
    assert [r["phi"] for r in data["e2e"]] == [0] and data["ops"] == {}
    assert "Interrupted" in (tmp_path / "results.md").read_text()
    assert signal.getsignal(signal.SIGTERM) == before


def _ten_seconds_per_model(monkeypatch):
    """A fake clock for the run's time limit: it stands still except that every model measured takes 10 s."""
    now = [0.0]
    real = bench_e2e.bench_phi

    def bench_phi(*a, **k):
        now[0] += 10
        return real(*a, **k)

    monkeypatch.setattr(bench, "clock", lambda: now[0])
    monkeypatch.setattr(bench_e2e, "bench_phi", bench_phi)


def test_time_limit_lists_what_it_skipped(tmp_path, monkeypatch, one_thread):
    _ten_seconds_per_model(monkeypatch)
    code, data = _run(tmp_path, "--phis", "0", "0.1", "0.2", "--batch", "1", "--providers", "fused",
                      "--time-limit-s", "15")
    assert code == 0 and not data["complete"] and data["ops"] == {}
    assert [r["phi"] for r in data["e2e"]] == [0, 0.1]  # 10 s in: under the limit, so φ=0.1 starts
    assert [r["seconds"] for r in data["e2e"]] == [10, 10] and data["seconds"] == 20
    assert "--time-limit-s 15 reached: not measured: φ=0.2 batch 1" in data["notes"]


def test_time_limit_reached_during_the_first_model_skips_the_op_benchmarks(tmp_path, monkeypatch):
    _ten_seconds_per_model(monkeypatch)
    code, data = _run(tmp_path, "--phis", "0", "--batch", "1", "--providers", "fused", "--op-phis", "0",
                      "--op-batches", "1", "--time-limit-s", "5")
    assert code == 0 and not data["complete"] and data["ops"] == {}
    assert [r["phi"] for r in data["e2e"]] == [0]  # the first model always runs
    assert "--time-limit-s 5 reached: op benchmarks not run" in data["notes"]


def test_schema_rejects_a_malformed_result(tmp_path):
    jsonschema = import_or_skip("jsonschema")
    _, data = _run(tmp_path, "--phis", "0", "--batch", "1", "--providers", "fused", "--no-ops")
    assert SCHEMA["$id"] == data["schema"]
    bad = json.loads(json.dumps(data))
    bad["e2e"][0]["providers"]["magic"] = bad["e2e"][0]["providers"]["fused"]
    with pytest.raises(jsonschema.ValidationError):
        validate(bad)
    bad = json.loads(json.dumps(data))
    bad["e2e"][0]["providers"]["fused"]["median_ms"] = -1.0
    with pytest.raises(jsonschema.ValidationError):
        validate(bad)
    bad = json.loads(json.dumps(data))
    bad["e2e"][0]["providers"]["fused"]["samples_ms"].append(1e9)
    with pytest.raises(ValueError, match="disagrees"):
        validate(bad)


# Bad arguments (exit 2, one line): tests/test_bad_input.py, with every other public entry point.


def test_unwritable_out_is_refused_before_measuring(tmp_path, capsys):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(SystemExit) as e:
        bench.main(["--phis", "0", "--no-ops", "--out", str(tmp_path / "file")])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and "--out" in err, err


# A provider whose first call takes over SLOW_CALL_S gets no untimed call before each round's samples. The
# fake clock decides which (every call "takes" 0 s or 1 s), so the calls before round 2's sample are fixed:
# fast — the warm-up, round 1 (an untimed call + one sample) and round 2's untimed call; slow — the warm-up
# and round 1's sample.
@pytest.mark.parametrize("speed,calls_before_round_2_sample", [("fast", 4), ("slow", 2)])
def test_a_provider_failing_mid_run_is_reported_and_the_others_kept(tmp_path, monkeypatch, speed,
                                                                     calls_before_round_2_sample):
    ticks = itertools.count()
    monkeypatch.setattr(bench_e2e, "clock", (lambda: 0.0) if speed == "fast" else (lambda: float(next(ticks))))
    real = bench_e2e.make_providers

    def fused_breaks_in_round_2(*a, **k):
        made = real(*a, **k)
        fused, calls = made["calls"]["fused"], []

        def flaky():
            calls.append(1)
            if len(calls) > calls_before_round_2_sample:
                raise RuntimeError("simulated kernel failure")
            return fused()
        made["calls"]["fused"] = flaky
        return made

    monkeypatch.setattr(bench_e2e, "make_providers", fused_breaks_in_round_2)
    code, data = _run(tmp_path, "--phis", "0", "--batch", "1", "--providers", "eager_nchw", "fused", "--no-ops",
                      "--rounds", "3")
    row = data["e2e"][0]
    assert code == 1 and "round 2: RuntimeError: simulated kernel failure" in row["errors"]["fused"]
    assert row["providers"]["eager_nchw"]["n"] == 3 and "fused" not in row["providers"]
    assert "simulated kernel failure" in (tmp_path / "results.md").read_text()


def test_interrupt_during_the_op_benchmarks_keeps_their_rows(tmp_path, monkeypatch):
    real, setups = bench_dwconv.DwSetup, []

    def third_shape_interrupts(*a, **k):  # one setup per layer shape: Ctrl-C while the third is being set up
        setups.append(1)
        if len(setups) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(bench_dwconv, "DwSetup", third_shape_interrupts)
    code, data = _run(tmp_path, "--ops-only", "--op-phis", "0", "--op-batches", "1")
    rows = data["ops"]["dwconv"]["rows"]
    assert code == 130 and data["interrupted"] and len(ek.scaling.depthwise_shapes(0, distinct=True)) > 3
    assert [r["shape"] for r in rows] == [list(s) for s in ek.scaling.depthwise_shapes(0, distinct=True)[:2]]
    assert "se" not in data["ops"] and "Depthwise conv" in (tmp_path / "results.md").read_text()


def test_render_rebuilds_tables_from_json(tmp_path, capsys):
    _run(tmp_path, "--phis", "0", "--batch", "1", "--providers", "fused", "eager_cl", "--no-ops", "--no-plots")
    (tmp_path / "results.md").unlink()
    assert bench.main(["render", str(tmp_path / "results.json"), "--out", str(tmp_path / "again")]) == 0
    assert "| 0 | 224 |" in (tmp_path / "again" / "results.md").read_text()
    with pytest.raises(SystemExit):
        bench.main(["render", str(tmp_path / "nothing.json")])


def test_denormal_benchmark(tmp_path, capsys):
    """The denormal row: every op measured on normal and subnormal input, the inputs really subnormal, the
    fused output still matching eager's, and no FTZ/DAZ left on the caller's thread."""
    assert bench.main(["denormal", "--rounds", "1", "--per-round", "1", "--no-progress", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "denormal.json").read_text())
    assert [r["input"] for r in data["rows"]].count("normal") == 3 and len(data["rows"]) == 8
    for r in data["rows"]:
        assert (r["subnormal_share_in"] > 0.99) == (r["input"] != "normal"), r
        assert r["rel_error"] < 1e-5 and r["eager"]["median_ms"] > 0 and r["fused_x"] > 0, r
        if r["input"] == "normal":
            assert r["eager_x"] == 1 and r["fused_x"] == 1
    zero_bias = [r for r in data["rows"] if r["input"] == "denormal x, zero bias"]
    assert zero_bias and all(r["subnormal_share_out"] > 0.9 for r in zero_bias)
    assert not data["ftz_leaked"] and "× normal" in (tmp_path / "denormal.md").read_text()


def test_console_script_is_installed_and_reports_user_errors_without_traceback():
    from importlib.metadata import entry_points

    scripts = {e.name: e.value for e in entry_points(group="console_scripts")}
    assert scripts.get("effnet-bench") == "effnet_kernels.bench.cli:main"
    exe = Path(sys.executable).with_name("effnet-bench")
    cmd = [str(exe)] if exe.exists() else [shutil.which("effnet-bench")]
    assert cmd[0], "effnet-bench is not on PATH"
    # Nothing here measures (the subprocesses import and parse); the timeout only guards against a hang.
    # (the parsers' refusals themselves are tested in-process: tests/test_bad_input.py)
    for args in (["--phis", "nan"], ["fit", "--macs", "1", "--no-progress"]):
        proc = subprocess.run([*cmd, *args], capture_output=True, text=True, cwd=tempfile.gettempdir(), timeout=600)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode != 0 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "no phi >= 0 fits" in lines[0]  # the last one: a budget nothing meets is an answer, not a crash


# ---------------------------------------------------------------------------------------------------- fit

COST_BUDGETS = [model_cost(p).macs for p in (0, 3, 7)] + [1e9, 3.14e8 * 1.3, 2e10]


@pytest.mark.parametrize("macs", COST_BUDGETS)
def test_fit_macs_is_the_largest_phi_to_001_that_fits(macs):
    r = fit_phi(macs=macs)
    assert model_cost(r.phi).macs <= macs < model_cost(round(r.phi + 0.01, 2)).macs
    assert r.latency_ms is None and r.macs == model_cost(r.phi).macs and len(r.evaluated) < 30


@pytest.mark.parametrize("params", [model_cost(p).params for p in (0, 5)] + [10e6, 100e6])
def test_fit_params_and_both_budgets(params):
    r = fit_phi(params=params)
    assert model_cost(r.phi).params <= params < model_cost(round(r.phi + 0.01, 2)).params
    both = fit_phi(params=params, macs=1e9)
    assert both.phi == min(r.phi, fit_phi(macs=1e9).phi)


def test_fit_cli_prints_phi_line(capsys):
    assert bench.main(["fit", "--macs", "1e9", "--no-progress", "--json"]) == 0
    line, js = capsys.readouterr().out.strip().splitlines()
    ans = json.loads(js)
    assert line.startswith(f"phi={ans['phi']:.2f} ") and f"resolution={ans['resolution']}" in line
    assert ans["phi"] == fit_phi(macs=1e9).phi


def test_fit_latency_search_with_a_known_latency_curve():
    curve = lambda phi: {"median_ms": 10 * 1.6 ** phi, "spread_ms": 0.1}  # noqa: E731
    seen = []
    r = fit_phi(latency_ms=50, measure=lambda phi: seen.append(phi) or curve(phi))
    assert curve(r.phi)["median_ms"] <= 50 < curve(r.phi + 0.01)["median_ms"]
    assert len(seen) == len(set(seen)) <= 14 and r.latency_ms == curve(r.phi)["median_ms"]
    top = fit_phi(latency_ms=1e9, measure=curve, phi_max=2.5)
    assert top.phi == 2.5 and top.at_phi_max and "phi_max reached" in top.line()
    with pytest.raises(ValueError, match="no phi >= 0 fits"):
        fit_phi(latency_ms=5, measure=curve)


@pytest.mark.parametrize("kwargs,err", [
    (dict(), ValueError), (dict(macs=-1), ValueError), (dict(macs=float("nan")), ValueError),
    (dict(latency_ms="5"), TypeError), (dict(params=True), TypeError), (dict(macs=1e9, phi_max=-1), ValueError),
    (dict(macs=1e9, batch=0), ValueError), (dict(macs=1e9, device="tpu"), ValueError),
    (dict(macs=1e9, dtype=torch.float16), ValueError), (dict(macs=1e9, dtype="fp32"), TypeError),
])
def test_fit_api_rejects_bad_budgets(kwargs, err):
    with pytest.raises(err):
        fit_phi(**kwargs)


def _known_latency(monkeypatch):
    """fit's own measurement replaced by a known curve (10 ms · 1.6^φ): where the search stops is then fixed."""
    seen = []

    def measure_fused_latency(phi, device, batch, dtype):
        seen.append((phi, str(device), batch, dtype))
        return {"median_ms": 10 * 1.6 ** phi, "spread_ms": 0.1}

    monkeypatch.setattr(budget, "measure_fused_latency", measure_fused_latency)
    return seen


def test_fit_latency_brackets_the_answer_with_its_own_measurements(monkeypatch):
    """fit_phi's default measurement (budget.measure_fused_latency, here a known curve): the answer was measured
    within the budget, φ + 0.01 was measured over it, and the answer's numbers are the measured ones."""
    seen = _known_latency(monkeypatch)
    r = fit_phi(latency_ms=50, device="cpu")
    by_phi = {e["phi"]: e for e in r.evaluated}
    assert by_phi[r.phi]["fits"] and by_phi[r.phi]["latency_ms"] <= 50 and not r.at_phi_max
    above = by_phi[round(r.phi + 0.01, 2)]
    assert not above["fits"] and above["latency_ms"] > 50
    assert r.latency_ms == by_phi[r.phi]["latency_ms"] and r.spread_ms == 0.1 and len(r.evaluated) <= 16
    assert {s[1:] for s in seen} == {("cpu", 1, torch.float32)} and len(seen) == len(r.evaluated)
    assert f"phi={r.phi:.2f}" in r.line() and "latency=" in r.line()


def test_fit_cli_reports_a_latency_nothing_meets_in_one_line(monkeypatch, capsys):
    _known_latency(monkeypatch)
    assert bench.main(["fit", "--latency-ms", "5", "--device", "cpu", "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no phi >= 0 fits the budget: at phi=0 latency_ms=10.0 > 5" in err[0], err


def test_fit_latency_measures_this_cpu():
    """A real search on this CPU whose answer no timing can change: every φ up to phi_max = 0.02 fits a budget
    of 10⁹ ms, so the search measures φ = 0, then φ = 0.02 (its first step, 1, capped at phi_max) and answers
    phi_max with the numbers it measured there."""
    r = fit_phi(latency_ms=1e9, device="cpu", phi_max=0.02)
    assert [e["phi"] for e in r.evaluated] == [0, 0.02] and all(e["fits"] for e in r.evaluated)
    assert all(e["latency_ms"] > 0 and e["spread_ms"] >= 0 for e in r.evaluated)
    assert r.phi == 0.02 and r.at_phi_max and "phi_max reached" in r.line()
    assert (r.latency_ms, r.spread_ms) == (r.evaluated[-1]["latency_ms"], r.evaluated[-1]["spread_ms"])
    assert "latency=" in r.line() and r.device == "cpu" and r.dtype == "float32"


@pytest.mark.perf
def test_fit_latency_answer_fits_on_remeasurement_and_phi_plus_01_does_not():
    """The acceptance check, opt-in (``pytest -m perf``): with a budget between B2's and B3's fused latency
    (where 0.1 of φ costs ~4–6 %), an independent re-measurement at the answer is within budget + the
    reported spread, and the model at φ + 0.1 is over budget. On this project's shared 2-core machine the
    same model's latency drifts by 15–70 % from one minute to the next, more than the 0.1-φ step, so this
    check is a measurement to run on a quiet machine, not a CI gate; it gets three attempts."""
    failures = []
    for _ in range(3):
        lo, hi = measure_fused_latency(2)["median_ms"], measure_fused_latency(3)["median_ms"]
        budget = (lo * hi) ** 0.5
        r = fit_phi(latency_ms=budget)
        at = measure_fused_latency(r.phi)
        above = measure_fused_latency(round(r.phi + 0.1, 2))
        if at["median_ms"] <= budget + r.spread_ms and above["median_ms"] > budget:
            return
        failures.append((budget, r.phi, r.latency_ms, r.spread_ms, at["median_ms"], above["median_ms"]))
    pytest.fail(f"(budget, phi, latency, spread, re-measured, at phi+0.1) per attempt: {failures}")


def test_engine_profile_covers_every_step():
    p = bench_e2e.profile_fused(0.0, runs=2)
    blocks = len(ek.efficientnet(0.0).spec.blocks)
    assert sum(k.startswith(("dw.", "expand_dw.")) for k in p["steps_ms"]) == blocks
    assert sum(k.startswith("project.") for k in p["steps_ms"]) == blocks
    assert set(p["kinds_ms"]) == {"stem", "expand", "expand_dw", "dw", "se_gate", "project", "head", "classifier"}
    assert all(v >= 0 for v in p["steps_ms"].values())
    assert "| 0 | 1 |" in bench_e2e.profile_table([p])


def test_model_run_measures_each_model_and_its_whole_model_reference(tmp_path, one_thread):
    """effnet-bench --model: one row per model spec at its own input size, plus the whole-model EfficientNet
    of the same φ (ek:φ) as the reference of the speed-ups; what fuse() swapped and left is recorded."""
    code, data = _run(tmp_path, "--model", "tv:efficientnet_b0:features", "unet-encoder:timm:efficientnet_b0",
                      "--providers", "eager_nchw", "fused")
    assert code == 0 and data["complete"], data.get("failed")
    rows = {r["model"]: r for r in data["e2e"]}
    assert list(rows) == ["tv:efficientnet_b0:features", "unet-encoder:timm:efficientnet_b0", "ek:0"]
    tv = rows["tv:efficientnet_b0:features"]
    assert tv["resolution"] == 224 and tv["phi"] == 0 and tv["swapped"] == 18 and tv["left"] == 0
    assert rows["unet-encoder:timm:efficientnet_b0"]["resolution"] == 256
    assert rows["ek:0"]["params"] == model_cost(0).params
    assert 0.9 * model_cost(0).macs < rows["ek:0"]["macs"] < 1.1 * model_cost(0).macs  # counted by hooks
    assert all(r["fused_rel_err"] < 1e-3 and {"eager_nchw", "fused"} <= set(r["providers"]) for r in rows.values())
    assert data["settings"]["models"] == ["tv:efficientnet_b0:features", "unet-encoder:timm:efficientnet_b0"]
    md = (tmp_path / "results.md").read_text()
    assert "| `tv:efficientnet_b0:features` | 0 | 224 |" in md and "| 18 / 0 |" in md
    assert "Models against the whole-model EfficientNet of their φ" in md
    assert "Which φ fits a latency budget" not in md  # (a φ table: not for a model run)
    import_or_skip("matplotlib")
    assert (tmp_path / "speedup.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
