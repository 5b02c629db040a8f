"""`ptta make-tiny-model OUT`: write the embedded tiny HunyuanVideo as a diffusers directory."""

from __future__ import annotations

import argparse
import sys

from ptta.models.tiny_hunyuan_video import save_tiny_model


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", help="folder to create (a diffusers HunyuanVideoPipeline directory)")
    parser.add_argument("--overwrite", action="store_true", help="replace the folder if it exists")


def run(args: argparse.Namespace) -> int:

    try:
        path = save_tiny_model(args.out, overwrite=args.overwrite)
    except FileExistsError as exc:
        print(f"ptta make-tiny-model: {exc}", file=sys.stderr)
        return 2
    print(f"tiny HunyuanVideo written to {path}")
    return 0
