"""`ptta cache` throughput on written clips against the same clips read from their sources.

Big Buck Bunny (720p) and the 1080p synthetic demo set are curated once with --write-clips (at
source size, and scaled to 848x480 as for training); the manifest is cached with the embedded tiny
HunyuanVideo on the CPU (buckets of 9 frames at 240x432: the tiny VAE takes about 2 minutes for a
33-frame 480x848 clip on this CPU, where reading would not show at all), from the clip files and from the frame
ranges (no clip file), with the clips read in line (READ_AHEAD_CLIPS = 0, as before frame ranges)
and on the read-ahead thread (1, the default). Each repeat runs every mode once, in turn. The
tiny VAE is cheap, so reading weighs far more here than beside HunyuanVideo's VAE: the worst case
for frame ranges. Rows: median wall seconds per clip of `--repeats` runs (pipeline load included,
about the same in every mode).

    python benchmarks/bench_cache_sources.py            # appends to benchmarks/results/cache_sources.csv
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import tempfile
import time
from pathlib import Path

from bench_curate import load_average, machine
from results_csv import append_rows, git_commit

from ptta.assets import big_buck_bunny_path
from ptta.cache import build
from ptta.config import config_from_dict
from ptta.curate.aesthetic import ImageStatisticsProxyScorer
from ptta.curate.settings import CurateSettings
from ptta.curate.video_task import VideoCurator
from ptta.synthetic import make_demo_set

RESULTS_CSV = Path(__file__).parent / "results" / "cache_sources.csv"
COLUMNS = ("date", "commit", "machine", "clips_at", "clips", "frames_read", "mode", "read_ahead", "seconds",
           "seconds_per_clip", "over_written_in_line")  # fmt: skip


def curated_manifests(scratch: Path, out_size) -> tuple[Path, Path, int, int]:
    """(manifest of written clips, the same without clip files, clips, source frames read)."""
    inputs = [big_buck_bunny_path()] + [Path(t.path) for t in make_demo_set(scratch / "demo", size=(1920, 1080)).values()]
    out = scratch / f"curated-{out_size}"
    curator = VideoCurator(CurateSettings(write_clips=True, out_size=out_size), out, ImageStatisticsProxyScorer())
    rows = []
    for path in inputs:
        record = curator.run(path)
        rows += [{**clip, "source_signature": record["signature"], "caption": "a clip", "clip_path": str(out / clip["clip_path"])}
                 for clip in record["clips"] if clip["selected"]]
    written, ranges = out / "written.jsonl", out / "ranges.jsonl"
    written.write_text("".join(json.dumps(row) + "\n" for row in rows))
    ranges.write_text("".join(json.dumps({**row, "clip_path": None}) + "\n" for row in rows))
    return written, ranges, len(rows), sum(row["frames"] for row in rows)


def cache_seconds(model_dir: str, manifest: Path, cache_dir: Path, read_ahead: int) -> float:
    config = config_from_dict({"model": model_dir, "output_dir": str(cache_dir.parent / "run"),
                               "data": {"manifest": str(manifest), "cache_dir": str(cache_dir), "frame_buckets": [9],
                                        "resolution_buckets": [[240, 432]], "shard_size": 4}})
    build.READ_AHEAD_CLIPS = read_ahead
    began = time.perf_counter()
    build.build_cache(config, overwrite=True, device="cpu", progress=False)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--csv", type=Path, default=RESULTS_CSV)
    args = parser.parse_args()
    from ptta.models.tiny_hunyuan_video import save_tiny_model

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        model_dir = str(save_tiny_model(scratch / "tiny"))
        stamp = datetime.datetime.now().isoformat(timespec="seconds")
        load_before = load_average()
        rows = []
        for out_size in (None, (848, 480)):
            written, ranges, clips, frames = curated_manifests(scratch, out_size)
            modes = [("written", written, 0), ("written", written, 1), ("ranges", ranges, 0), ("ranges", ranges, 1)]
            cache_seconds(model_dir, written, scratch / "warm", 1)  # imports and first-call costs
            seconds = {mode: [] for mode in modes}
            for _ in range(args.repeats):
                for mode in modes:
                    seconds[mode].append(cache_seconds(model_dir, mode[1], scratch / "cache", mode[2]))
            baseline = statistics.median(seconds[modes[0]])
            for (name, _, ahead), runs in seconds.items():
                median = statistics.median(runs)
                rows.append({"date": stamp, "commit": git_commit(), "clips_at": "source size" if out_size is None
                             else "x".join(map(str, out_size)), "clips": clips, "frames_read": frames, "mode": name,
                             "read_ahead": ahead, "seconds": round(median, 3), "seconds_per_clip": round(median / clips, 4),
                             "over_written_in_line": round(median / baseline, 2)})  # fmt: skip
                print(", ".join(f"{k}={rows[-1][k]}" for k in ("clips_at", "mode", "read_ahead", "seconds",
                                                              "seconds_per_clip", "over_written_in_line")), flush=True)
    host = f"{machine()}, load {load_before:.1f}-{load_average():.1f}"
    for row in rows:
        row["machine"] = host
    append_rows(args.csv, COLUMNS, rows)
    print(f"{len(rows)} rows appended to {args.csv}")


if __name__ == "__main__":
    main()
