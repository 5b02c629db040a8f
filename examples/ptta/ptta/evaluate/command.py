"""`ptta evaluate`: score videos of several methods side by side and report them (paper Table 2).

Either score a folder of existing videos described by a manifest (no model needed):

    ptta evaluate --manifest videos/manifest.csv --out runs/eval --videoscore /models/VideoScore-v1.1

or sample the paper's protocol first (20 prompts x 10 seeds per method) through `ptta.sample.generate`:

    ptta evaluate --model /models/HunyuanVideo --method base --method lora=runs/lora \\
        --method ptta=runs/ptta --out runs/eval --videoscore /models/VideoScore-v1.1

Weight-free metrics always run unless --no-weightfree; VideoScore, VideoScore2 and CLIPScore run
when their local directory is given. Everything lands in --out: scores.jsonl (the store a rerun
reuses), per_video.csv/.jsonl, summary.csv, table.md, scores.png, index.html (+ gifs/).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from ptta.evaluate.generation import MethodSpec, generate_missing
from ptta.evaluate.prompts import SAMPLES_PER_PROMPT, load_prompts
from ptta.evaluate.protocol import (
    MANIFEST_NAME,
    ManifestError,
    ordered_unique,
    plan_videos,
    read_manifest,
    write_manifest,
)
from ptta.evaluate.store import STORE_NAME, ScoreStore
from ptta.paper_prompts import PTTA_PROMPTS


def add_scorer_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("scorers")
    group.add_argument("--videoscore", type=Path, help="local VideoScore v1 / v1.1 checkpoint directory")
    group.add_argument("--videoscore-variant", choices=("v1", "v1.1"), default="v1.1",
                       help="v1 reads 16 frames, v1.1 reads 48 (default v1.1)")
    group.add_argument("--videoscore2", type=Path, help="local VideoScore2 (Qwen2.5-VL) checkpoint directory")
    group.add_argument("--vs2-max-new-tokens", type=int, default=1024, help="VideoScore2 answer length limit")
    group.add_argument("--clip", type=Path, help="local CLIP checkpoint directory for CLIPScore")
    group.add_argument("--no-weightfree", action="store_true", help="skip the flow / frame-difference metrics")
    group.add_argument("--flow-side", type=int, default=256,
                       help="short side (pixels) frames are shrunk to for optical flow (default 256)")
    group.add_argument("--device", default="auto", help="torch device for the scorers (default: cuda if present)")
    group.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"),
                       help="scorer weights dtype (default: bfloat16 on GPU, float32 on CPU)")


def add_generation_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("sampling (passed to ptta.sample.generate.generate_videos; unset = its default)")
    group.add_argument("--model", help='HunyuanVideo diffusers directory, or "tiny"')
    group.add_argument("--prompts", type=Path, help="prompt file (.txt/.csv/.jsonl); default: the 20 PTTA prompts")
    group.add_argument("--samples", type=int, default=SAMPLES_PER_PROMPT, help="videos per prompt and method")
    group.add_argument("--seed", type=int, default=0, help="sample k uses seed SEED + k for every method")
    group.add_argument("--steps", type=int)
    group.add_argument("--guidance", type=float)
    group.add_argument("--height", type=int)
    group.add_argument("--width", type=int)
    group.add_argument("--frames", type=int)
    group.add_argument("--fps", type=float)


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("report")
    group.add_argument("--out", type=Path, required=True, help="output folder (reruns reuse its stored scores)")
    group.add_argument("--gifs-per-cell", type=int, default=1, help="sample GIFs per prompt and method on the page")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("videos")
    group.add_argument("--manifest", type=Path, help="CSV/JSONL of existing videos: video,prompt[,method,...]")
    group.add_argument("--video-root", type=Path, help="folder the manifest's relative video paths start from "
                                                       "(default: the manifest's folder)")
    group.add_argument("--method", action="append", default=[], metavar="NAME[=ADAPTER]",
                       help="with --model: a method to sample; NAME alone is the base model, NAME=DIR a HydraLoRA "
                            "adapter, NAME=FILE an exported LoRA (repeat for each method)")
    add_generation_arguments(parser)
    add_scorer_arguments(parser)
    add_report_arguments(parser)


def build_scorers(args: argparse.Namespace) -> list:
    """The scorers the arguments ask for, checked (directories exist) before any work starts."""
    from ptta.evaluate.scorers import ClipScoreScorer, VideoScore2Scorer, VideoScoreScorer, WeightFreeScorer

    scorers = [] if args.no_weightfree else [WeightFreeScorer(args.flow_side)]
    if args.videoscore:
        scorers.append(VideoScoreScorer(args.videoscore, args.videoscore_variant, args.device, args.dtype))
    if args.videoscore2:
        scorers.append(VideoScore2Scorer(args.videoscore2, args.device, args.dtype,
                                         max_new_tokens=args.vs2_max_new_tokens))
    if args.clip:
        scorers.append(ClipScoreScorer(args.clip, device=args.device, dtype=args.dtype))
    if not scorers:
        raise SystemExit("ptta evaluate: nothing to score: drop --no-weightfree or give --videoscore, "
                         "--videoscore2 or --clip")
    return scorers


def sampling_options(args: argparse.Namespace) -> dict:
    """Only the sampling settings given on the command line; the sampler's defaults fill the rest."""
    names = {"steps": "steps", "guidance": "guidance", "height": "height", "width": "width", "frames": "frames",
             "fps": "fps"}
    options = {key: getattr(args, attr) for key, attr in names.items() if getattr(args, attr) is not None}
    if args.device != "auto":
        options["device"] = args.device
    return options


