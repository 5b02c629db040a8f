"""What a new user sees on the terminal (issue #17, item 8): no deprecation warnings and no
library loading bars on a sample run, and `ptta demo --no-progress` for logs."""

from __future__ import annotations

import os
import subprocess
import sys

from ptta.cli import main


def test_a_tiny_sample_run_prints_no_torch_dtype_warning_and_no_library_bars(tmp_path):
    env = {**os.environ, "PTTA_HOME": str(tmp_path / "home"), "PYTHONWARNINGS": "default"}
    done = subprocess.run(
        [sys.executable, "-m", "ptta.cli", "sample", "a red disc", "--out", str(tmp_path / "samples"),
         "--steps", "1", "--height", "16", "--width", "16", "--frames", "1", "--no-gif"],
        capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "torch_dtype" not in done.stderr
    assert "Loading pipeline components" not in done.stderr and "Loading weights" not in done.stderr
    assert "\x1b[A" not in done.stderr  # tqdm's cursor-up escapes of nested library bars
    assert "sample:" in done.stderr  # our own progress bar stays


def test_demo_takes_no_progress(monkeypatch):
    from ptta.demo import command

    seen = []
    monkeypatch.setattr(command, "run_demo", lambda settings: seen.append(settings) or "summary.html")
    assert main(["demo", "--out", "x", "--no-progress"]) == 0
    assert main(["demo", "--out", "x"]) == 0
    assert [s.progress for s in seen] == [False, True]
