"""`generate_videos` / `ptta sample`: adapter, head steering, merge, exported LoRA, bad arguments, freed text
encoders and the prompt length limit recorded by training."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from test_train_fixtures import built_cache, clip_manifest, make_config_dict, tiny_model_dir  # noqa: F401

from ptta.sample.generate import generate_videos
from ptta.video_io import read_video

SIZE = {"height": 32, "width": 48, "frames": 9, "steps": 3}


@pytest.fixture(scope="module")
def trained(tiny_model_dir, clip_manifest, built_cache, tmp_path_factory):
    from ptta.config import config_from_dict
    from ptta.train.trainer import train

    out = tmp_path_factory.mktemp("trained")
    data = make_config_dict(tiny_model_dir, clip_manifest, built_cache, out / "run",
                            adapter={"mixing": "learned", "init_b_std": 0.5}, training={"max_steps": 2})
    return train(config_from_dict(data), progress=False)


def frames_of(path) -> np.ndarray:
    frames, _ = read_video(path)
    return frames.astype(np.float32)


def test_writes_mp4_gif_and_index_per_prompt_and_seed(trained, tiny_model_dir, tmp_path):
    paths = generate_videos(["a girl walks", "a red ball"], tmp_path, model=tiny_model_dir, adapter=trained.output_dir,
                            seeds=[0, 1], progress=False, **SIZE)
    assert [p.name for p in paths] == ["000-a-girl-walks-seed0.mp4", "000-a-girl-walks-seed1.mp4",
                                       "001-a-red-ball-seed0.mp4", "001-a-red-ball-seed1.mp4"]
    assert all(p.with_suffix(".gif").is_file() for p in paths)
    assert frames_of(paths[0]).shape == (9, 32, 48, 3)
    index = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert [(r["prompt"], r["seed"], r["video"]) for r in index][1] == ("a girl walks", 1, paths[1].name)


def test_same_seed_repeats_and_adapter_and_heads_change_the_video(trained, tiny_model_dir, tmp_path):
    def one(name, **kwargs):
        return frames_of(generate_videos(["a girl walks"], tmp_path / name, model=tiny_model_dir, progress=False,
                                         gif=False, **SIZE, **kwargs)[0])

    adapted = one("a", adapter=trained.adapter_dir)
    np.testing.assert_array_equal(one("b", adapter=trained.adapter_dir), adapted)
    assert np.abs(one("base") - adapted).mean() > 0.5
    head0 = one("h0", adapter=trained.adapter_dir, head_weights=[1, 0, 0, 0])
    head1 = one("h1", adapter=trained.adapter_dir, head_weights=[0, 1, 0, 0])
    assert np.abs(head0 - head1).mean() > 0.5
    merged = one("h0m", adapter=trained.adapter_dir, head_weights=[1, 0, 0, 0], merge=True)
    assert np.abs(merged - head0).mean() < 0.5  # same model up to float rounding, then H.264


def test_exported_lora_samples_like_the_adapter(trained, tiny_model_dir, tmp_path):
    common = {"model": tiny_model_dir, "progress": False, "gif": False, **SIZE}
    adapter_video = frames_of(generate_videos(["a red ball"], tmp_path / "a", adapter=trained.adapter_dir, **common)[0])
    lora_video = frames_of(generate_videos(["a red ball"], tmp_path / "l", lora=trained.lora_path, **common)[0])
    assert np.abs(adapter_video - lora_video).mean() < 0.5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"adapter": "x", "lora": "y"}, "either an adapter folder or an exported LoRA file"),
        ({"head_weights": [1, 0, 0, 0]}, "give --adapter too"),
        ({"merge": True}, "give --adapter too"),
        ({"frames": 8}, "frame count 8 is not of the form 4k+1"),
        ({"height": 40}, "height 40 is not a positive multiple of 16"),
        ({"seeds": []}, "no seeds given"),
    ],
)
def test_bad_arguments_are_refused_before_any_work(tmp_path, kwargs, message):
    arguments = {**SIZE, **kwargs}
    with pytest.raises(ValueError, match=re.escape(message)):
        generate_videos(["p"], tmp_path / "out", model="/nonexistent", progress=False, **arguments)
    assert not (tmp_path / "out").exists()


def test_wrong_head_count_and_missing_files_fail_before_prompts_are_encoded(trained, tiny_model_dir, tmp_path,
                                                                             monkeypatch):
    from ptta.models import text_encoders

    def encode_prompts_alone(*args):
        raise AssertionError("prompts were encoded before the adapter files were checked")

    monkeypatch.setattr(text_encoders, "encode_prompts_alone", encode_prompts_alone)
    with pytest.raises(ValueError, match="have 2 entries; the adapter .* has 4 heads"):
        generate_videos(["p"], tmp_path, model=tiny_model_dir, adapter=trained.adapter_dir, head_weights=[1, 0],
                        progress=False, **SIZE)
    with pytest.raises(FileNotFoundError, match="no adapter_model.safetensors"):
        generate_videos(["p"], tmp_path, model=tiny_model_dir, adapter=tmp_path, progress=False, **SIZE)
    with pytest.raises(FileNotFoundError, match="--lora .*missing.safetensors: no such file"):
        generate_videos(["p"], tmp_path, model=tiny_model_dir, lora=tmp_path / "missing.safetensors", progress=False,
                        **SIZE)


def test_cli_reads_a_prompts_file_and_reports_bad_heads(trained, tiny_model_dir, tmp_path, capsys):
    from ptta.cli import main

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a girl walks\n\na red ball\n")
    args = ["sample", "--prompts-file", str(prompts), "--out", str(tmp_path / "out"), "--model", str(tiny_model_dir),
            "--adapter", str(trained.adapter_dir), "--heads", "0.7,0.3,0,0", "--seeds", "3", "--steps", "2",
            "--height", "32", "--width", "48", "--frames", "9"]
    assert main(args) == 0
    assert sorted(p.name for p in (tmp_path / "out").glob("*.mp4")) == ["000-a-girl-walks-seed3.mp4",
                                                                       "001-a-red-ball-seed3.mp4"]
    assert main(args[:-12] + ["--heads", "0.7;0.3"]) == 2
    assert "--heads: expected comma-separated numbers" in capsys.readouterr().err


def spy(monkeypatch, module, name: str) -> list[tuple]:
    """Replace module.name by a wrapper that records each call's arguments, then calls the original."""
    original, calls = getattr(module, name), []

    def wrapper(*args, **kwargs):
        calls.append(args + tuple(kwargs.values()))
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return calls


