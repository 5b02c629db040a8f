"""Bookkeeping of benchmarks/device_check.sh: its environment, one row per step, the table of the
GPU targets marked PASS / MISS, and merging a device run's CSVs into benchmarks/results/.

    python benchmarks/device_summary.py env --json PATH [--dry-run]
    python benchmarks/device_summary.py step --out DIR --env PATH --name NAME --rc RC --seconds S --cap S
                                             [--status skipped] [--junit XML] [--detail TEXT]
    python benchmarks/device_summary.py summary --out DIR --env PATH --since ISO-DATE
                                                [--shape 3072x3072 --tokens 16384 --heads 4]
    python benchmarks/device_summary.py merge FROM_DIR [TO_DIR]     # TO_DIR defaults to benchmarks/results

Files in the output folder: hydra_linear.csv and train_step.csv (the benchmarks' own rows),
device_check.csv (a row per step: status, seconds, cap, test counts), targets.csv (a row per
target and run) and device_check_summary.md (the table of the latest run).

The targets (docs/benchmarks.md; issue 3 for the kernel, the train-step section for training):
kernel, at bf16, M = 16384, 3072 -> 3072, r = 32, N = 4, router, fwd+bwd: triton_hydra <= 1.10 x
base, <= 1.0 x peft_lora, >= 2 x faster than naive_hydra, saved for the backward beyond the base
<= M (r + N) elements (s in x's dtype, the router's probabilities in fp32); the bf16 criterion of
the gpu-marked kernel tests; training: hydralora s/step <= 1.05 x peft_lora, peak <= peft_lora + 2%.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import math
import os
import platform
import shutil
import sys
import xml.etree.ElementTree as ElementTree
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from results_csv import DRY_RUN_MARK, RESULTS_DIR, append_rows, environment, is_inside

STEP_COLUMNS = ("date", "commit", "device", "torch", "triton", "cuda", "step", "status", "rc", "seconds", "cap_s",
                "passed", "failed", "skipped", "errors", "detail")
TARGET_COLUMNS = ("date", "commit", "device", "torch", "triton", "cuda", "target", "measured", "goal", "status")
SUMMARY_FILE = "device_check_summary.md"
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}
TEST_STEPS = {"kernel_tests_bf16": "bf16 criterion (pytest -m gpu tests/kernels)",
              "kernel_tests_compiled": "interpreter cases compiled on CUDA"}


# ---- env -------------------------------------------------------------------------------------------

def command_env(args) -> int:
    import torch

    if torch.cuda.is_available() and not args.dry_run:
        name = torch.cuda.get_device_name()
    elif args.dry_run:
        name = f"cpu ({platform.machine()}, TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET', '0')})"
    else:
        print("no CUDA device: the device check measures a GPU (--dry-run runs it on the CPU)", file=sys.stderr)
        return 3
    env = environment(name)
    del env["date"]
    Path(args.json).write_text(json.dumps(env))
    print(f"device {env['device']}, torch {env['torch']}, triton {env['triton']}, CUDA {env['cuda']}, "
          f"commit {env['commit']}, python {platform.python_version()}")
    carried = sorted(p.name.split("-")[0] for p in Path(args.site).glob("*.dist-info")) if args.site else []
    for package in dict.fromkeys(("diffusers", "peft", "transformers", "numpy", *carried)):
        try:
            print(f"  {package} {version(package)}{' (from the wheels)' if package in carried else ''}")
        except PackageNotFoundError:  # reported; the steps that need it fail on their own
            print(f"  {package} MISSING")
    return 0


def load_env(path: str) -> dict:
    env = json.loads(Path(path).read_text())
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), **env}


# ---- step ------------------------------------------------------------------------------------------

def junit_counts(path: Path) -> dict:
    """passed / failed / skipped / errors of a pytest --junitxml report, and the first failures."""
    root = ElementTree.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {key: sum(int(s.get(key, 0)) for s in suites) for key in ("tests", "failures", "errors", "skipped")}
    failed = [f"{case.get('classname', '')}::{case.get('name', '')}" for case in root.iter("testcase")
              if case.find("failure") is not None or case.find("error") is not None]
    return {"passed": counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"],
            "failed": counts["failures"], "skipped": counts["skipped"], "errors": counts["errors"],
            "failed_names": failed}


def step_status(rc: int, junit: dict | None) -> str:
    if rc in (124, 137):  # timeout's own exit codes: the cap, or the SIGKILL after it
        return "timeout"
    if rc == 0:
        return "ok"
    if junit is not None and rc == 1:
        return "tests failed"
    if junit is not None and rc == 5:
        return "no tests"
    return f"failed (rc {rc})"


def command_step(args) -> int:
    junit = None
    if args.junit and Path(args.junit).is_file():
        junit = junit_counts(Path(args.junit))
    status = args.status or step_status(args.rc, junit)
    detail = args.detail or ""
    if junit and junit["failed_names"]:
        detail = "; ".join(filter(None, [detail, "first failures: " + ", ".join(junit["failed_names"][:3])]))
    elif args.junit and junit is None and status != "skipped":
        detail = "; ".join(filter(None, [detail, "no pytest report (stopped before it ended)"]))
    row = {**load_env(args.env), "step": args.name, "status": status, "rc": args.rc, "seconds": f"{args.seconds:.0f}",
           "cap_s": f"{args.cap:.0f}", "detail": detail}
    if junit:
        row.update({key: junit[key] for key in ("passed", "failed", "skipped", "errors")})
    append_rows(Path(args.out) / "device_check.csv", STEP_COLUMNS, [row])
    counts = f" ({row['passed']} passed, {row['failed']} failed, {row['skipped']} skipped)" if junit else ""
    print(f"== {args.name}: {status}{counts} in {args.seconds:.0f} s (cap {args.cap:.0f} s)"
          + (f"; {detail}" if detail else ""), flush=True)
    return 0


# ---- summary ---------------------------------------------------------------------------------------

def read_rows(path: Path, env: dict, since: str) -> list[dict]:
    """This run's rows: dated at or after the run's start, at the run's commit, dry run or not alike.
    (Not by device name: each benchmark names a CPU its own way.)"""
    if not path.exists():
        return []
    dry = env["device"].endswith(DRY_RUN_MARK)
    with path.open(newline="") as handle:
        return [r for r in csv.DictReader(handle) if r.get("date", "") >= since and r.get("commit") == env["commit"]
                and r.get("device", "").endswith(DRY_RUN_MARK) == dry]


def as_float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def judged(measured: float, goal: float, at_most: bool) -> str:
    if math.isnan(measured):
        return "n/a"
    return "PASS" if (measured <= goal if at_most else measured >= goal) else "MISS"


def fmt(value: float, unit: str = "x") -> str:
    return "-" if math.isnan(value) else f"{value:.3f}{unit}" if unit == "x" else f"{value:.2f}{unit}"


def fwd_bwd_row(rows: list[dict], provider: str, in_features: str, out_features: str, tokens: int,
                heads: int) -> dict | None:
    """The newest fwd+bwd row of `provider` at one point of the router sweep."""
    hits = [r for r in rows if r["provider"] == provider and r["mode"] == "fwd+bwd" and r["mixing"] == "router"
            and r["in_features"] == in_features and r["out_features"] == out_features
            and int(r["tokens"]) == tokens and int(r["heads"]) == heads]
    return hits[-1] if hits else None


def point_ms(rows: list[dict], *point) -> dict[str, float]:
    """Median fwd+bwd ms of every provider at `point` (NaN where not measured)."""
    providers = ("base", "peft_lora", "naive_hydra", "triton_hydra", "triton_hydra_cublas")
    found = {p: fwd_bwd_row(rows, p, *point) for p in providers}
    return {p: as_float(row["ms_median"]) if row else math.nan for p, row in found.items()}


def kernel_targets(rows: list[dict], shape: str, tokens: int, heads: int) -> list[dict]:
    in_features, out_features = shape.split("x")
    point = (in_features, out_features, tokens, heads)
    ms = point_ms(rows, *point)
    hydra, base = fwd_bwd_row(rows, "triton_hydra", *point), fwd_bwd_row(rows, "base", *point)
    rank = int(hydra["rank"]) if hydra else 32
    label = f"{in_features}->{out_features}, M {tokens}, N {heads}, r {rank}, fwd+bwd"
    vs_base = ms["triton_hydra"] / ms["base"]
    vs_peft = ms["triton_hydra"] / ms["peft_lora"]
    loop = ms["naive_hydra"] / ms["triton_hydra"]
    saved_extra = as_float(hydra["saved_mb"]) - as_float(base["saved_mb"]) if hydra and base else math.nan
    element = DTYPE_BYTES.get(hydra["dtype"], 2) if hydra else 2
    saved_bound = tokens * (rank * element + heads * 4) / 2**20  # s in x's dtype, probabilities in fp32
    targets = [
        {"target": f"kernel vs base GEMM ({label})", "measured": fmt(vs_base), "goal": "<= 1.10x",
         "status": judged(vs_base, 1.10, True)},
        {"target": f"kernel vs PEFT LoRA r {rank}", "measured": fmt(vs_peft), "goal": "<= 1.00x",
         "status": judged(vs_peft, 1.0, True)},
        {"target": "per-head loop (naive_hydra) / kernel", "measured": fmt(loop), "goal": ">= 2x",
         "status": judged(loop, 2.0, False)},
        {"target": "saved for backward beyond base", "measured": fmt(saved_extra, " MiB"),
         "goal": f"<= {saved_bound:.2f} MiB = M(r+N) elements", "status": judged(saved_extra, saved_bound, True)},
    ]
    peaks = {p: as_float(row["peak_mb"]) for p in ("triton_hydra", "peft_lora", "naive_hydra", "base")
             if (row := fwd_bwd_row(rows, p, *point))}
    if any(not math.isnan(v) for v in peaks.values()):
        targets.append({"target": "peak memory of one fwd+bwd: " + " / ".join(peaks),
                        "measured": " / ".join(fmt(v, " MiB") for v in peaks.values()), "goal": "-",
                        "status": "info"})
    cublas = ms["triton_hydra_cublas"] / ms["base"]
    if not math.isnan(cublas):
        targets.append({"target": "kernel with cuBLAS base GEMM vs base (decides the default)",
                        "measured": fmt(cublas), "goal": f"fused: {fmt(vs_base)}", "status": "info"})
    return targets


def other_points(rows: list[dict], shape: str, tokens: int) -> list[dict]:
    """The wider shapes and larger M measured with time left: ratios, no targets of their own."""
    target = (*shape.split("x"), tokens)
    points = {(r["in_features"], r["out_features"], int(r["tokens"]), int(r["heads"])) for r in rows
              if r["provider"] == "triton_hydra" and r["mode"] == "fwd+bwd" and r["mixing"] == "router"}
    lines = []
    for point in sorted(points - {p for p in points if p[:3] == target}, key=lambda p: (p[2], int(p[0]), int(p[1]))):
        ms = point_ms(rows, *point)
        k, d, m, n = point
        hydra = ms["triton_hydra"]
        lines.append({"target": f"{k}->{d}, M {m}, N {n}: kernel vs base / vs PEFT; loop / kernel",
                      "measured": f"{fmt(hydra / ms['base'])} / {fmt(hydra / ms['peft_lora'])}; "
                                  f"{fmt(ms['naive_hydra'] / hydra)}",
                      "goal": "(1.10x / 1.00x; 2x at the target point)", "status": "info"})
    return lines


def test_targets(steps: list[dict]) -> list[dict]:
    targets = []
    for step, label in TEST_STEPS.items():
        rows = [r for r in steps if r["step"] == step]
        if not rows:
            targets.append({"target": label, "measured": "not run", "goal": "all pass", "status": "n/a"})
            continue
        row = rows[-1]
        passed, failed = int(row["passed"] or 0), int(row["failed"] or 0) + int(row["errors"] or 0)
        measured = f"{passed} passed, {failed} failed, {row['skipped'] or 0} skipped ({row['status']})"
        if failed:
            status = "MISS"
        elif row["status"] == "ok" and passed:
            status = "PASS"
        else:
            status = "n/a"  # all skipped (no CUDA), or stopped before pytest could report
        targets.append({"target": label, "measured": measured, "goal": "all pass", "status": status})
    return targets


def train_targets(rows: list[dict]) -> list[dict]:
    by_size: dict[tuple, dict] = {}
    for row in rows:
        by_size.setdefault((int(row["latent_tokens"]), row["frames"], row["height"], row["width"]), {})[
            row["provider"]] = row
    complete = [key for key, pair in by_size.items() if {"hydralora", "peft_lora"} <= set(pair)]
    if not complete:
        return [{"target": "train step s/step vs PEFT", "measured": "not measured", "goal": "<= 1.05x",
                 "status": "n/a"},
                {"target": "train step peak memory vs PEFT", "measured": "not measured", "goal": "<= +2%",
                 "status": "n/a"}]
    key = max(complete)
    pair = by_size[key]
    hydra, peft = pair["hydralora"], pair["peft_lora"]
    size = f"{key[1]} frames {key[2]}x{key[3]}, N {hydra['heads']} r {hydra['rank']}, {hydra['dtype']}"
    speed = as_float(hydra["s_per_step_median"]) / as_float(peft["s_per_step_median"])
    memory = as_float(hydra["peak_gib"]) / as_float(peft["peak_gib"])
    return [
        {"target": f"train step s/step vs PEFT ({size}, largest measured)",
         "measured": f"{fmt(speed)} ({hydra['s_per_step_median']} / {peft['s_per_step_median']} s)",
         "goal": "<= 1.05x", "status": judged(speed, 1.05, True)},
        {"target": f"train step peak memory vs PEFT ({hydra['memory_kind']})",
         "measured": f"{(memory - 1) * 100:+.1f}% ({hydra['peak_gib']} / {peft['peak_gib']} GiB)",
         "goal": "<= +2%", "status": judged(memory, 1.02, True)},
        {"target": "train step size", "measured": f"{len(complete)} size(s) measured, largest {key[1]} frames",
         "goal": hydra["note"] or "-", "status": "info"},
    ]


def command_summary(args) -> int:
    out = Path(args.out)
    env = load_env(args.env)
    device, since = env["device"], args.since
    steps = read_rows(out / "device_check.csv", env, since)
    linear = read_rows(out / "hydra_linear.csv", env, since)
    targets = [
        *kernel_targets(linear, args.shape, args.tokens, args.heads),
        *test_targets(steps),
        *train_targets(read_rows(out / "train_step.csv", env, since)),
        *other_points(linear, args.shape, args.tokens),
    ]
    lines = [f"Device check of {since}: {device}, torch {env['torch']}, triton {env['triton']}, CUDA {env['cuda']}, "
             f"commit {env['commit']}", ""]
    if device.endswith(DRY_RUN_MARK):
        lines += ["DRY RUN: tiny shapes on the CPU under the Triton interpreter; no figure here means anything.", ""]
    lines += ["| target | measured | goal | status |", "|---|---|---|---|"]
    lines += [f"| {t['target']} | {t['measured']} | {t['goal']} | {t['status']} |" for t in targets]
    lines += ["", "Steps: " + "; ".join(f"{s['step']} {s['status']} {s['seconds']} s" for s in steps)]
    text = "\n".join(lines) + "\n"
    (out / SUMMARY_FILE).write_text(text)
    append_rows(out / "targets.csv", TARGET_COLUMNS, [{**env, **t} for t in targets])
    print(text, end="")
    return 0


# ---- merge -----------------------------------------------------------------------------------------

def command_merge(args) -> int:
    """Append the rows of every CSV in FROM_DIR to the file of the same name in TO_DIR (columns
    matched by name, so files of other column orders or versions merge), and copy the summary."""
    source, dest = Path(args.source), Path(args.dest)
    if source.resolve() == dest.resolve():
        raise SystemExit("FROM_DIR and TO_DIR are the same folder")
    for path in sorted(source.glob("*.csv")):
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            rows, columns = list(reader), tuple(reader.fieldnames or ())
        if any(r.get("device", "").endswith(DRY_RUN_MARK) for r in rows) and is_inside(dest, RESULTS_DIR):
            raise SystemExit(f"{path} holds dry-run rows: they never go into {RESULTS_DIR}")
        append_rows(dest / path.name, columns, rows)
        print(f"{path.name}: {len(rows)} rows appended to {dest / path.name}")
    if (source / SUMMARY_FILE).exists():
        shutil.copyfile(source / SUMMARY_FILE, dest / SUMMARY_FILE)
        print(f"{SUMMARY_FILE} copied to {dest}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    env = commands.add_parser("env", help="write the run's device, versions and commit to a JSON file")
    env.add_argument("--json", required=True)
    env.add_argument("--dry-run", action="store_true")
    env.add_argument("--site", default=None, help="the folder the wheels were installed into (listed)")
    step = commands.add_parser("step", help="append one step's row to OUT/device_check.csv")
    step.add_argument("--out", required=True)
    step.add_argument("--env", required=True)
    step.add_argument("--name", required=True)
    step.add_argument("--rc", type=int, required=True)
    step.add_argument("--seconds", type=float, required=True)
    step.add_argument("--cap", type=float, required=True)
    step.add_argument("--status", default=None, help="instead of the one the exit code gives (e.g. skipped)")
    step.add_argument("--junit", default=None, help="pytest --junitxml report of the step")
    step.add_argument("--detail", default="")
    summary = commands.add_parser("summary", help="print and write the PASS/MISS table of this run")
    summary.add_argument("--out", required=True)
    summary.add_argument("--env", required=True)
    summary.add_argument("--since", required=True, help="the run's start, UTC ISO 8601 as the rows' dates")
    summary.add_argument("--shape", default="3072x3072", help="the kernel target point: in x out")
    summary.add_argument("--tokens", type=int, default=16384)
    summary.add_argument("--heads", type=int, default=4)
    merge = commands.add_parser("merge", help="append a device run's CSVs to benchmarks/results/")
    merge.add_argument("source")
    merge.add_argument("dest", nargs="?", default=str(RESULTS_DIR))
    args = parser.parse_args(argv)
    return {"env": command_env, "step": command_step, "summary": command_summary, "merge": command_merge}[
        args.command](args)


if __name__ == "__main__":
    sys.exit(main())
