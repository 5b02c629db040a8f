"""benchmarks/device_check.sh works before a GPU is ever lent: its dry run goes through every step
(wheel install, kernel target point, both kernel test runs, train step, wider shapes, summary) on
the CPU, and its bookkeeping (CSV columns, the PASS/MISS table, merging, the train step's choice of
size) behaves. Timings here are the Triton interpreter's and mean nothing.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
SCRIPT = BENCHMARKS / "device_check.sh"
STEPS = ["setup", "kernel_target", "kernel_tests_bf16", "kernel_tests_compiled", "train_step",
         "kernel_wide_shapes", "kernel_large_m"]
PROVIDERS = {"base", "peft_lora", "naive_hydra", "torch_hydra", "triton_hydra", "triton_hydra_cublas"}
MODES = ("fwd", "bwd", "fwd+bwd")


def load_script(name: str):
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def probe_wheel(folder: Path) -> Path:
    """A pure-Python wheel, so the dry run installs wheels the way the GPU machine does."""
    folder.mkdir()
    wheel = folder / "devicecheck_probe-0.1-py3-none-any.whl"
    files = {
        "devicecheck_probe/__init__.py": "VERSION = '0.1'\n",
        "devicecheck_probe-0.1.dist-info/METADATA": "Metadata-Version: 2.1\nName: devicecheck-probe\nVersion: 0.1\n",
        "devicecheck_probe-0.1.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                                 "Tag: py3-none-any\n",
    }
    files["devicecheck_probe-0.1.dist-info/RECORD"] = "".join(f"{name},,\n" for name in [*files, "RECORD"])
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return wheel


def run_check(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable}
    env.pop("BENCH_DRY_RUN", None)
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_dry_run_goes_through_every_step(tmp_path):
    pytest.importorskip("diffusers")  # the train step builds the tiny HunyuanVideo transformer
    probe_wheel(tmp_path / "wheels")
    out, log = tmp_path / "out", tmp_path / "device_check.log"
    result = run_check("--dry-run", "--out", str(out), "--wheels", str(tmp_path / "wheels"), "--log", str(log))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "devicecheck_probe 0.1 (from the wheels)" in result.stdout  # installed, and on the import path
    assert log.read_text().strip().endswith(f"rows in {out}")

    steps = read_csv(out / "device_check.csv")
    assert [s["step"] for s in steps] == STEPS
    assert all(s["status"] == "ok" for s in steps), steps
    assert all(s["device"].endswith(" [dry run]") and s["commit"] for s in steps)
    assert {s["cuda"] for s in steps} == {"none"}
    tests = {s["step"]: s for s in steps}
    assert int(tests["kernel_tests_bf16"]["skipped"]) > 0 and tests["kernel_tests_bf16"]["passed"] == "0"
    assert int(tests["kernel_tests_compiled"]["passed"]) > 0 and tests["kernel_tests_compiled"]["failed"] == "0"

    linear = read_csv(out / "hydra_linear.csv")
    target = [r for r in linear if (r["in_features"], r["out_features"], r["tokens"]) == ("32", "32", "16")]
    assert {(r["provider"], r["mode"]) for r in target} == {(p, m) for p in PROVIDERS for m in MODES}
    points = {(r["in_features"], r["out_features"], r["tokens"]) for r in linear}
    assert points == {(k, d, m) for k, d in (("32", "32"), ("32", "64"), ("64", "32")) for m in ("16", "32")}
    assert all(r["device"].endswith(" [dry run]") and r["cuda"] == "none" and r["triton"] for r in linear)

    train = read_csv(out / "train_step.csv")
    assert {r["provider"] for r in train} == {"hydralora", "peft_lora"}
    assert all(r["note"].startswith("time budget") and r["device"].endswith(" [dry run]") for r in train)

    summary = (out / "device_check_summary.md").read_text()
    assert "DRY RUN" in summary and summary in result.stdout
    for target_name in ("kernel vs base GEMM", "kernel vs PEFT LoRA", "per-head loop", "saved for backward",
                        "bf16 criterion", "interpreter cases compiled", "train step s/step", "train step peak"):
        assert target_name in summary
    targets = read_csv(out / "targets.csv")
    assert {t["status"] for t in targets} <= {"PASS", "MISS", "n/a", "info"}
    assert next(t for t in targets if t["target"].startswith("interpreter cases"))["status"] == "PASS"
    assert next(t for t in targets if t["target"].startswith("kernel vs base"))["status"] in {"PASS", "MISS"}

    # a device run's files merge into a results folder; dry-run rows never into benchmarks/results
    merged = tmp_path / "merged"
    merge = load_script("device_summary")
    assert merge.main(["merge", str(out), str(merged)]) == 0
    assert len(read_csv(merged / "hydra_linear.csv")) == len(linear)
    with pytest.raises(SystemExit, match="dry-run rows"):
        merge.main(["merge", str(out)])


def test_dry_run_refuses_the_results_folder(tmp_path):
    results = BENCHMARKS / "results"
    before = {p.name: p.stat().st_mtime_ns for p in results.iterdir()}
    result = run_check("--dry-run", "--out", str(results), "--wheels", str(tmp_path))
    assert result.returncode == 2
    assert "never writes into" in result.stderr
    assert {p.name: p.stat().st_mtime_ns for p in results.iterdir()} == before


def test_dry_run_rows_cannot_be_appended_to_the_results(monkeypatch):
    results_csv = load_script("results_csv")
    monkeypatch.setenv("BENCH_DRY_RUN", "1")
    with pytest.raises(SystemExit, match="never writes"):
        results_csv.append_rows(results_csv.RESULTS_DIR / "hydra_linear.csv", ("date",), [{"date": "x"}])
    assert results_csv.environment("cpu (test)")["device"] == "cpu (test) [dry run]"


def test_a_new_column_keeps_the_old_rows(tmp_path):
    results_csv = load_script("results_csv")
    path = tmp_path / "rows.csv"
    results_csv.append_rows(path, ("date", "device"), [{"date": "1", "device": "a"}])
    results_csv.append_rows(path, ("date", "cuda", "device"), [{"date": "2", "cuda": "13.0", "device": "b"}])
    results_csv.append_rows(path, ("date", "device"), [{"date": "3", "device": "c"}])
    assert read_csv(path) == [{"date": "1", "device": "a", "cuda": ""}, {"date": "2", "device": "b", "cuda": "13.0"},
                              {"date": "3", "device": "c", "cuda": ""}]
    assert path.read_text().splitlines()[0] == "date,device,cuda"


def test_train_step_budget_measures_the_smallest_then_the_largest_that_fits(monkeypatch, capsys):
    bench = load_script("bench_train_step")
    calls, written = [], []

    def fake_run(provider, args, size):
        calls.append(size)
        frames, height, width = size
        return {"provider": provider, "frames": frames, "height": height, "width": width,
                "s_per_step_median": 1.0 * bench.latent_positions(size) / bench.latent_positions((9, 448, 800))}

    monkeypatch.setattr(bench, "run_provider_isolated", fake_run)
    monkeypatch.setattr(bench, "write_rows", lambda rows, args, device, note: written.append((rows, note)))

    class Args:
        tiny, warmup, steps = False, 2, 4

    # 6 steps of 1 s per provider at 9 frames (no overhead: the fake takes no time), so 17 frames are
    # predicted at 1.2 x 2 providers x 6 s x (5/3 the latent length)^1.3 = 28 s, 33 frames (3x) at 60 s
    Args.time_budget = 45
    bench.run_within_budget(Args, ["hydralora", "peft_lora"], None)
    assert calls == [(9, 448, 800)] * 2 + [(17, 448, 800)] * 2
    assert written[0][1] == "time budget 45 s: smallest size"
    assert written[1][1].startswith("time budget 45 s: largest predicted to fit (28 s of 45 s left)")
    calls.clear()
    Args.time_budget = 20
    bench.run_within_budget(Args, ["hydralora", "peft_lora"], None)
    assert calls == [(9, 448, 800)] * 2
    assert "no larger size fits" in capsys.readouterr().err


def test_summary_marks_each_target(tmp_path):
    """GPU-like rows (as the benchmarks write them) judged against the targets of docs/benchmarks.md."""
    summary = load_script("device_summary")
    results_csv = load_script("results_csv")
    linear, train = load_script("bench_hydra_linear"), load_script("bench_train_step")
    env = {"date": "2030-01-01T00:00:00+00:00", "commit": "abc1234", "device": "NVIDIA H200", "torch": "2.11.0",
           "triton": "3.6.0", "cuda": "13.0"}
    (tmp_path / "env.json").write_text(json.dumps({k: v for k, v in env.items() if k != "date"}))
    point = {"mode": "fwd+bwd", "mixing": "router", "in_features": "3072", "out_features": "3072", "tokens": "16384",
             "heads": "4", "rank": "32", "dtype": "bfloat16"}
    ms_saved = {"base": (1.0, 0.0), "peft_lora": (1.2, 2.0), "naive_hydra": (3.0, 9.0), "triton_hydra": (1.05, 1.2),
                "triton_hydra_cublas": (1.12, 1.2)}
    rows = [{**env, **point, "provider": p, "ms_median": ms, "peak_mb": 100.0, "saved_mb": saved}
            for p, (ms, saved) in ms_saved.items()]
    rows.append({**env, **point, "provider": "triton_hydra", "in_features": "12288", "ms_median": 4.0})
    rows.append({**env, **point, "provider": "base", "in_features": "12288", "ms_median": 3.9})
    rows.append({**env, **point, "provider": "triton_hydra", "commit": "older", "ms_median": 9.0})  # another run
    results_csv.append_rows(tmp_path / "hydra_linear.csv", linear.COLUMNS, rows)
    steps = [{**env, "step": "kernel_tests_bf16", "status": "ok", "passed": 29, "failed": 0, "skipped": 0,
              "errors": 0},
             {**env, "step": "kernel_tests_compiled", "status": "tests failed", "passed": 100, "failed": 2,
              "skipped": 0, "errors": 0}]
    results_csv.append_rows(tmp_path / "device_check.csv", summary.STEP_COLUMNS, steps)
    sizes = {(9, 16800): {"hydralora": (2.0, 40.0), "peft_lora": (1.8, 39.0)},
             (17, 28000): {"hydralora": (3.0, 50.0), "peft_lora": (2.95, 49.5)}}
    train_rows = [{**env, "provider": p, "frames": f, "height": 448, "width": 800, "latent_tokens": t, "heads": 4,
                   "rank": 32, "dtype": "bfloat16", "s_per_step_median": s, "peak_gib": g,
                   "memory_kind": "cuda_max_allocated", "note": f"time budget 200 s: size {f}"}
                  for (f, t), pair in sizes.items() for p, (s, g) in pair.items()]
    results_csv.append_rows(tmp_path / "train_step.csv", train.COLUMNS, train_rows)

    assert summary.main(["summary", "--out", str(tmp_path), "--env", str(tmp_path / "env.json"),
                         "--since", "2030-01-01T00:00:00+00:00"]) == 0
    status = {t["target"].split(" (")[0]: t["status"] for t in read_csv(tmp_path / "targets.csv")}
    assert status["kernel vs base GEMM"] == "PASS"  # 1.05
    assert status["kernel vs PEFT LoRA r 32"] == "PASS"  # 0.875
    assert status["per-head loop"] == "PASS"  # 2.86
    assert status["saved for backward beyond base"] == "PASS"  # 1.2 MiB <= 16384 (32 x 2 B + 4 x 4 B) = 1.25 MiB
    assert status["bf16 criterion"] == "PASS"
    assert status["interpreter cases compiled on CUDA"] == "MISS"
    assert status["train step s/step vs PEFT"] == "PASS"  # 17 frames, the largest: 1.017
    assert status["train step peak memory vs PEFT"] == "PASS"  # +1.0%
    text = (tmp_path / "device_check_summary.md").read_text()
    assert "17 frames 448x800" in text and "time budget 200 s: size 17" in text
    assert "12288->3072, M 16384, N 4" in text and "1.026x" in text
    assert "DRY RUN" not in text
