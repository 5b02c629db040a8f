"""`ptta ablate`: the number of HydraLoRA heads N against VideoScore (the paper's Table 1).

Each N is one method. Its videos come from a manifest whose `method` column holds N ("4", "N4" or
"heads4"), or are sampled from an adapter per N:

    ptta ablate --heads 2,4,8,12 --model /models/HunyuanVideo --adapter-pattern 'runs/heads{N}' \\
        --out runs/ablate --videoscore /models/VideoScore-v1.1

An adapter folder that does not exist yet is trained first when --train-config gives the training
config (everything as in the main run but N, as in the paper), through `ptta.train.trainer.train`.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path

from ptta.config import load_config, validate
from ptta.evaluate.command import (
    add_generation_arguments,
    add_report_arguments,
    add_scorer_arguments,
    build_scorers,
    evaluate_records,
    report_failures,
    run_holding_out,
    sample_protocol,
)
from ptta.evaluate.generation import MethodSpec
from ptta.evaluate.protocol import ManifestError, read_videos
from ptta.rendering import resolve_adapter_dir

DEFAULT_HEADS = "2,4,8,12"
PAPER_DEFAULT_N = 4


def parse_heads(text: str) -> list[int]:
    try:
        heads = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--heads {text!r}: expected comma-separated integers such as 2,4,8,12") from None
    if not heads or min(heads) < 1 or len(set(heads)) != len(heads):
        raise ValueError(f"--heads {text!r}: need distinct head counts >= 1")
    return heads


def method_name(heads: int) -> str:
    return f"N{heads}"


def heads_of(method: str) -> int:
    """4 from "4", "N4" or "heads4" (a manifest's method column)."""
    match = re.fullmatch(r"(?:n|heads)?\s*(\d+)", method.strip(), flags=re.IGNORECASE)
    if not match:
        raise ValueError(f"method {method!r}: in an ablation manifest the method is the head count, e.g. 4 or N4")
    return int(match.group(1))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("ablation")
    group.add_argument("--heads", default=DEFAULT_HEADS, help=f"head counts N to compare (default {DEFAULT_HEADS})")
    group.add_argument("--default-heads", type=int, default=PAPER_DEFAULT_N,
                       help=f"N marked (Default) in the table (default {PAPER_DEFAULT_N}, the paper's)")
    group.add_argument("--manifest", type=Path,
                       help="existing videos: a CSV/JSONL manifest whose method column is N, or a folder with one "
                            "subfolder per N (N4/, heads8/ ...) and <video>.txt prompt sidecars")
    group.add_argument("--video-root", type=Path, help="folder the manifest's relative video paths start from "
                                                       "(default: the manifest's folder)")
    group.add_argument("--adapter-pattern", default="{out}/adapters/heads{N}",
                       help="adapter folder per N, with {N} (and {out}) filled in (default {out}/adapters/heads{N})")
    group.add_argument("--train-config", type=Path,
                       help="training config used to train the adapters that do not exist yet (N overridden; "
                            "default: none, a missing adapter is an error)")
    add_generation_arguments(parser)
    add_scorer_arguments(parser)
    add_report_arguments(parser)


def train_adapter(train_config: Path, heads: int, output_dir: Path) -> Path:
    """Train one adapter with N heads into `output_dir` with `ptta.train.trainer.train`; everything
    but N and the output folder comes from the training config. Returns the adapter folder."""
    from ptta.train.trainer import train

    config = load_config(train_config)
    config.adapter.num_heads = heads
    config.output_dir = str(output_dir.resolve())
    validate(config)  # e.g. heads.names must still match N when heads come from captions
    return train(config).adapter_dir


def adapters_per_heads(args: argparse.Namespace, heads: list[int]) -> dict[int, Path]:
    """N -> adapter folder, training the missing ones when --train-config is given."""
    folders = {n: Path(args.adapter_pattern.format(N=n, out=args.out)) for n in heads}
    missing = []
    for n, folder in folders.items():
        try:
            folders[n] = resolve_adapter_dir(folder)
        except FileNotFoundError:
            missing.append(n)
    if missing and args.train_config is None:
        raise SystemExit("ptta ablate: no adapter for N = " + ", ".join(
            f"{n} ({folders[n]})" for n in missing) + "; train them or give --train-config")
    for n in missing:
        print(f"N={n}: training an adapter into {folders[n]}", flush=True)
        folders[n] = train_adapter(args.train_config, n, folders[n])
    return folders


def collect_records(args: argparse.Namespace, heads: list[int]) -> tuple[list, list[str]]:
    """Records per N from --manifest, or sampled from one adapter per N; plus sampling-failure notes."""
    if (args.manifest is None) == (args.model is None):
        raise SystemExit("ptta ablate: give either --manifest (existing videos) or --model (sample per N)")
    if args.manifest is not None:
        records = [dataclasses.replace(r, method=method_name(heads_of(r.method)))
                   for r in read_videos(args.manifest, args.video_root)]
        unknown = sorted({r.method for r in records} - {method_name(n) for n in heads})
        if unknown:
            raise SystemExit(f"ptta ablate: {args.manifest} has videos for {unknown}, not in --heads {args.heads}")
        return records, []
    folders = adapters_per_heads(args, heads)
    return sample_protocol(args, [MethodSpec(method_name(n), folders[n]) for n in heads])


def run(args: argparse.Namespace) -> int:
    return run_holding_out(args, "ptta ablate", _run)


def _run(args: argparse.Namespace) -> int:
    from ptta.evaluate.scorers.base import ScorerError

    try:
        heads = parse_heads(args.heads)
        scorers = build_scorers(args)
        records, notes = collect_records(args, heads)
    except (ManifestError, ScorerError, FileNotFoundError, ValueError, RuntimeError) as error:
        raise SystemExit(f"ptta ablate: {error}") from error
    present = {r.method for r in records}
    methods = [method_name(n) for n in heads if method_name(n) in present]
    labels = {method_name(n): f"{n} (Default)" if n == args.default_heads else str(n) for n in heads}
    failed = evaluate_records(records, scorers, args.out, "PTTA ablation: number of B matrices N", methods,
                              row_header="B matrices nums N", row_labels=labels, gifs_per_cell=args.gifs_per_cell,
                              notes=notes)
    return report_failures("ptta ablate", failed, len(records), args.out)
