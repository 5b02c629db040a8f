"""What is evaluated: one `VideoRecord` per video (file, prompt, method, prompt id, sample, seed).

Records come either from a plan (methods x prompts x samples, paper protocol: 20 prompts, 10
samples each, the same seeds for every method so that methods are compared on the same noise) or
from a manifest describing a folder of existing videos:

    video,prompt,method[,prompt_id,sample,seed]          (CSV with a header, or JSONL objects)
    base/f01_s00.mp4,"anime girl, reading books, ...",base

Relative video paths are resolved against the manifest's folder (or `video_root`). Without a
`method` column every video belongs to one method; a missing `prompt_id` is derived from the
prompt text (p01, p02, ... in order of first appearance) and a missing `sample` counts the
videos of each (method, prompt).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from ptta.tables import read_table

from ptta.evaluate.prompts import EvalPrompt

MANIFEST_NAME = "manifest.csv"
MANIFEST_COLUMNS = ("video", "prompt", "method", "prompt_id", "sample", "seed")


class ManifestError(ValueError):
    """A manifest row cannot be used; the message names the file and the row."""


@dataclass(frozen=True)
class VideoRecord:
    video: Path
    prompt: str
    method: str
    prompt_id: str
    sample: int
    seed: int | None = None


def plan_videos(methods: list[str], prompts: list[EvalPrompt], samples: int, base_seed: int,
                video_dir: Path) -> list[VideoRecord]:
    """Every (method, prompt, sample): `video_dir/<method>/<prompt id>_s<sample>.mp4`, seed base + sample."""
    if samples < 1:
        raise ValueError(f"samples: need at least 1 per prompt, got {samples}")
    bad = [m for m in methods if not m or "/" in m or "\\" in m or m.startswith(".")]
    if bad:
        raise ValueError(f"method names become folder names; these cannot: {bad}")
    if len(set(methods)) != len(methods):
        raise ValueError(f"duplicate method names: {methods}")
    return [
        VideoRecord(video_dir / method / f"{prompt.id}_s{sample:02d}.mp4", prompt.text, method, prompt.id,
                    sample, base_seed + sample)
        for method in methods for prompt in prompts for sample in range(samples)
    ]


def _optional_int(path: Path, number: int, row: dict, key: str) -> int | None:
    value = row.get(key)
    if value is None or str(value).strip() == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ManifestError(f"{path}:{number}: '{key}' must be an integer, got {value!r}") from None


def read_manifest(path: str | Path, video_root: str | Path | None = None,
                  default_method: str = "videos") -> list[VideoRecord]:
    """Records for a folder of existing videos (see the module docstring for the columns)."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    root = Path(video_root) if video_root is not None else path.parent
    prompt_ids: dict[str, str] = {}
    counts: dict[tuple[str, str], int] = {}
    records, seen = [], {}
    for number, row in read_table(path, ManifestError):
        video, prompt = str(row.get("video") or "").strip(), str(row.get("prompt") or "").strip()
        if not video or not prompt:
            raise ManifestError(f"{path}:{number}: every row needs 'video' and 'prompt'")
        method = str(row.get("method") or "").strip() or default_method
        prompt_id = (str(row.get("prompt_id") or "").strip()
                     or prompt_ids.setdefault(prompt, f"p{len(prompt_ids) + 1:02d}"))
        sample = _optional_int(path, number, row, "sample")
        if sample is None:
            sample = counts.get((method, prompt_id), 0)
        counts[(method, prompt_id)] = max(counts.get((method, prompt_id), 0), sample + 1)
        file = Path(video) if Path(video).is_absolute() else root / video
        if file in seen:
            raise ManifestError(f"{path}:{number}: video {video} already listed on line {seen[file]}")
        seen[file] = number
        records.append(VideoRecord(file, prompt, method, prompt_id, sample, _optional_int(path, number, row, "seed")))
    if not records:
        raise ManifestError(f"{path}: no videos listed")
    return records


def write_manifest(records: list[VideoRecord], path: Path) -> Path:
    """A CSV manifest with video paths relative to its folder, readable by `read_manifest`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=MANIFEST_COLUMNS)
        writer.writeheader()
        for r in records:
            video = r.video.relative_to(path.parent) if r.video.is_relative_to(path.parent) else r.video
            writer.writerow({"video": video.as_posix(), "prompt": r.prompt, "method": r.method,
                             "prompt_id": r.prompt_id, "sample": r.sample, "seed": "" if r.seed is None else r.seed})
    return path


def ordered_unique(values) -> list:
    """Values in order of first appearance (methods and prompts keep the order they were given in)."""
    return list(dict.fromkeys(values))
