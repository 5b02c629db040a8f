"""`ptta cache` on clips that are frame ranges of their sources (no clip file): the same frames and
latents as from the written clips, mixed folders, resumed caches, and missing or changed sources."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from curate_support import read_manifest, run_command
from safetensors import safe_open
from test_train_fixtures import make_config_dict, tiny_model_dir  # noqa: F401

from ptta.assets import big_buck_bunny_path
from ptta.cache.buckets import choose_bucket, fit_clip, resample_frames
from ptta.cache.build import CacheError, _prepare_clip, build_cache, read_clip_frames, shard_path
from ptta.cache.manifest import read_selected_clips
from ptta.config import config_from_dict
from ptta.curate.clip_source import SourceClipReader
from ptta.synthetic import ShotSpec, make_animation_video


@pytest.fixture(scope="module")
def curated(tmp_path_factory) -> Path:
    """Two synthetic videos and Big Buck Bunny curated with every clip kept and written losslessly;
    manifest.jsonl names the files, sources.jsonl the same clips without files."""
    root = tmp_path_factory.mktemp("curated")
    inputs = root / "inputs"
    make_animation_video(inputs / "a.mp4", [ShotSpec(2.5, speed=0.6), ShotSpec(1.6, speed=0.4, hold=2)], fps=24,
                         size=(96, 54), seed=1)
    make_animation_video(inputs / "b.mkv", [ShotSpec(2.2, speed=0.5)], fps=30, size=(64, 48), seed=2)
    (inputs / "bigbuckbunny.mp4").symlink_to(big_buck_bunny_path())
    out = root / "out"
    argv = [str(inputs), "--out", str(out), "--min-clip-seconds", "0.5", "--max-clip-seconds", "1.0", "--theta", "0",
            "--crf", "0", "--preset", "ultrafast", "--resize", "64x48", "--write-clips", "--no-progress"]
    assert run_command("ptta.curate.command", argv) == 0
    rows = read_manifest(out)
    for row in rows:
        row["caption"] = f"clip {row['id']}"
    (out / "manifest.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (out / "sources.jsonl").write_text("".join(json.dumps({**row, "clip_path": None}) + "\n" for row in rows))
    return out


def test_frames_read_from_sources_equal_those_of_the_written_clips(curated):
    written = read_selected_clips(curated / "manifest.jsonl")
    from_sources = read_selected_clips(curated / "sources.jsonl")
    assert len(written) == len(from_sources) >= 10 and all(clip.path is None for clip in from_sources)
    with SourceClipReader() as reader:
        for file_clip, source_clip in zip(written, from_sources):
            want, want_fps, _ = read_clip_frames(file_clip, reader)
            got, fps, label = read_clip_frames(source_clip, reader)
            assert fps == want_fps and "frames" in label
            np.testing.assert_array_equal(got, want, err_msg=source_clip.id)


@pytest.mark.parametrize("fps", [24.0, 10.0])
def test_a_clip_prepared_for_its_bucket_converts_only_the_kept_frames_into_the_same_pixels(curated, tmp_path, fps,
                                                                                           monkeypatch):
    config = config_from_dict(make_config_dict("tiny", curated / "manifest.jsonl", tmp_path / "cache",
                                               tmp_path / "run", data={"frame_buckets": [5, 9], "fps": fps}))
    converted = []
    for manifest in ("manifest.jsonl", "sources.jsonl"):
        with SourceClipReader() as reader:
            for clip in read_selected_clips(curated / manifest):
                # What the cache did before: every frame to RGB, resampled, then the bucket's middle.
                every, source_fps, _ = read_clip_frames(clip, reader)
                resampled = resample_frames(every, source_fps, fps)
                bucket = choose_bucket(len(resampled), *every.shape[1:3], [5, 9], config.data.resolution_buckets)
                with monkeypatch.context() as patch:
                    patch.setattr(np, "stack", lambda arrays, _stack=np.stack: converted.append(len(arrays)) or
                                  _stack(arrays))
                    got, got_bucket, got_fps = _prepare_clip(clip, config, reader)
                assert (got_bucket, got_fps) == (bucket, source_fps)
                np.testing.assert_array_equal(got, fit_clip(resampled, bucket), err_msg=f"{manifest} {clip.id}")
                assert converted[-1] == bucket.frames < len(every)


def cache_config(model_dir: Path, manifest: Path, cache_dir: Path):
    return config_from_dict(make_config_dict(model_dir, manifest, cache_dir, cache_dir.parent / "run",
                                             data={"shard_size": 3, "frame_buckets": [9]}))


def shard_contents(cache_dir: Path) -> dict:
    tensors = {}
    for path in sorted((cache_dir / "shards").glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as handle:
            tensors.update({key: handle.get_tensor(key) for key in handle.keys()})
    return tensors


def test_a_mixed_folder_caches_the_latents_of_the_written_clips_and_resumes(curated, tiny_model_dir, tmp_path):
    rows = read_manifest(curated)
    # every other clip without its file, as a folder curated without --write-clips and partly written later
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text("".join(json.dumps({**row, "clip_path": row["clip_path"] if i % 2 else None}) + "\n"
                             for i, row in enumerate(rows)))
    reference = build_cache(cache_config(tiny_model_dir, curated / "manifest.jsonl", tmp_path / "written"),
                            progress=False)
    cache = build_cache(cache_config(tiny_model_dir, mixed, tmp_path / "mixed"), progress=False)
    want, got = shard_contents(reference), shard_contents(cache)
    assert sorted(got) == sorted(want) and len(got) == 3 * len(rows)
    for key, tensor in want.items():
        assert np.array_equal(got[key].numpy(), tensor.numpy()), key
    # resumed: a lost shard is made again, the same
    shard_path(cache, 1).unlink()
    build_cache(cache_config(tiny_model_dir, mixed, tmp_path / "mixed"), progress=False)
    assert all(np.array_equal(shard_contents(cache)[key].numpy(), got[key].numpy()) for key in got)


def test_a_missing_or_changed_source_stops_the_cache_naming_it(curated, tiny_model_dir, tmp_path):
    rows = [json.loads(line) for line in (curated / "sources.jsonl").read_text().splitlines()]
    source = tmp_path / "a.mp4"
    source.write_bytes(Path(next(r["source"] for r in rows if r["source"].endswith("a.mp4"))).read_bytes())
    moved = tmp_path / "moved.jsonl"
    moved.write_text("".join(json.dumps({**row, "source": str(source)}) + "\n" for row in rows
                             if row["source"].endswith("a.mp4")))
    config = cache_config(tiny_model_dir, moved, tmp_path / "cache")
    assert build_cache(config, progress=False)  # the copy is the same file: mtime alone does not count
    config = cache_config(tiny_model_dir, moved, tmp_path / "cache2")
    data = bytearray(source.read_bytes())
    data[-100:] = bytes(100)  # the same size, other bytes
    source.write_bytes(bytes(data))
    with pytest.raises(CacheError, match=f"source {source} of clip .* changed since it was curated"):
        build_cache(config, progress=False)
    source.write_bytes(bytes(data[:-1]))
    with pytest.raises(CacheError, match=f"{source} changed since it was curated \\(size"):
        build_cache(config, progress=False)
    source.unlink()
    with pytest.raises(CacheError, match=f"{source} does not exist"):
        build_cache(config, progress=False)