def evaluate_records(records: list, scorers: list, out_dir: Path, title: str, methods: list[str], *,
                     row_header: str = "Methods", row_labels: dict[str, str] | None = None, gifs_per_cell: int = 1,
                     notes: list[str] | None = None, log: Callable[[str], None] = print) -> int:
    """Score, then write every report; returns how many videos have at least one error. `notes`
    (e.g. sampling failures) are added to table.md."""
    from ptta.evaluate.html_page import write_page
    from ptta.evaluate.report import (
        CHART_PNG,
        SUMMARY_CSV,
        TABLE_MD,
        bar_chart,
        display_order,
        markdown_report,
        per_video_rows,
        summarize,
        write_per_video,
        write_summary,
    )
    from ptta.evaluate.runner import file_keys, score_all

    out_dir.mkdir(parents=True, exist_ok=True)
    store = ScoreStore(out_dir / STORE_NAME)
    if store.skipped_lines:
        log(f"{store.path}: skipped {store.skipped_lines} unreadable lines (an interrupted write)")
    keys = file_keys(records, store)  # content digests: each video is read once for them
    counts = score_all(records, scorers, store, log, keys)
    log(f"scores: {counts.scored} computed, {counts.reused} reused, {counts.failed} failed")
    metrics = display_order([m for scorer in scorers for m in scorer.metrics])
    rows = per_video_rows(records, scorers, store, keys, out_dir)
    write_per_video(rows, metrics, out_dir)
    cells = summarize(rows, methods, metrics)
    write_summary(cells, out_dir / SUMMARY_CSV)
    table = markdown_report(cells, methods, metrics, title, row_header, row_labels)
    if notes:
        table += "\n" + "\n".join(f"- {note}" for note in notes) + "\n"
    (out_dir / TABLE_MD).write_text(table)
    bar_chart(cells, methods, metrics, out_dir / CHART_PNG, row_labels)
    page = write_page(out_dir, title, rows, cells, methods, metrics, gifs_per_cell, row_labels)
    log(table)
    log(f"report: {page}")
    failed = sum(1 for row in rows if row["errors"])
    if failed:
        log(f"{failed} of {len(rows)} videos have errors (see the errors column of per_video.csv)")
    return failed


def sample_protocol(args: argparse.Namespace, methods: list,
                    log: Callable[[str], None] = print) -> tuple[list, list[str]]:
    """Plan every (method, prompt, sample) video under --out, write its manifest, and sample the
    missing ones; returns the records and notes on methods whose sampling failed."""

    prompts = load_prompts(args.prompts) if args.prompts else list(PTTA_PROMPTS)
    records = plan_videos([m.name for m in methods], prompts, args.samples, args.seed, args.out / "videos")
    write_manifest(records, args.out / MANIFEST_NAME)
    failures = generate_missing(records, methods, args.model, sampling_options(args), log)
    return records, [f"sampling {name} failed: {error}" for name, error in failures.items()]


def collect_records(args: argparse.Namespace,
                    log: Callable[[str], None] = print) -> tuple[list, list[str], list[str]]:
    """Records from --manifest, or planned and sampled from --model and --method; plus the method
    order and notes on methods whose sampling failed."""

    if (args.manifest is None) == (args.model is None):
        raise SystemExit("ptta evaluate: give either --manifest (existing videos) or --model with --method (sample)")
    if args.manifest is not None:
        if args.method:
            raise SystemExit("ptta evaluate: --method names methods to sample; with --manifest the methods come "
                             "from its 'method' column")
        records = read_manifest(args.manifest, args.video_root)
        return records, ordered_unique(r.method for r in records), []
    if not args.method:
        raise SystemExit("ptta evaluate: --model needs at least one --method NAME[=ADAPTER]")
    methods = [MethodSpec.parse(text) for text in args.method]
    for method in methods:
        method.sampler_arguments()  # a wrong path fails now, not after the first method has sampled
    records, notes = sample_protocol(args, methods, log)
    return records, [m.name for m in methods], notes


def run(args: argparse.Namespace) -> int:
    from ptta.evaluate.scorers.base import ScorerError

    try:
        scorers = build_scorers(args)
        records, methods, notes = collect_records(args)
    except (ManifestError, ScorerError, FileNotFoundError, ValueError) as error:
        raise SystemExit(f"ptta evaluate: {error}") from error
    failed = evaluate_records(records, scorers, args.out, "PTTA evaluation", methods,
                              gifs_per_cell=args.gifs_per_cell, notes=notes)
    return 1 if failed else 0
