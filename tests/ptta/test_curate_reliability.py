"""`ptta curate` under kill -9, Ctrl-C, two runs into one folder, colliding names and corrupt files."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from curate_support import run_command

from ptta.output_lock import OutputFolderInUse, output_lock
from ptta.synthetic import ShotSpec, make_animation_video

# Holds an output folder until killed, printing a line once it holds it.
HOLDER_SCRIPT = ("import sys, time; from ptta.output_lock import output_lock\n"
                 "with output_lock(sys.argv[1], 'ptta curate'):\n    print('held', flush=True); time.sleep(600)")


def _moving_videos(folder: Path, count: int, seconds: float = 8.0) -> Path:
    for i in range(count):
        make_animation_video(folder / f"v{i}.mp4", [ShotSpec(seconds, speed=0.5)], size=(160, 90), seed=i)
    return folder


def test_a_second_run_into_a_folder_in_use_is_refused_at_once(tmp_path):
    inputs, out = _moving_videos(tmp_path / "in", 1, seconds=3.2), tmp_path / "out"
    with output_lock(out, "ptta curate"):
        began = time.monotonic()
        with pytest.raises(SystemExit, match=f"--out {out} is in use by ptta curate \\(PID {os.getpid()} on "
                                             f"{socket.gethostname()}, since "):
            run_command("ptta.curate.command", [str(inputs), "--out", str(out), "--no-progress"])
        assert time.monotonic() - began < 5
        with pytest.raises(SystemExit, match=f"ptta curate-merge: error: {out} is in use by ptta curate"):
            run_command("ptta.curate.merge_command", [str(out)])
    assert not (out / "videos").exists()
    assert run_command("ptta.curate.command", [str(inputs), "--out", str(out), "--no-progress"]) == 0


def test_a_killed_holder_leaves_the_folder_free(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER_SCRIPT, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(OutputFolderInUse, match=f"in use by ptta curate \\(PID {holder.pid} on"), \
                output_lock(tmp_path, "ptta curate"):
            pass
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    with output_lock(tmp_path, "ptta curate") as folder:
        assert folder == tmp_path


def test_shards_lock_only_their_part_of_a_shared_folder(tmp_path):
    shard = "ptta curate --shard-index 0 --num-shards 2"

    def refused(command: str, part: str | None, message: str):
        """Locking the folder (or a part of it) for `command` fails with `message` ahead of the holder's PID."""
        with pytest.raises(OutputFolderInUse, match=f"^{re.escape(message)} \\(PID "):
            output_lock(tmp_path, command, part).__enter__()

    with output_lock(tmp_path, shard, part="shard-0-of-2"):
        with output_lock(tmp_path, "another shard", part="shard-1-of-2"):
            pass  # other shards run side by side
        refused(shard, "shard-0-of-2", f"{tmp_path} (shard-0-of-2) is in use by {shard}")
        refused("ptta curate-merge", None, f"{tmp_path} is in use by {shard}")
    with output_lock(tmp_path, "ptta curate"):
        refused(shard, "shard-1-of-2", f"{tmp_path} is in use by ptta curate")
    with pytest.raises(ValueError, match="part '../x'"):
        output_lock(tmp_path, shard, part="../x").__enter__()
