"""`ptta cache`: VAE latents and text embeddings of every selected clip, in safetensors shards.

Layout of the cache folder:
    cache_info.json                   what the cache was made from (model, buckets, fps, dtypes,
                                      prompt length limit, clip list hash)
    shards/shard-00000.safetensors    per clip `<id>/latents` (C, T, H/8, W/8), already multiplied by
                                      the VAE scaling factor, in the VAE's dtype (lossless);
                                      `<id>/prompt_embeds` (L, D) Llama hidden_states[-3] of the
                                      templated caption, padding removed, and `<id>/pooled` (P,) CLIP
                                      pooled output, both in the text encoders' dtype (bf16 on a
                                      GPU, fp32 on a CPU).
                                      Metadata "clips" lists id, caption, bucket and source fps;
                                      "skipped" the clips that could not be used.

A clip is read from its written file (`clip_path`) while that exists, else from its source as the
frame range the manifest gives (`ptta curate` writes no clip files by default): each source is
opened once for its consecutive clips, which are decoded in one forward pass, and the frames are
those the written clip would hold (ptta.curate.clip_source). A source that is missing or changed
since curation stops the run with its name, before any model is loaded where that can be seen
from its size. Either way a clip's bucket is chosen from its frame count, rate and size first, and
only the frames the bucket keeps are scaled and converted to RGB (ClipFrames).

Shard i holds clips [i*shard_size, (i+1)*shard_size) of the manifest's selection and is written
to a temporary name then renamed, so an interrupted run resumes at the first missing shard.
Latents are the mode of the VAE posterior, so the cache is deterministic. Every clip is first
resampled to `data.fps` (nearest source frame per output time), so a 30 or 60 fps source keeps
its motion speed. Readers convert every tensor to fp32, so caches of format 1 (fp32 embeddings,
bf16 latents, no fps resampling) still train.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ptta.cache.buckets import Bucket, choose_bucket, fit_clip, middle_frames, resampled_positions
from ptta.cache.manifest import SelectedClip, read_selected_clips
from ptta.config import TrainConfig
from ptta.curate.read_ahead import read_ahead
from ptta.models.hunyuan_video import (
    load_pipeline,
    prompt_template,
    resolve_model_dir,
    resolve_vae_dtype,
    text_encoder_dtype,
)
from ptta.output_lock import empty_folder
from ptta.tables import write_text_atomic
from ptta.torch_runtime import resolve_device

if TYPE_CHECKING:  # numpy is imported where it is used
    import numpy as np

CACHE_INFO_FILE = "cache_info.json"
SHARD_DIR = "shards"
CACHE_FORMAT_VERSION = 2
# Clips read, resampled and fitted to their bucket on a background thread ahead of the VAE (decoding,
# libswscale and OpenCV release the GIL, as the VAE on a GPU does): reading overlaps encoding, so a
# clip read from its source (a larger frame to decode and scale) costs no throughput while the VAE
# is the slower step. 0 reads in line. Holds up to this many bucket-sized clips more in memory.
READ_AHEAD_CLIPS = 1


class CacheError(ValueError):
    """The cache folder does not match the config, or holds nothing to train on."""


@dataclass(frozen=True)
class CachedClip:
    id: str
    caption: str
    bucket: Bucket
    shard: Path


def shard_path(cache_dir: Path, index: int) -> Path:
    return cache_dir / SHARD_DIR / f"shard-{index:05d}.safetensors"


def build_cache(config: TrainConfig, overwrite: bool = False, device: str | None = None, progress: bool = True) -> Path:
    """Cache every selected clip of `config.data.manifest` into `config.data.cache_dir`; returns the folder."""
    from tqdm import tqdm

    from ptta.curate.clip_source import SourceClipReader

    clips = read_selected_clips(config.manifest_path)
    model_dir = resolve_model_dir(config.model_spec())
    cache_dir = config.cache_path
    device = resolve_device(device)
    text_dtype, vae_dtype = text_encoder_dtype(device), resolve_vae_dtype(config.vae_dtype, device)
    info = _cache_info(config, clips, model_dir, text_dtype, vae_dtype)
    _prepare_cache_dir(cache_dir, info, overwrite)

    shard_size = config.data.shard_size
    shards = [clips[i:i + shard_size] for i in range(0, len(clips), shard_size)]
    todo = [i for i in range(len(shards)) if not shard_path(cache_dir, i).is_file()]
    if not todo:
        return cache_dir
    _check_sources([clip for i in todo for clip in shards[i]])
    pipe = load_pipeline(model_dir, text_dtype, vae_dtype=vae_dtype, transformer=None).to(device)
    # tiles keep the VAE's memory bounded for long, large clips; small clips are not tiled
    pipe.vae.enable_tiling()
    template = prompt_template(model_dir)

    bar = tqdm(total=sum(len(shards[i]) for i in todo), desc="cache", unit="clip", disable=not progress)
    with SourceClipReader() as reader:
        prepared = _prepared_clips([clip for i in todo for clip in shards[i]], config, reader)
        if READ_AHEAD_CLIPS:
            prepared = read_ahead(prepared, READ_AHEAD_CLIPS, name="cache-read")
        with closing(prepared):
            for index in todo:
                _build_shard(pipe, [next(prepared) for _ in shards[index]], index, config, device, template,
                             text_dtype, bar)
    bar.close()
    return cache_dir


def _prepared_clips(clips: list[SelectedClip], config: TrainConfig, reader) -> Iterator[tuple]:
    """(clip, (video, bucket, source fps) or the reason it cannot be used) for each clip, in order;
    a missing or changed source ends it with a CacheError (every clip of it would be lost)."""
    from av.error import FFmpegError

    from ptta.curate.clip_source import ClipSourceError

    for clip in clips:
        try:
            yield clip, _prepare_clip(clip, config, reader)
        except ClipSourceError as exc:
            raise CacheError(str(exc)) from None
        except (OSError, ValueError, FFmpegError) as exc:
            yield clip, exc


def _build_shard(pipe, prepared: list[tuple], index: int, config: TrainConfig, device, template, text_dtype,
                 bar) -> None:
    """Encode the prepared clips into shard `index`; a clip that cannot be used is listed as skipped."""
    from ptta.models.text_encoders import encode_prompts

    tensors, records, skipped = {}, [], []
    usable = []
    for clip, ready in prepared:
        if isinstance(ready, Exception):
            skipped.append({"id": clip.id, "reason": str(ready)})
            bar.update()
            continue
        video, bucket, source_fps = ready
        latents = _vae_encode(pipe, video, device)
        tensors[f"{clip.id}/latents"] = latents
        records.append({"id": clip.id, "caption": clip.caption, "source_fps": source_fps,
                        "bucket": [bucket.frames, bucket.height, bucket.width]})
        usable.append(clip)
        bar.update()
    embeddings = encode_prompts(pipe, [c.caption for c in usable], template, config.data.max_sequence_length, device)
    for clip, (prompt_embeds, pooled) in zip(usable, embeddings):
        # the text encoders' own dtype (bf16 on a GPU: half of fp32 at no loss; fp32 on a CPU), so
        # training sees exactly the embeddings validation and `ptta sample` encode on that device
        tensors[f"{clip.id}/prompt_embeds"] = prompt_embeds.to(text_dtype)
        tensors[f"{clip.id}/pooled"] = pooled.to(text_dtype)
    _write_shard(shard_path(config.cache_path, index), tensors, records, skipped)


def read_cache(cache_dir: str | Path) -> list[CachedClip]:
    """Every cached clip, in shard order; CacheError if the folder is not a finished cache."""
    from safetensors import safe_open

    cache_dir = Path(cache_dir)
    info_path = cache_dir / CACHE_INFO_FILE
    if not info_path.is_file():
        raise CacheError(f"{cache_dir} is not a ptta cache (no {CACHE_INFO_FILE}); run `ptta cache` first")
    info = json.loads(info_path.read_text())
    if info.get("format_version", 1) > CACHE_FORMAT_VERSION:
        raise CacheError(f"{info_path}: cache format {info['format_version']} was written by a newer ptta "
                         f"(this one reads formats up to {CACHE_FORMAT_VERSION})")
    clips = []
    for index in range(info["num_shards"]):
        path = shard_path(cache_dir, index)
        if not path.is_file():
            raise CacheError(f"{path} is missing: the cache is unfinished; run `ptta cache` again to complete it")
        with safe_open(str(path), framework="pt") as handle:
            records = json.loads(handle.metadata()["clips"])
        clips += [CachedClip(r["id"], r["caption"], Bucket(*r["bucket"]), path) for r in records]
    if not clips:
        raise CacheError(f"{cache_dir}: no clip could be cached (see the 'skipped' lists of its shards)")
    return clips


def skipped_clips(cache_dir: str | Path) -> list[dict]:
    """[{id, reason}] of the clips the cache could not use (too short, unreadable)."""
    from safetensors import safe_open

    out = []
    for path in sorted((Path(cache_dir) / SHARD_DIR).glob("shard-*.safetensors")):
        with safe_open(str(path), framework="pt") as handle:
            out += json.loads(handle.metadata()["skipped"])
    return out


@dataclass(frozen=True)
class ClipFrames:
    """A clip whose frame count, rate and size are known and whose RGB frames are made on demand:
    only the frames its bucket keeps are scaled and converted (a 97-frame bucket of a 5 s clip
    leaves 23 of 120, the 9-frame buckets of the tiny model 111)."""

    count: int
    fps: float
    size: tuple[int, int]  # (width, height)
    label: str  # what the frames are read from, for messages
    rgb: Callable[[Sequence[int]], np.ndarray]  # positions -> (len(positions), H, W, 3) uint8


def open_clip(clip: SelectedClip, reader) -> ClipFrames:
    """The clip from its written file while that exists, else from its source through `reader` (a
    curate.clip_source.SourceClipReader). A written clip is decoded here; a frame range when its
    frames are asked for."""
    from ptta.curate.clip_source import ClipAddress, written_rate
    from ptta.video_io import decode_video

    if clip.path is not None and (clip.path.is_file() or clip.address is None):
        if not clip.path.is_file():
            raise FileNotFoundError(f"clip file {clip.path} does not exist")
        decoded, fps = decode_video(clip.path)  # ValueError naming the file when nothing decodes

        def written_rgb(positions: Sequence[int]) -> np.ndarray:
            import numpy as np

            # as video_io.read_video converts every frame
            return np.stack([decoded[p].to_ndarray(format="rgb24") for p in positions])

        return ClipFrames(len(decoded), fps, (decoded[0].width, decoded[0].height), str(clip.path), written_rgb)
    address = ClipAddress.from_row({**clip.address, "id": clip.id})
    label = f"clip {clip.id} (frames {address.first_frame}-{address.first_frame + address.source_frames - 1} of {address.source})"
    return ClipFrames(address.frames, written_rate(address.fps), address.size, label,
                      lambda positions: reader.read_rgb(address, positions)[0])


def read_clip_frames(clip: SelectedClip, reader) -> tuple[np.ndarray, float, str]:
    """(every RGB frame (N, H, W, 3), the clip's frame rate, what they were read from) of open_clip."""
    frames = open_clip(clip, reader)
    return frames.rgb(range(frames.count)), frames.fps, frames.label


def _check_sources(clips: list[SelectedClip]) -> None:
    """CacheError naming the sources (of clips without a file) that are gone or changed in size."""
    problems = {}
    for clip in clips:
        if clip.address is None or clip.path is not None and clip.path.is_file():
            continue
        source = Path(clip.address["source"])
        size = (clip.address.get("source_signature") or {}).get("size")
        if source in problems:
            continue
        if not source.is_file():
            problems[source] = f"{source} does not exist"
        elif size is not None and source.stat().st_size != size:
            problems[source] = f"{source} changed since it was curated (size {size} -> {source.stat().st_size})"
    if problems:
        listed = "; ".join(list(problems.values())[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise CacheError(f"the sources of clips that were not written (read from their sources) must be there as "
                         f"they were curated: {listed}. Restore them, or curate them again")


def _prepare_clip(clip: SelectedClip, config: TrainConfig, reader) -> tuple[np.ndarray, Bucket, float]:
    """(the clip's frames at data.fps fitted to its bucket, (F, H, W, 3) uint8; the bucket; the
    clip's own frame rate). Only the frames the bucket keeps are converted (ClipFrames)."""
    frames = open_clip(clip, reader)
    positions = resampled_positions(frames.count, frames.fps, config.data.fps)
    width, height = frames.size
    bucket = choose_bucket(len(positions), height, width, config.data.frame_buckets, config.data.resolution_buckets)
    if bucket is None:
        raise ValueError(f"{frames.label}: {len(positions)} frames at {config.data.fps:g} fps (source "
                         f"{frames.fps:g} fps), fewer than the smallest frame bucket {min(config.data.frame_buckets)}")
    kept = positions[middle_frames(len(positions), bucket)]
    return fit_clip(frames.rgb(kept.tolist()), bucket), bucket, frames.fps


def _vae_encode(pipe, frames: np.ndarray, device):
    """Latents of (F, H, W, 3) uint8 frames, in the VAE's dtype."""
    import torch

    video = torch.from_numpy(frames).permute(3, 0, 1, 2)[None]  # (1, 3, F, H, W)
    video = (video.to(device=device, dtype=torch.float32) / 127.5 - 1.0).to(pipe.vae.dtype)
    with torch.no_grad():
        latents = pipe.vae.encode(video).latent_dist.mode() * pipe.vae.config.scaling_factor
    return latents[0].cpu().contiguous()


def _cache_info(config: TrainConfig, clips: list[SelectedClip], model_dir: Path, text_dtype, vae_dtype) -> dict:
    settings = {
        "format_version": CACHE_FORMAT_VERSION,
        "model": str(model_dir.resolve()),
        "manifest": str(config.manifest_path),
        "frame_buckets": config.data.frame_buckets,
        "resolution_buckets": config.data.resolution_buckets,
        "fps": config.data.fps,
        "max_sequence_length": config.data.max_sequence_length,
        # resolved for the device, so a resumed run on another kind of device does not mix dtypes
        "vae_dtype": str(vae_dtype).removeprefix("torch."),
        "text_encoder_dtype": str(text_dtype).removeprefix("torch."),
        "shard_size": config.data.shard_size,
        "clips": [[c.id, c.key(), c.caption] for c in clips],
    }
    fingerprint = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
    info = {k: v for k, v in settings.items() if k != "clips"}
    info.update(num_clips=len(clips), num_shards=-(-len(clips) // config.data.shard_size), fingerprint=fingerprint)
    return info


def _prepare_cache_dir(cache_dir: Path, info: dict, overwrite: bool) -> None:
    info_path = cache_dir / CACHE_INFO_FILE
    if info_path.is_file() and not overwrite:
        existing = json.loads(info_path.read_text())
        if existing.get("fingerprint") != info["fingerprint"]:
            changed = sorted(k for k in info if k != "fingerprint" and existing.get(k) != info[k]) or ["the clip list"]
            raise CacheError(f"{cache_dir} holds a cache made from other inputs (differs in: {', '.join(changed)}); "
                             f"use another data.cache_dir or pass --overwrite to rebuild it")
        return
    if overwrite and cache_dir.exists():
        empty_folder(cache_dir)
    (cache_dir / SHARD_DIR).mkdir(parents=True, exist_ok=True)
    write_text_atomic(info_path, json.dumps(info, indent=2))


def _write_shard(path: Path, tensors: dict, records: list, skipped: list) -> None:
    # atomic, with the umask's mode (safetensors' own save_file writes 0600)
    from hydralora.io import save_safetensors

    save_safetensors(tensors, path, metadata={"clips": json.dumps(records), "skipped": json.dumps(skipped)})

