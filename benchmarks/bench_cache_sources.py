"""`ptta cache` throughput on written clips against the same clips read from their sources.

Big Buck Bunny (720p) and the 1080p synthetic demo set are curated once with --write-clips, at
source size and scaled to 848x480 as for training. Each manifest is cached from the clip files
("written") and from the same clips as frame ranges without files ("ranges"), timed two ways:

* stage "read": every clip prepared as `ptta cache` prepares it (read, resampled to data.fps, the
  bucket's frames scaled, converted and fitted: cache.build._prepared_clips), without the VAE.
  This is all that frame ranges change.
* stage "cache": `ptta cache` end to end (pipeline load included), with the clips read in line
  (READ_AHEAD_CLIPS = 0, as before frame ranges) and one clip ahead on a thread (1, the default).

`--vae tiny` (default) uses the embedded tiny HunyuanVideo, whose VAE costs next to nothing, so
reading weighs far more than beside HunyuanVideo's VAE: the worst case for frame ranges.
`--vae full` puts HunyuanVideo's VAE at its real size in its place (diffusers'
AutoencoderKLHunyuanVideo default configuration with random weights; its speed does not depend on
their values). On a CPU that VAE takes about a minute for one 9x240x432 clip, so it is for a GPU:
`--vae full --device cuda --frame-buckets 33 65 97 --resolution 480x848` (the paper's buckets).
`--stages read` times the read alone (no model is loaded). Each repeat runs every mode once, in
turn, after a warm-up on one clip. Rows: median wall seconds of `--repeats` runs, per clip; the
ratio to the written clips in the same stage and read-ahead (`over_written`) and, where measured,
to the written clips read in line (`over_written_in_line`).

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
from ptta.cache.manifest import read_selected_clips
from ptta.config import config_from_dict
from ptta.curate.aesthetic import ImageStatisticsProxyScorer
from ptta.curate.clip_source import SourceClipReader
from ptta.curate.settings import CurateSettings
from ptta.curate.video_task import VideoCurator
from ptta.synthetic import make_demo_set

RESULTS_CSV = Path(__file__).parent / "results" / "cache_sources.csv"
COLUMNS = ("date", "commit", "machine", "device", "vae", "bucket", "clips_at", "clips", "frames_read", "stage",
           "mode", "read_ahead", "seconds", "seconds_per_clip", "over_written_in_line", "over_written")  # fmt: skip
# Clips written at source size, and scaled as for training.
CLIP_SIZES = {"source": None, "848x480": (848, 480)}


def curated_manifests(scratch: Path, out_size, max_clips: int | None) -> tuple[Path, Path, Path, int, int]:
    """(manifest of written clips, the same without clip files, the first written clip alone (to warm
    up), clips, source frames read); the first `max_clips` selected clips (None: all)."""
    inputs = [big_buck_bunny_path()] + [Path(t.path) for t in make_demo_set(scratch / "demo", size=(1920, 1080)).values()]
    out = scratch / f"curated-{out_size}"
    curator = VideoCurator(CurateSettings(write_clips=True, out_size=out_size), out, ImageStatisticsProxyScorer())
    rows = []
    for path in inputs:
        record = curator.run(path)
        rows += [{**clip, "source_signature": record["signature"], "caption": "a clip", "clip_path": str(out / clip["clip_path"])}
                 for clip in record["clips"] if clip["selected"]]
    rows = rows[:max_clips]
    written, ranges, warm = out / "written.jsonl", out / "ranges.jsonl", out / "warm.jsonl"
    written.write_text("".join(json.dumps(row) + "\n" for row in rows))
    ranges.write_text("".join(json.dumps({**row, "clip_path": None}) + "\n" for row in rows))
    warm.write_text(json.dumps(rows[0]) + "\n")
    return written, ranges, warm, len(rows), sum(row["frames"] for row in rows)


def model_with_vae(scratch: Path, vae: str) -> str:
    """The tiny model's folder, its VAE replaced by HunyuanVideo's full-size one for `vae` "full"."""
    from ptta.models.tiny_hunyuan_video import save_tiny_model

    model_dir = save_tiny_model(scratch / "model")
    if vae == "full":
        import shutil

        from diffusers import AutoencoderKLHunyuanVideo, HunyuanVideoTransformer3DModel

        vae_model = AutoencoderKLHunyuanVideo()
        shutil.rmtree(model_dir / "vae")
        vae_model.save_pretrained(model_dir / "vae")
        # The cache never loads the transformer, but the model folder is checked as a whole: the
        # tiny transformer again, taking the full VAE's latent channels.
        config = dict(HunyuanVideoTransformer3DModel.load_config(model_dir / "transformer"))
        config.update(in_channels=vae_model.config.latent_channels, out_channels=vae_model.config.latent_channels)
        shutil.rmtree(model_dir / "transformer")
        HunyuanVideoTransformer3DModel.from_config(config).save_pretrained(model_dir / "transformer")
    return str(model_dir)


def cache_config(model_dir: str, manifest: Path, cache_dir: Path, frame_buckets: list[int],
                 resolution: tuple[int, int]):
    return config_from_dict({"model": model_dir, "output_dir": str(cache_dir.parent / "run"),
                             "data": {"manifest": str(manifest), "cache_dir": str(cache_dir),
                                      "frame_buckets": frame_buckets, "resolution_buckets": [list(resolution)],
                                      "shard_size": 4}})  # fmt: skip


def read_seconds(config) -> float:
    """Seconds to prepare every clip of the manifest as `ptta cache` does, without the VAE (every
    clip must fill a frame bucket)."""
    clips = read_selected_clips(config.manifest_path)
    began = time.perf_counter()
    with SourceClipReader() as reader:
        for clip, prepared in build._prepared_clips(clips, config, reader):
            if isinstance(prepared, Exception):
                raise RuntimeError(f"{clip.id}: {prepared}")
    return time.perf_counter() - began


def cache_seconds(config, read_ahead: int, device: str) -> float:
    build.READ_AHEAD_CLIPS = read_ahead
    began = time.perf_counter()
    build.build_cache(config, overwrite=True, device=device, progress=False)
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
    return time.perf_counter() - began


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(torch.device(device))
    return "cpu"


def parse_resolution(text: str) -> tuple[int, int]:
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--resolution {text!r}: expected HEIGHTxWIDTH, e.g. 480x848") from None
    return height, width


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--vae", choices=("tiny", "full"), default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--frame-buckets", type=int, nargs="+", default=[9])
    parser.add_argument("--resolution", type=parse_resolution, default=(240, 432), help="HEIGHTxWIDTH")
    parser.add_argument("--stages", nargs="+", choices=("read", "cache"), default=["read", "cache"])
    parser.add_argument("--clips-at", nargs="+", choices=tuple(CLIP_SIZES), default=list(CLIP_SIZES),
                        help="the size the written clips were curated at (the frame ranges are the same clips)")
    parser.add_argument("--read-ahead", type=int, nargs="+", default=[0, 1],
                        help="READ_AHEAD_CLIPS values of the cache stage")
    parser.add_argument("--clips", type=int, default=None, help="only the first N selected clips")
    parser.add_argument("--csv", type=Path, default=RESULTS_CSV)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        model_dir = model_with_vae(scratch, args.vae) if "cache" in args.stages else "tiny"
        stamp = datetime.datetime.now().isoformat(timespec="seconds")
        load_before = load_average()
        buckets = "/".join(map(str, args.frame_buckets)) + " frames at " + "x".join(map(str, args.resolution))
        common = {"date": stamp, "commit": git_commit(), "device": device_name(args.device),
                  "vae": args.vae if "cache" in args.stages else "", "bucket": buckets}  # fmt: skip
        for out_size in (CLIP_SIZES[name] for name in args.clips_at):
            rows = []
            written, ranges, warm, clips, frames = curated_manifests(scratch, out_size, args.clips)
            configs = {name: cache_config(model_dir, manifest, scratch / "cache", args.frame_buckets, args.resolution)
                       for name, manifest in (("written", written), ("ranges", ranges), ("warm", warm))}  # fmt: skip
            modes = [(stage, name, ahead) for stage in args.stages for name in ("written", "ranges")
                     for ahead in ([None] if stage == "read" else args.read_ahead)]  # fmt: skip
            # imports and first-call costs, on one clip
            if "cache" in args.stages:
                cache_seconds(configs["warm"], 1, args.device)
            else:
                read_seconds(configs["warm"])
            seconds = {mode: [] for mode in modes}
            for _ in range(args.repeats):
                for stage, name, ahead in modes:
                    config = configs[name]
                    took = read_seconds(config) if stage == "read" else cache_seconds(config, ahead, args.device)
                    seconds[(stage, name, ahead)].append(took)
            for (stage, name, ahead), runs in seconds.items():
                median = statistics.median(runs)
                baseline = statistics.median(seconds[(stage, "written", ahead)])
                in_line = seconds.get((stage, "written", None if stage == "read" else 0))
                rows.append({**common, "clips_at": "source size" if out_size is None else "x".join(map(str, out_size)),
                             "clips": clips, "frames_read": frames, "stage": stage, "mode": name,
                             "read_ahead": "" if ahead is None else ahead, "seconds": round(median, 3),
                             "seconds_per_clip": round(median / clips, 4),
                             "over_written_in_line": round(median / statistics.median(in_line), 2) if in_line else "",
                             "over_written": round(median / baseline, 3)})  # fmt: skip
                print(", ".join(f"{k}={rows[-1][k]}" for k in ("clips_at", "stage", "mode", "read_ahead", "seconds",
                                                              "seconds_per_clip", "over_written")), flush=True)
            # Appended per clip size, so that a run stopped at a time limit keeps what it measured.
            host = f"{machine()}, load {load_before:.1f}-{load_average():.1f}"
            append_rows(args.csv, COLUMNS, [{**row, "machine": host} for row in rows])
            print(f"{len(rows)} rows appended to {args.csv}", flush=True)


if __name__ == "__main__":
    main()
