"""The `ptta` command: one sub-command per pipeline stage.

Each stage module exposes `add_arguments(parser)` and `run(args) -> int`. Stage modules keep heavy
imports (torch, diffusers, cv2) inside `run`, so building the parser stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from importlib import metadata

# sub-command -> (module, one-line help), in pipeline order: each stage folder has its command.py
COMMANDS: dict[str, tuple[str, str]] = {
    "curate": ("ptta.curate.command", "cut raw animation videos into scored, filtered, captioned 3-5 s clips"),
    "curate-merge": ("ptta.curate.merge_command", "merge the outputs of sharded `ptta curate` runs into one manifest"),
    "cache": ("ptta.cache.command", "cache VAE latents and text embeddings of the curated clips"),
    "train": ("ptta.train.command", "fine-tune HunyuanVideo with HydraLoRA (or LoRA) on the cache"),
    "sample": ("ptta.sample.command", "generate videos from prompts with a trained adapter"),
    "export": ("ptta.export.command", "write an adapter as a LoRA file for diffusers, PEFT, ComfyUI, musubi-tuner"),
    "evaluate": ("ptta.evaluate.command", "score videos per method (VideoScore, weight-free metrics), Table 2"),
    "ablate": ("ptta.evaluate.ablate", "compare HydraLoRA head counts N by VideoScore (Table 1)"),
    "demo": ("ptta.demo.command", "curate, cache, train and sample a small animation set on the tiny model"),
    "make-tiny-model": ("ptta.models.command", "write the embedded tiny HunyuanVideo to a folder"),
}


def versions() -> str:
    """ptta's and hydralora's installed versions, from their metadata (importing hydralora loads torch)."""
    found = []
    for name in ("ptta", "hydralora"):
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return ", ".join(found)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ptta", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=versions(),
                        help="print ptta's and hydralora's versions and exit")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        sub_parser.set_defaults(_module=module_name)
        importlib.import_module(module_name).add_arguments(sub_parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(importlib.import_module(args._module).run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
