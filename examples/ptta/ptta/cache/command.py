"""`ptta cache --config FILE.yaml`: VAE latents and text embeddings of the curated clips."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ptta.cache.build import CacheError, build_cache, read_cache, skipped_clips
from ptta.cache.manifest import ManifestError
from ptta.config import ConfigError, load_config
from ptta.output_lock import OutputFolderInUse, output_lock


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="training config YAML (its data section says what to cache)")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete and rebuild data.cache_dir even if it was made from other inputs")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")


def config_file(path: str) -> str:
    """`path`, unless it is a folder: then a ConfigError that says so (load_config would call it missing)."""
    if Path(path).is_dir():
        raise ConfigError(f"--config {path}: is a directory; expected the training config YAML file")
    return path


def run(args: argparse.Namespace) -> int:

    try:
        config = load_config(config_file(args.config))
        # one run at a time per cache folder: two would write the same shards
        with output_lock(config.cache_path, "ptta cache"):
            cache_dir = build_cache(config, overwrite=args.overwrite, device=args.device)
            clips = read_cache(cache_dir)
    except (ConfigError, CacheError, ManifestError, FileNotFoundError, OutputFolderInUse) as exc:
        print(f"ptta cache: {exc}", file=sys.stderr)
        return 2
    skipped = skipped_clips(cache_dir)
    print(f"cached {len(clips)} clip(s) in {cache_dir}" + (f"; skipped {len(skipped)}" if skipped else ""))
    for entry in skipped:
        print(f"  skipped {entry['id']}: {entry['reason']}")
    return 0
