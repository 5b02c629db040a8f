"""Make the planned videos that do not exist yet, through the sampling module (`generate_videos`).

Sampling itself lives in `ptta.sample.generate`; this only decides what is missing and puts each
result where the plan wants it. `generate_videos` makes every (prompt, seed) pair of the lists it
is given, prompt-major, so per method it gets the prompts and seeds that still lack a video; the
few extra pairs that a partial rerun can produce duplicate existing videos (same seed, same
result) and are dropped.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ptta.evaluate.protocol import VideoRecord, ordered_unique
from ptta.sample.generate import generate_videos

STAGING_DIR = "_generating"


@dataclass(frozen=True)
class MethodSpec:
    """A method to sample: its name, and an adapter folder, an exported LoRA file, or neither (base)."""
    name: str
    weights: Path | None = None

    @classmethod
    def parse(cls, text: str) -> MethodSpec:
        """"NAME" (the base model) or "NAME=PATH" (a HydraLoRA adapter folder or a LoRA file)."""
        name, _, path = text.partition("=")
        if not name.strip():
            raise ValueError(f"--method {text!r}: expected NAME or NAME=ADAPTER_DIR_OR_LORA_FILE")
        return cls(name.strip(), Path(path.strip()) if path.strip() else None)

    def sampler_arguments(self) -> dict:
        if self.weights is None:
            return {}
        if self.weights.is_dir():
            return {"adapter": self.weights}
        if self.weights.is_file():
            return {"lora": self.weights}
        raise FileNotFoundError(f"--method {self.name}={self.weights}: no such adapter folder or LoRA file")


def generate_missing(records: list[VideoRecord], methods: list[MethodSpec], model: str, options: dict,
                     log: Callable[[str], None] = print) -> dict[str, str]:
    """Sample every planned video that is missing; returns method -> error for methods that failed
    (their videos stay missing and are reported as such; the other methods go on)."""

    failures = {}
    for method in methods:
        missing = [r for r in records if r.method == method.name and not r.video.is_file()]
        if not missing:
            continue
        prompts = ordered_unique(r.prompt for r in missing)
        seeds = ordered_unique(r.seed for r in missing)
        staging = missing[0].video.parent / STAGING_DIR
        log(f"{method.name}: sampling {len(missing)} videos ({len(prompts)} prompts x {len(seeds)} seeds)")
        try:
            paths = generate_videos(prompts, staging, model=model, seeds=seeds, gif=False,
                                    **method.sampler_arguments(), **options)
        except Exception as error:  # noqa: BLE001 - one method failing must not stop the others
            failures[method.name] = f"{type(error).__name__}: {error}"
            log(f"{method.name}: sampling failed: {failures[method.name]}")
            continue
        if len(paths) != len(prompts) * len(seeds):
            failures[method.name] = (f"generate_videos returned {len(paths)} videos for {len(prompts)} prompts x "
                                     f"{len(seeds)} seeds")
            log(f"{method.name}: {failures[method.name]}")
            continue
        made = {(prompt, seed): paths[i * len(seeds) + j]
                for i, prompt in enumerate(prompts) for j, seed in enumerate(seeds)}
        for record in missing:
            record.video.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(made[(record.prompt, record.seed)]), record.video)
        shutil.rmtree(staging)
    return failures
