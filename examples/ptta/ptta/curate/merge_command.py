"""`ptta curate-merge`: combine the output folders of sharded `ptta curate` runs into one manifest.

Shards may share one output folder (a shared file system) or use one each; either way this reads
every folder's per-video records and writes manifest.jsonl/.parquet, errors.log and report.html
into --out, with clip paths relative to it (clips are not copied). The exit status is the number
of failed videos (at most 100), as for `ptta curate`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ptta.curate.command import MAX_EXIT_STATUS
from ptta.output_lock import OutputFolderInUse, output_lock


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dirs", nargs="+", help="output folders of `ptta curate` runs")
    parser.add_argument("--out", help="where to write the merged manifest and report (default: the first folder)")


def run(args: argparse.Namespace) -> int:
    from ptta.curate.finalize import end_of_run_lines, finalize

    run_dirs = [Path(d) for d in args.run_dirs]
    out_dir = Path(args.out) if args.out else run_dirs[0]
    try:
        # A curate run still writing into the folder (one shard of several sharing it) is refused
        # here rather than merged half done.
        with output_lock(out_dir, "ptta curate-merge"):
            summary = finalize(run_dirs, out_dir, merged=True)
    except (ValueError, FileNotFoundError, OutputFolderInUse) as error:
        raise SystemExit(f"ptta curate-merge: error: {error}") from None
    for line in end_of_run_lines(summary, out_dir):
        print(line, file=sys.stderr)
    return min(summary.failed, MAX_EXIT_STATUS)
