"""`ptta export ADAPTER_OR_RUN_DIR --format F --out FILE [--heads w1,...,wN]`."""

from __future__ import annotations

import argparse
import sys

from ptta.torch_runtime import DTYPES

FORMATS = ("diffusers", "peft", "original", "kohya")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("adapter", help="HydraLoRA adapter folder, or a `ptta train` output folder")
    parser.add_argument("--format", required=True, choices=FORMATS,
                        help="diffusers: pipe.load_lora_weights; peft: PeftModel.from_pretrained folder; original: "
                             "HunyuanVideo's original layout (diffusion-pipe; ComfyUI); kohya: lora_unet_* keys "
                             "(musubi-tuner; ComfyUI)")
    parser.add_argument("--out", required=True,
                        help="file to write (a folder for peft; a folder or a name without suffix gets a default "
                             "file name)")
    parser.add_argument("--heads", help="head weights w1,...,wN pinned in every layer: required for a router "
                                        "adapter, replaces the mixing of a learned/fixed one")
    parser.add_argument("--model", default=None,
                        help="HunyuanVideo directory or 'tiny'; read (config only) when the original layout "
                             "needs the MLP width and the adapter does not show it (default: the model in the "
                             "run's config.yaml)")
    parser.add_argument("--dtype", default="float32", choices=[d for d in DTYPES if d != "auto"],
                        help="dtype of the written tensors (default float32)")


def run(args: argparse.Namespace) -> int:
    from hydralora import HydraMergeError

    from ptta.export.lora import export_adapter

    try:
        result = export_adapter(args.adapter, args.out, args.format, heads=args.heads, model=args.model,
                                dtype=args.dtype)
    except (ValueError, FileNotFoundError, HydraMergeError) as exc:
        print(f"ptta export: {exc}", file=sys.stderr)
        return 2
    for line in result.report():
        print(line)
    return 0
