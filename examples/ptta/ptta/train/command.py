"""`ptta train --config FILE.yaml [--resume]`: fine-tune the adapter on the cached clips."""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import nullcontext

from ptta.cache.build import CacheError
from ptta.cache.command import config_file
from ptta.config import ConfigError, load_config
from ptta.output_lock import OutputFolderInUse, output_lock


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="training config YAML")
    parser.add_argument("--resume", nargs="?", const="latest", default=None, metavar="CHECKPOINT",
                        help="continue from the newest checkpoint in output_dir, or from the given checkpoint folder")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs still go to metrics.jsonl)")


def run(args: argparse.Namespace) -> int:
    from ptta.train.checkpoint import ResumeError
    from ptta.train.trainer import TrainingDivergedError, end_distributed, train

    try:
        config = load_config(config_file(args.config))
        # under torchrun the ranks of one run share the folder: the first holds it for all of them
        lock = output_lock(config.output_path, "ptta train") if os.environ.get("RANK", "0") == "0" else nullcontext()
        with lock:
            result = train(config, resume=args.resume, progress=not args.no_progress)
    except (ConfigError, CacheError, ResumeError, FileNotFoundError, TrainingDivergedError, OutputFolderInUse) as exc:
        print(f"ptta train: {exc}", file=sys.stderr)
        return 2
    finally:
        end_distributed()
    if os.environ.get("RANK", "0") != "0":
        return 0  # under torchrun every process gets here; one summary line is enough
    print(f"trained {result.steps} steps, last loss {result.last_loss:.4f}; adapter in {result.adapter_dir}"
          + (f"; diffusers LoRA {result.lora_path}" if result.lora_path else ""))
    return 0