def test_sampling_pipeline_holds_no_text_encoders_and_merges_without_originals(trained, tiny_model_dir, tmp_path,
                                                                              monkeypatch):
    import hydralora
    from ptta.sample import generate

    calls = spy(monkeypatch, generate, "render_video")
    generate_videos(["a girl walks"], tmp_path, model=tiny_model_dir, adapter=trained.adapter_dir, merge=True,
                    gif=False, progress=False, **SIZE)
    pipe = calls[0][0]
    # prompts were encoded and the encoders freed before the transformer was loaded
    assert pipe.text_encoder is None and pipe.text_encoder_2 is None
    layers = [layer for _, layer in hydralora.hydra_layers(pipe.transformer)]
    assert layers and all(layer.merged and layer._original_weight is None for layer in layers)


def test_prompts_and_videos_follow_the_length_limit_and_fps_recorded_by_training(trained, tiny_model_dir, tmp_path,
                                                                                 monkeypatch):
    from ptta.cli import main
    from ptta.models import text_encoders as text_embeddings

    assert text_embeddings.recorded_max_sequence_length(trained.adapter_dir) == 256  # the fixture cache's value
    assert text_embeddings.recorded_max_sequence_length(trained.lora_path.parent) == 256
    assert text_embeddings.recorded_max_sequence_length(trained.output_dir / "checkpoints" / "step-000002") == 256
    assert text_embeddings.recorded_fps(trained.adapter_dir) == text_embeddings.recorded_fps(trained.lora_path.parent) \
        == text_embeddings.recorded_fps(trained.output_dir / "checkpoints" / "step-000002") == 24
    adapter = shutil.copytree(trained.adapter_dir, tmp_path / "adapter")
    text_embeddings.write_text_encoding(adapter, 12, 8)
    calls = spy(monkeypatch, text_embeddings, "encode_prompts_alone")
    generate_videos(["a girl walks"], tmp_path / "recorded", model=tiny_model_dir, adapter=adapter, gif=False,
                    progress=False, **SIZE)
    generate_videos(["a girl walks"], tmp_path / "base", model=tiny_model_dir, gif=False, progress=False, **SIZE)
    args = ["sample", "a girl walks", "--out", str(tmp_path / "cli"), "--model", str(tiny_model_dir), "--adapter",
            str(adapter), "--steps", "1", "--height", "32", "--width", "48", "--frames", "9", "--no-gif"]
    assert main(args + ["--max-sequence-length", "7"]) == 0
    assert [call[2] for call in calls] == [12, 256, 7]
    assert main(args + ["--fps", "30"]) == 0
    fps_of = {name: read_video(next((tmp_path / name).glob("*.mp4")))[1] for name in ("recorded", "base", "cli")}
    assert fps_of == {"recorded": 8, "base": 24, "cli": 30}
    (adapter / text_embeddings.TEXT_ENCODING_FILE).write_text("{}")
    with pytest.raises(ValueError, match="text_encoding.json: expected"):
        generate_videos(["p"], tmp_path / "broken", model=tiny_model_dir, adapter=adapter, progress=False, **SIZE)


