"""`ptta evaluate`: score videos of several methods side by side and report them (paper Table 2).

Either score existing videos, listed in a manifest or simply a folder of them (no model needed):

    ptta evaluate --manifest videos/manifest.csv --out runs/eval --videoscore /models/VideoScore-v1.1
    ptta evaluate --manifest videos/ --out runs/eval       # prompts from videos/<name>.txt sidecars

or sample the paper's protocol first (20 prompts x 10 seeds per method) through `ptta.sample.generate`:

    ptta evaluate --model /models/HunyuanVideo --method base --method lora=runs/lora \\
        --method ptta=runs/ptta --out runs/eval --videoscore /models/VideoScore-v1.1

Weight-free metrics always run unless --no-weightfree; VideoScore, VideoScore2 and CLIPScore run
when their local directory is given. Everything lands in --out: scores.jsonl (the store a rerun
reuses), per_video.csv/.jsonl, summary.csv, table.md, scores.png, index.html (+ gifs/). The exit
status is 1, with a line on stderr, when any video failed to score or to preview.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from ptta.evaluate.generation import MethodSpec, generate_missing
from ptta.evaluate.prompts import SAMPLES_PER_PROMPT, load_prompts
from ptta.evaluate.protocol import (
    MANIFEST_NAME,
    ManifestError,
    ordered_unique,
    plan_videos,
    read_videos,
    write_manifest,
)
from ptta.evaluate.store import STORE_NAME, ScoreStore
from ptta.output_lock import OutputFolderInUse, output_lock
from ptta.paper_prompts import PTTA_PROMPTS
from ptta.sample.generate import generate_videos


def add_scorer_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("scorers")
    group.add_argument("--videoscore", type=Path,
                       help="local VideoScore v1 / v1.1 checkpoint directory (default: not scored)")
    group.add_argument("--videoscore-variant", choices=("v1", "v1.1"), default="v1.1",
                       help="v1 reads 16 frames, v1.1 reads 48 (default v1.1)")
    group.add_argument("--videoscore2", type=Path,
                       help="local VideoScore2 (Qwen2.5-VL) checkpoint directory (default: not scored)")
    group.add_argument("--vs2-max-new-tokens", type=int, default=1024,
                       help="VideoScore2 answer length limit in tokens (default 1024, the reference's)")
    group.add_argument("--clip", type=Path, help="local CLIP checkpoint directory for CLIPScore (default: not scored)")
    group.add_argument("--no-weightfree", action="store_true",
                       help="skip the flow / frame-difference metrics (default: they run)")
    group.add_argument("--flow-side", type=int, default=256,
                       help="short side (pixels) frames are shrunk to for optical flow (default 256)")
    group.add_argument("--device", default="auto", help="torch device for the scorers (default: cuda if present)")
    group.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"),
                       help="scorer weights dtype (default: bfloat16 on GPU, float32 on CPU)")


def add_generation_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("sampling (passed to ptta.sample.generate.generate_videos; unset = its default)")
    group.add_argument("--model", help='HunyuanVideo diffusers directory, or "tiny" (default: none; score '
                                       '--manifest videos instead)')
    group.add_argument("--prompts", type=Path, help="prompt file (.txt/.csv/.jsonl); default: the 20 PTTA prompts")
    group.add_argument("--samples", type=int, default=SAMPLES_PER_PROMPT,
                       help=f"videos per prompt and method (default {SAMPLES_PER_PROMPT}, the paper's)")
    group.add_argument("--seed", type=int, default=0, help="sample k uses seed SEED + k for every method (default 0)")
    sampler = generate_videos.__kwdefaults__  # unset: generate_videos' own default, shown here

    def unset(name: str) -> str:
        return f"(default {sampler[name]}, the sampler's)"

    group.add_argument("--steps", type=int, help=f"denoising steps {unset('steps')}")
    group.add_argument("--guidance", type=float, help=f"embedded guidance scale {unset('guidance')}")
    group.add_argument("--height", type=int, help=f"video height in pixels, a multiple of 16 {unset('height')}")
    group.add_argument("--width", type=int, help=f"video width in pixels, a multiple of 16 {unset('width')}")
    group.add_argument("--frames", type=int, help=f"frames per video, 4k+1 {unset('frames')}")
    group.add_argument("--fps", type=float, help="frame rate of the written videos (default: the adapter's training "
                                                 "fps, recorded beside it, else 24)")


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("report")
    group.add_argument("--out", type=Path, required=True, help="output folder (reruns reuse its stored scores)")
    group.add_argument("--gifs-per-cell", type=int, default=1,
                       help="sample GIFs per prompt and method on the page (default 1)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("videos")
    group.add_argument("--manifest", type=Path,
                       help="existing videos: a CSV/JSONL manifest (video,prompt[,method,...]), or a folder of "
                            "videos whose prompts are in <video>.txt sidecars (or --prompt); its subfolders are "
                            "methods")
    group.add_argument("--video-root", type=Path, help="folder the manifest's relative video paths start from "
                                                       "(default: the manifest's folder)")
    group.add_argument("--prompt", help="with a --manifest folder: the prompt of every video that has no .txt "
                                        "sidecar (default: none; such a video is an error)")
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
    page, failed = write_page(out_dir, title, rows, cells, methods, metrics, gifs_per_cell, row_labels)
    log(table)
    log(f"report: {page}")
    if failed:
        log(f"{len(failed)} of {len(rows)} videos have errors (see the errors column of per_video.csv and "
            f"the samples on {page.name})")
    return len(failed)


def run_holding_out(args: argparse.Namespace, command: str, body: Callable[[argparse.Namespace], int]) -> int:
    """`body(args)` while holding --out: two runs into one folder would sample and score into the
    same files, so a second one stops at once naming the holder."""
    try:
        with output_lock(args.out, command):
            return body(args)
    except OutputFolderInUse as error:
        raise SystemExit(f"{command}: {error}") from error


def report_failures(command: str, failed: int, total: int, out_dir: Path) -> int:
    """The exit status of an evaluation: 0, or 1 with one line on stderr saying how many videos failed
    and where to read why."""
    from ptta.evaluate.html_page import PAGE_NAME

    if not failed:
        return 0
    print(f"{command}: {failed} of {total} videos failed to score or to preview; see {out_dir / PAGE_NAME} "
          f"(and the errors column of {out_dir / 'per_video.csv'})", file=sys.stderr)
    return 1


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
        records = read_videos(args.manifest, args.video_root, args.prompt)
        return records, ordered_unique(r.method for r in records), []
    if args.prompt is not None:
        raise SystemExit("ptta evaluate: --prompt names the prompt of a --manifest folder's videos; to sample, "
                         "give the prompts with --prompts FILE")
    if not args.method:
        raise SystemExit("ptta evaluate: --model needs at least one --method NAME[=ADAPTER]")
    methods = [MethodSpec.parse(text) for text in args.method]
    for method in methods:
        method.sampler_arguments()  # a wrong path fails now, not after the first method has sampled
    records, notes = sample_protocol(args, methods, log)
    return records, [m.name for m in methods], notes


def run(args: argparse.Namespace) -> int:
    return run_holding_out(args, "ptta evaluate", _run)


def _run(args: argparse.Namespace) -> int:
    from ptta.evaluate.scorers.base import ScorerError

    try:
        scorers = build_scorers(args)
        records, methods, notes = collect_records(args)
    except (ManifestError, ScorerError, FileNotFoundError, ValueError) as error:
        raise SystemExit(f"ptta evaluate: {error}") from error
    failed = evaluate_records(records, scorers, args.out, "PTTA evaluation", methods,
                              gifs_per_cell=args.gifs_per_cell, notes=notes)
    return report_failures("ptta evaluate", failed, len(records), args.out)
