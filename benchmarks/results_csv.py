"""What every benchmark shares about its results CSV: the commit and machine a row was measured on,
and appending rows (a header only for a new file) so that earlier runs stay.

A dry run of the device check (benchmarks/device_check.sh --dry-run) sets BENCH_DRY_RUN=1: the
device name of its rows says so, and no row can be appended under benchmarks/results/.
"""

from __future__ import annotations

import csv
import datetime
import os
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
DRY_RUN_MARK = " [dry run]"


def git_commit() -> str:
    """Short hash, "-dirty" if the tree has changes; BENCH_COMMIT overrides it for a copy of the
    tree without .git (e.g. a GPU machine that received the files only); "unknown" otherwise."""
    if os.environ.get("BENCH_COMMIT"):
        return os.environ["BENCH_COMMIT"]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO_ROOT, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if dirty.strip() else "")


def dry_run() -> bool:
    return os.environ.get("BENCH_DRY_RUN") == "1"


def environment(device_name: str) -> dict:
    """The columns that say where and when a row was measured: date (UTC), commit, device (marked
    when this is a dry run), and the torch, Triton and CUDA versions ("none" for a CPU build)."""
    import torch

    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "none"
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "device": device_name + (DRY_RUN_MARK if dry_run() else ""),
        "torch": torch.__version__,
        "triton": triton_version,
        "cuda": torch.version.cuda or "none",
    }


def is_inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def append_rows(path: Path, columns: tuple[str, ...], rows: list[dict]) -> None:
    """Append `rows` (dicts keyed by `columns`) to the CSV at `path`.

    A file written before a column was added keeps its rows: it is rewritten once with the new
    columns appended to its header (empty in the old rows), then appended to.
    """
    path = Path(path)
    if dry_run() and is_inside(path, RESULTS_DIR):
        raise SystemExit(f"a dry run never writes into {RESULTS_DIR} (asked for {path})")
    path.parent.mkdir(parents=True, exist_ok=True)
    header = list(columns)
    if path.exists() and path.stat().st_size > 0:
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            existing = list(reader.fieldnames or [])
            missing = [column for column in columns if column not in existing]
            old_rows = list(reader) if missing else []
        header = existing + missing
        if missing:
            rewritten = path.with_name(path.name + ".tmp")
            with rewritten.open("w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=header, restval="")
                writer.writeheader()
                writer.writerows(old_rows)
            rewritten.replace(path)
        with path.open("a", newline="") as handle:
            csv.DictWriter(handle, fieldnames=header, restval="").writerows(rows)
        return
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header, restval="")
        writer.writeheader()
        writer.writerows(rows)