def test_an_adapter_trained_with_caption_heads_takes_each_prompts_head_weights_from_its_words(trained, tiny_model_dir,
                                                                                             tmp_path):
    from ptta.config import DEFAULT_HEAD_NAMES, DEFAULT_HEAD_TAGS
    from ptta.train.heads import write_caption_heads

    adapter = shutil.copytree(trained.adapter_dir, tmp_path / "adapter")
    write_caption_heads(adapter, DEFAULT_HEAD_NAMES, DEFAULT_HEAD_TAGS)
    prompts = ["a girl reads a book", "a quiet moment"]
    generate_videos(prompts, tmp_path / "by-prompt", model=tiny_model_dir, adapter=adapter, gif=False,
                    progress=False, **SIZE)
    index = [json.loads(line) for line in (tmp_path / "by-prompt" / "samples.jsonl").read_text().splitlines()]
    assert [(e["heads_from"], e["head_weights"]) for e in index] == [("prompt", [0.0, 0.5, 0.5, 0.0]),
                                                                     ("prompt", [0.25, 0.25, 0.25, 0.25])]
    generate_videos(prompts[:1], tmp_path / "given", model=tiny_model_dir, adapter=adapter, head_weights=[1, 0, 0, 0],
                    gif=False, progress=False, **SIZE)
    given = json.loads((tmp_path / "given" / "samples.jsonl").read_text())
    assert (given["heads_from"], given["head_weights"]) == ("--heads", [1.0, 0.0, 0.0, 0.0])
    # the fixture's heads differ (init_b_std 0.5), so the prompt's mix is not the --heads one
    by_prompt = read_video(tmp_path / "by-prompt" / index[0]["video"])[0]
    assert not np.array_equal(by_prompt, read_video(tmp_path / "given" / given["video"])[0])
    with pytest.raises(ValueError, match="trained with caption heads.*--heads w1,...,wN --merge"):
        generate_videos(prompts, tmp_path / "merged", model=tiny_model_dir, adapter=adapter, merge=True,
                        progress=False, **SIZE)
