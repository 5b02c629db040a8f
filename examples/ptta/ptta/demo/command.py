"""`ptta demo --out DIR`: the whole PTTA chain on a small animation set and the tiny model, on a CPU."""

from __future__ import annotations

import argparse
import sys

from ptta.demo.run import DemoError, DemoSettings, run_demo


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = DemoSettings(out_dir=".")
    parser.add_argument("--out", required=True, help="run folder to create (summary.html is written there)")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete the run folder first if it exists (default: refuse a non-empty folder)")
    parser.add_argument("--train-steps", type=int, default=defaults.train_steps,
                        help=f"optimiser steps (default {defaults.train_steps})")
    parser.add_argument("--sample-steps", type=int, default=defaults.sample_steps,
                        help=f"denoising steps per sample (default {defaults.sample_steps})")
    parser.add_argument("--model", default=defaults.model,
                        help="'tiny' (default) or a diffusers HunyuanVideo directory (then use a GPU and larger sizes)")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bars (for logs; default: cache, train and sample show one each)")


def run(args: argparse.Namespace) -> int:

    settings = DemoSettings(out_dir=args.out, train_steps=args.train_steps, sample_steps=args.sample_steps,
                            model=args.model, overwrite=args.overwrite, progress=not args.no_progress)
    try:
        page = run_demo(settings)
    except DemoError as exc:
        print(f"ptta demo: {exc}", file=sys.stderr)
        return 2
    print(f"demo finished: open {page}")
    return 0
