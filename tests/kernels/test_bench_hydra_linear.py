"""The benchmark harness itself: a CPU smoke run writes well-formed rows and the plot draws them.

Timings on CPU mean nothing; this only guards the scripts a GPU session will run.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load_script(name: str):
    # the scripts import their sibling `results_csv` as `python benchmarks/<script>.py` would
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cpu_smoke_run_appends_rows_and_plots(tmp_path):
    bench = load_script("bench_hydra_linear")
    out = tmp_path / "hydra_linear.csv"
    # Triton runs on CPU tensors only under the interpreter (conftest sets it where there is no GPU).
    interpreting = os.environ.get("TRITON_INTERPRET") == "1"
    providers = ["base", "naive_hydra", "torch_hydra"] + (["triton_hydra"] if interpreting else [])
    common = ["--device", "cpu", "--quick", "--csv", str(out), "--modes", "fwd+bwd"]
    bench.main([*common, "--providers", *providers, "--heads", "1", "2"])
    bench.main([*common, "--providers", "base"])  # a second run appends under the same header
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    # base is measured for the first head count only, the hydra providers for both; then base again.
    assert len(rows) == 1 + (len(providers) - 1) * 2 + 1
    assert set(rows[0]) == set(bench.COLUMNS)
    assert {r["provider"] for r in rows} == set(providers)
    assert all(r["device"].startswith("cpu") and float(r["ms_median"]) > 0 for r in rows)

    plot = load_script("plot_hydra_linear")
    with pytest.raises(SystemExit, match="no GPU rows"):
        plot.main(["--csv", str(out), "--out", str(tmp_path / "refused.png")])
    png = plot.main(["--csv", str(out), "--out", str(tmp_path / "plot.png"), "--device", rows[0]["device"]])
    assert png.stat().st_size > 0
    with pytest.raises(SystemExit, match="mixing 'per_layer'"):  # a sweep of another mixing is not drawn
        plot.main(["--csv", str(out), "--out", str(tmp_path / "x.png"), "--device", rows[0]["device"],
                   "--mixing", "per_layer"])


def test_the_official_loop_is_left_out_of_sweeps_it_cannot_run(tmp_path, capsys):
    """naive_hydra has only a router on x: a per-layer sweep must not label it per_layer."""
    bench = load_script("bench_hydra_linear")
    out = tmp_path / "hydra_linear.csv"
    rows = bench.main(["--device", "cpu", "--quick", "--csv", str(out), "--modes", "fwd", "--heads", "2",
                       "--mixing", "per_layer", "--providers", "naive_hydra", "torch_hydra"])
    assert [(r["provider"], r["mixing"]) for r in rows] == [("torch_hydra", "per_layer")]
    assert "skipping naive_hydra" in capsys.readouterr().err


def test_cpu_run_refuses_the_gpu_results_file():
    bench = load_script("bench_hydra_linear")
    with pytest.raises(SystemExit):
        bench.parse_args(["--device", "cpu", "--quick"])
