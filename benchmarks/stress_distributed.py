"""Launch a two-rank gloo run many times and count the launches whose processes do not all exit 0.

A process group left to interpreter exit aborts a rank now and then ("terminate called without an
active exception", exit -6); `ptta.train.trainer.end_distributed` destroys it where a run ends.
This is a stress check, not a CI test (CI keeps one launch per distributed test):

    python benchmarks/stress_distributed.py --launches 20            # with end_distributed (must be 0 failed)
    python benchmarks/stress_distributed.py --launches 20 --no-end   # without: shows the abort rate

Prints one line per failed launch and a summary; exits 1 if any launch failed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

RANK_SCRIPT = """
import sys
import torch
import torch.distributed as dist
from ptta.train.trainer import end_distributed

dist.init_process_group("gloo")
tensor = torch.ones(4) * dist.get_rank()
dist.all_reduce(tensor)
assert tensor.tolist() == [1.0] * 4
if sys.argv[1] == "end":
    end_distributed()
"""


def launch(script: Path, end: bool) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(script), "end" if end else "keep"]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--launches", type=int, default=20, help="two-rank launches to run (default 20)")
    parser.add_argument("--no-end", action="store_true", help="leave the process group to interpreter exit")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / "rank.py"
        script.write_text(RANK_SCRIPT)
        failed = 0
        for i in range(args.launches):
            result = launch(script, end=not args.no_end)
            if result.returncode != 0:
                failed += 1
                last = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
                print(f"launch {i}: exit {result.returncode}: {last}")
    mode = "without end_distributed" if args.no_end else "with end_distributed"
    print(f"{failed} of {args.launches} launches failed ({mode})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
