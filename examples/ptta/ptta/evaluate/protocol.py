"""What is evaluated: one `VideoRecord` per video (file, prompt, method, prompt id, sample, seed).

Records come either from a plan (methods x prompts x samples, paper protocol: 20 prompts, 10
samples each, the same seeds for every method so that methods are compared on the same noise) or
from a manifest describing a folder of existing videos:

    video,prompt,method[,prompt_id,sample,seed]          (CSV with a header, or JSONL objects)
    base/f01_s00.mp4,"anime girl, reading books, ...",base

Relative video paths are resolved against the manifest's folder (or `video_root`), and kept
absolute from then on, so the records mean the same files whatever the working directory. Without
a `method` column every video belongs to one method; a missing `prompt_id` is derived from the
prompt text (p01, p02, ... in order of first appearance) and a missing `sample` counts the
videos of each (method, prompt).

A folder of videos needs no manifest (`read_video_folder`): its videos are one method, each of its
subfolders another (named after it), and each video's prompt comes from a `<video>.txt` sidecar
beside it, else from the `samples.jsonl` that `ptta sample` writes, else from one prompt given for
all. `read_videos` takes either.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from ptta.evaluate.prompts import EvalPrompt
from ptta.tables import read_table

MANIFEST_NAME = "manifest.csv"
MANIFEST_COLUMNS = ("video", "prompt", "method", "prompt_id", "sample", "seed")
# what a folder given as --manifest is searched for (GIFs are left out: `ptta sample` writes one
# beside each mp4 as a preview)
VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".webm", ".avi", ".m4v")
SAMPLES_INDEX = "samples.jsonl"  # `ptta sample`'s record of each video's prompt and seed


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


def _video_root(path: Path, video_root: str | Path | None) -> Path:
    """The folder relative video paths start from, absolute: `video_root`, else the manifest's folder."""
    if video_root is None:
        return path.parent.absolute()
    root = Path(video_root)
    if root.is_file():
        raise ManifestError(f"--video-root {root}: is a file; expected the folder the videos' paths start from")
    return root.absolute()


def read_videos(path: str | Path, video_root: str | Path | None = None, prompt: str | None = None,
                default_method: str = "videos") -> list[VideoRecord]:
    """Records from a manifest file (`read_manifest`) or a folder of videos (`read_video_folder`)."""
    path = Path(path)
    if path.is_dir():
        if video_root is not None:
            raise ManifestError(f"{path} is a folder of videos: --video-root applies to a manifest file only")
        return read_video_folder(path, prompt, default_method)
    if prompt is not None:
        raise ManifestError(f"{path}: --prompt is for a folder of videos; a manifest gives each video's prompt")
    return read_manifest(path, video_root, default_method)


def read_manifest(path: str | Path, video_root: str | Path | None = None,
                  default_method: str = "videos") -> list[VideoRecord]:
    """Records for a folder of existing videos (see the module docstring for the columns)."""
    path = Path(path)
    if path.is_dir():
        raise ManifestError(f"{path}: is a directory, not a manifest file (CSV or JSONL)")
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    root = _video_root(path, video_root)
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


def _prompt_index(folder: Path) -> dict[str, dict]:
    """Video file name -> its `ptta sample` record (prompt, seed), from the folder's samples.jsonl."""
    index = folder / SAMPLES_INDEX
    if not index.is_file():
        return {}
    entries = {}
    for number, line in enumerate(index.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as error:
            raise ManifestError(f"{index}:{number}: not valid JSON ({error.msg})") from None
        if isinstance(entry, dict) and entry.get("video") and entry.get("prompt"):
            entries[Path(str(entry["video"])).name] = entry
    return entries


def read_video_folder(folder: str | Path, prompt: str | None = None,
                      default_method: str = "videos") -> list[VideoRecord]:
    """Records for the videos of a folder (see the module docstring): those directly in it belong to
    `default_method`, those in a subfolder to a method named after it. A video's prompt is its
    `<video>.txt` sidecar, else its entry in the folder's samples.jsonl, else `prompt`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ManifestError(f"{folder}: no such folder")
    folder = folder.absolute()
    groups = [(default_method, folder)] + [
        (sub.name, sub) for sub in sorted(folder.iterdir())
        if sub.is_dir() and not sub.name.startswith((".", "_"))]
    records, unprompted = [], []
    prompt_ids: dict[str, str] = {}
    counts: dict[tuple[str, str], int] = {}
    for method, directory in groups:
        index = _prompt_index(directory)
        for video in sorted(p for p in directory.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file()):
            sidecar = video.with_suffix(".txt")
            text = " ".join(sidecar.read_text().split()) if sidecar.is_file() else ""
            entry = index.get(video.name, {})
            text = text or str(entry.get("prompt") or "").strip() or (prompt or "").strip()
            if not text:
                unprompted.append(video)
                continue
            prompt_id = prompt_ids.setdefault(text, f"p{len(prompt_ids) + 1:02d}")
            sample = counts.get((method, prompt_id), 0)
            counts[(method, prompt_id)] = sample + 1
            seed = entry.get("seed")
            records.append(VideoRecord(video, text, method, prompt_id, sample,
                                       seed if isinstance(seed, int) else None))
    if unprompted:
        names = ", ".join(str(v.relative_to(folder)) for v in unprompted[:5])
        more = f" and {len(unprompted) - 5} more" if len(unprompted) > 5 else ""
        manifests = [p.name for p in sorted(folder.glob("*")) if p.suffix.lower() in (".csv", ".jsonl")
                     and p.name != SAMPLES_INDEX]
        hint = f", or pass the manifest itself (--manifest {folder / manifests[0]})" if manifests else ""
        raise ManifestError(f"{folder}: no prompt for {len(unprompted)} video(s) ({names}{more}): write each "
                            f"video's prompt into a .txt file beside it ({unprompted[0].stem}.txt for "
                            f"{unprompted[0].name}) or give one prompt for all with --prompt{hint}")
    if not records:
        raise ManifestError(f"{folder}: no videos ({', '.join(VIDEO_SUFFIXES)}) in it or its subfolders")
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
