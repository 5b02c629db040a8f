"""`ptta curate` under kill -9, Ctrl-C, two runs into one folder, colliding names and corrupt files."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from curate_support import read_manifest, run_command

from ptta.curate.aesthetic import ImageStatisticsProxyScorer
from ptta.curate.probe import video_id
from ptta.curate.settings import CurateSettings
from ptta.curate.video_task import VideoCurator
from ptta.output_lock import OutputFolderInUse, output_lock
from ptta.synthetic import ShotSpec, make_animation_video

# `ptta curate ARGS` in a process of its own (without the `ptta` entry point, so no other stage is imported),
# with Ctrl-C handled as in a process a terminal starts: a test suite launched in the background (`make test &`)
# hands its processes SIGINT ignored, and Python keeps ignoring a signal it started with ignored.
CURATE_SCRIPT = ("import argparse, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
                 "from ptta.curate import command as c; p = argparse.ArgumentParser(); "
                 "c.add_arguments(p); sys.exit(c.run(p.parse_args(sys.argv[1:])))")  # fmt: skip
# Holds an output folder until killed, printing a line once it holds it.
HOLDER_SCRIPT = ("import sys, time; from ptta.output_lock import output_lock\n"
                 "with output_lock(sys.argv[1], 'ptta curate'):\n    print('held', flush=True); time.sleep(600)")
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _start_curate(inputs: Path, out: Path, *extra: str) -> subprocess.Popen:
    """A curate run in its own session (so a test can signal or kill its whole process group)."""
    return subprocess.Popen([sys.executable, "-c", CURATE_SCRIPT, str(inputs), "--out", str(out), "--no-progress",
                             *extra], stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip


def _wait_until_curating(process: subprocess.Popen, out: Path, timeout: float = 120) -> None:
    """Until the run has written its first thumbnail, so it is in the middle of a video."""
    deadline = time.monotonic() + timeout
    while not list((out / "thumbs").glob("*.jpg")):
        assert process.poll() is None, f"the run ended early: {process.stderr.read()}"
        assert time.monotonic() < deadline, "the run wrote no thumbnail in time"
        time.sleep(0.02)


def _kill_group(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):  # nothing left
        os.killpg(process.pid, signal.SIGKILL)


def _running_processes() -> dict[int, int]:
    """{pid: parent pid} of every process that has not ended (zombies have), from /proc."""
    running = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            # pid (name) state ppid ...: the name may hold spaces and brackets, so split after the last ")".
            state, parent = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, ValueError):
            continue
        if state != "Z":
            running[int(entry.name)] = int(parent)
    return running


def _children(pid: int) -> list[int]:
    return [child for child, parent in _running_processes().items() if parent == pid]


def _still_running(pids: list[int], seconds: float) -> list[int]:
    """Those of `pids` still running after up to `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        running = [pid for pid in pids if pid in _running_processes()]
        if not running or time.monotonic() > deadline:
            return running
        time.sleep(0.05)


def _moving_videos(folder: Path, count: int, seconds: float = 8.0) -> Path:
    for i in range(count):
        make_animation_video(folder / f"v{i}.mp4", [ShotSpec(seconds, speed=0.5)], size=(160, 90), seed=i)
    return folder


@linux_only
def test_workers_die_with_a_killed_run_and_a_rerun_finishes_the_folder(tmp_path):
    inputs, out = _moving_videos(tmp_path / "in", 4), tmp_path / "out"
    process = _start_curate(inputs, out, "--workers", "2")
    try:
        _wait_until_curating(process, out)
        helpers = _children(process.pid)  # the two workers and multiprocessing's resource tracker
        assert len(helpers) == 3, helpers
        process.kill()
        process.wait()
        assert not _still_running(helpers, seconds=10), "processes of the killed run are still running"
    finally:
        _kill_group(process)  # whatever is left of the run, should the test fail
        process.stderr.close()
    assert len(list((out / "videos").glob("*.json"))) < 4, "the run was not caught in the middle"

    # The killed run's lock is gone with it, and a rerun completes the folder.
    assert run_command("ptta.curate.command", [str(inputs), "--out", str(out), "--workers", "2", "--write-clips",
                                               "--no-progress"]) == 0
    rows = read_manifest(out)
    assert len({row["video_id"] for row in rows}) == 4
    assert sorted(p.name for p in (out / "clips").iterdir()) == sorted(
        Path(row["clip_path"]).name for row in rows if row["clip_path"])


@linux_only
@pytest.mark.parametrize("workers", ["1", "2"])
def test_ctrl_c_stops_the_run_with_one_line_and_status_130(tmp_path, workers):
    inputs, out = _moving_videos(tmp_path / "in", 4), tmp_path / "out"
    process = _start_curate(inputs, out, "--workers", workers)
    try:
        _wait_until_curating(process, out)
        helpers = _children(process.pid)
        os.killpg(process.pid, signal.SIGINT)  # as Ctrl-C in a terminal: to every process of the group
        _, stderr = process.communicate(timeout=60)
        # The resource tracker ends once the workers are gone; give it a moment to clean up.
        assert not _still_running(helpers, seconds=10), "worker processes outlived the run"
    finally:
        _kill_group(process)
    assert process.returncode == 130
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    assert f"ptta curate: interrupted; what was finished is kept in {out}: run the same command again" in stderr
    assert len(list((out / "videos").glob("*.json"))) < 4, "the run went on after Ctrl-C"


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


def test_cleaning_up_after_a_killed_video_leaves_other_inputs_files_alone(tmp_path):
    """`a.mp4` has the id a-<hash>; an input named `a-<hash>-0000.mp4` has one beginning with it."""
    inputs = tmp_path / "in"
    make_animation_video(inputs / "a.mp4", [ShotSpec(3.5, speed=0.6)], size=(96, 54), seed=1)
    make_animation_video(inputs / f"{video_id(inputs / 'a.mp4')}-0000.mp4", [ShotSpec(3.5, speed=0.6)],
                         size=(96, 54), seed=2)
    out = tmp_path / "out"
    assert run_command("ptta.curate.command", [str(inputs), "--out", str(out), "--write-clips", "--no-progress"]) == 0
    rows = read_manifest(out)
    assert len(rows) == 2 and all(row["selected"] for row in rows)
    for row in rows:
        assert (out / row["clip_path"]).is_file() and (out / row["thumbnail"]).is_file()


def _mp4_with_timing(path: Path, field: bytes, value: int) -> Path:
    """Overwrite a 32-bit field of the mp4's moov: b"mdhd" its timescale, b"stts" the first sample's duration."""
    data = bytearray(path.read_bytes())
    box = data.index(field)  # the box type; its payload follows: version (1 byte), flags (3)
    if field == b"mdhd":
        assert data[box + 4] == 0  # version 0: 32-bit creation and modification times, then the timescale
        offset = box + 4 + 4 + 8
    else:
        offset = box + 4 + 4 + 4 + 4  # after the entry count and the first entry's sample count
    data[offset : offset + 4] = struct.pack(">I", value)
    broken = path.with_name(f"{field.decode()}-{value}.mp4")
    broken.write_bytes(data)
    return broken


@pytest.mark.parametrize(("field", "value"), [(b"mdhd", 0), (b"stts", 2**31 - 1)])
def test_corrupt_timestamps_are_reported_as_such(tmp_path, field, value):
    video = make_animation_video(tmp_path / "good.mp4", [ShotSpec(11.0, speed=0.5)], size=(96, 54))
    broken = _mp4_with_timing(Path(video.path), field, value)
    record = VideoCurator(CurateSettings(), tmp_path / "out", ImageStatisticsProxyScorer()).run(broken)
    assert record["status"] == "failed" and record["frames_decoded"] == 1
    assert record["error"].startswith("timestamps unusable (frame rate read as ")
    assert record["error"].endswith("fps): 1 of the 264 frames the header states decoded")


def test_clip_bytes_do_not_depend_on_the_worker_count(tmp_path):
    inputs = tmp_path / "in"
    for i in range(2):  # large enough for libx264 to split frames between threads
        make_animation_video(inputs / f"v{i}.mp4", [ShotSpec(3.2, speed=0.6)], size=(256, 144), seed=i)
    clips = {}
    for workers in ("1", "2"):
        out = tmp_path / f"workers{workers}"
        assert run_command("ptta.curate.command", [str(inputs), "--out", str(out), "--workers", workers,
                                                   "--write-clips", "--no-progress"]) == 0  # fmt: skip
        clips[workers] = {p.name: p.read_bytes() for p in (out / "clips").iterdir()}
    assert len(clips["1"]) == 2
    assert clips["1"] == clips["2"]
