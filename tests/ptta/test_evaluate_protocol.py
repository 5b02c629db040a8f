"""The evaluation protocol: the prompt set, manifests, the sampling plan, and sampling through
`ptta.sample.generate.generate_videos` (a fake sampler for the bookkeeping, the tiny model once)."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from ptta.evaluate import ablate, command
from ptta.evaluate.generation import MethodSpec, generate_missing
from ptta.evaluate.prompts import SAMPLES_PER_PROMPT, load_prompts
from ptta.paper_prompts import PTTA_PROMPTS, EvalPrompt
from ptta.evaluate.protocol import ManifestError, plan_videos, read_manifest, write_manifest
from ptta.video_io import write_video


def test_the_prompt_set_has_20_tagged_animation_prompts_over_four_style_elements():
    assert len(PTTA_PROMPTS) == 20 and SAMPLES_PER_PROMPT == 10
    assert len({p.id for p in PTTA_PROMPTS}) == 20 and len({p.text for p in PTTA_PROMPTS}) == 20
    assert {p.focus for p in PTTA_PROMPTS} == {"female", "male", "object", "background"}
    assert all(sum(p.focus == f for p in PTTA_PROMPTS) == 5 for f in ("female", "male", "object", "background"))
    # Fig. 2 style: comma-separated tags ending in the style tag.
    assert all(p.text.endswith(", anime style") and p.text.count(",") >= 4 for p in PTTA_PROMPTS)
    fig2 = "anime girl, reading books, desk, gentle action, soft gaze, solo, full body, anime style"
    assert PTTA_PROMPTS[0].text == fig2


def test_prompt_files_in_three_formats_and_their_errors(tmp_path):
    (tmp_path / "p.txt").write_text("a cat, running\n\n a dog, sitting \n")
    prompts = load_prompts(tmp_path / "p.txt")
    assert [(p.id, p.text) for p in prompts] == [("p01", "a cat, running"), ("p02", "a dog, sitting")]
    (tmp_path / "p.jsonl").write_text('{"id": "cat", "prompt": "a cat", "focus": "object"}\n')
    assert load_prompts(tmp_path / "p.jsonl") == [EvalPrompt("cat", "a cat", "object")]
    (tmp_path / "dup.csv").write_text("id,prompt\nx,a\nx,b\n")
    with pytest.raises(ValueError, match=r"dup.csv: duplicate prompt ids \['x'\]"):
        load_prompts(tmp_path / "dup.csv")
    (tmp_path / "bad.jsonl").write_text('{"prompt": "a"}\n{oops\n')
    with pytest.raises(ValueError, match="bad.jsonl:2: not valid JSON"):
        load_prompts(tmp_path / "bad.jsonl")


def test_plan_uses_the_same_seeds_for_every_method():
    prompts = list(PTTA_PROMPTS[:2])
    records = plan_videos(["base", "ptta"], prompts, samples=3, base_seed=100, video_dir=Path("v"))
    assert len(records) == 2 * 2 * 3
    by_method = {m: [(r.prompt_id, r.sample, r.seed) for r in records if r.method == m] for m in ("base", "ptta")}
    assert by_method["base"] == by_method["ptta"]
    assert {r.seed for r in records} == {100, 101, 102}
    assert records[0].video == Path("v/base/f01_s00.mp4")
    with pytest.raises(ValueError, match="duplicate method names"):
        plan_videos(["a", "a"], prompts, 1, 0, Path("v"))
    with pytest.raises(ValueError, match="folder names"):
        plan_videos(["../x"], prompts, 1, 0, Path("v"))


def test_manifest_fills_defaults_and_round_trips(tmp_path):
    (tmp_path / "m.csv").write_text("video,prompt\na.mp4,a cat\nb.mp4,a dog\nc.mp4,a cat\n")
    records = read_manifest(tmp_path / "m.csv")
    assert [(r.video.name, r.method, r.prompt_id, r.sample) for r in records] == [
        ("a.mp4", "videos", "p01", 0), ("b.mp4", "videos", "p02", 0), ("c.mp4", "videos", "p01", 1)]
    assert records[0].video == tmp_path / "a.mp4"
    write_manifest(records, tmp_path / "copy.csv")
    assert read_manifest(tmp_path / "copy.csv") == records
    row = {"video": "/abs/x.mp4", "prompt": "p", "method": "m", "seed": 3}
    (tmp_path / "m.jsonl").write_text(json.dumps(row) + "\n")
    assert read_manifest(tmp_path / "m.jsonl", video_root="/elsewhere")[0].video == Path("/abs/x.mp4")


@pytest.mark.parametrize("content, message", [
    ("video,prompt\na.mp4,\n", r"m.csv:2: every row needs 'video' and 'prompt'"),
    ("video,prompt\na.mp4,x\na.mp4,y\n", r"m.csv:3: video a.mp4 already listed on line 2"),
    ("video,prompt,sample\na.mp4,x,first\n", r"m.csv:2: 'sample' must be an integer"),
    ("video,prompt\n", r"m.csv: no videos listed"),
])
def test_manifest_errors_name_the_file_and_line(tmp_path, content, message):
    (tmp_path / "m.csv").write_text(content)
    with pytest.raises(ManifestError, match=message):
        read_manifest(tmp_path / "m.csv")


def fake_sampler(calls: list):
    """Stands in for ptta.sample.generate.generate_videos: records its arguments, writes tiny clips."""
    def generate_videos(prompts, out_dir, *, model, seeds, gif, adapter=None, **options):
        calls.append({"prompts": list(prompts), "seeds": list(seeds), "adapter": adapter, "options": options})
        paths = []
        for i in range(len(prompts)):
            for seed in seeds:
                frames = np.full((4, 32, 32, 3), 40 * i + seed, np.uint8)
                paths.append(write_video(Path(out_dir) / f"{i:03d}-seed{seed}.mp4", frames, fps=8))
        return paths
    return generate_videos


def test_generation_samples_only_missing_videos_once_per_method(tmp_path, monkeypatch):
    import ptta.evaluate.generation

    calls = []
    monkeypatch.setattr(ptta.evaluate.generation, "generate_videos", fake_sampler(calls))
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    methods = [MethodSpec.parse("base"), MethodSpec.parse(f"ptta={adapter}")]
    records = plan_videos([m.name for m in methods], list(PTTA_PROMPTS[:2]), 2, 0, tmp_path / "videos")
    assert generate_missing(records, methods, "tiny", {"steps": 2}, log=lambda _: None) == {}
    assert [c["adapter"] for c in calls] == [None, adapter] and calls[0]["options"] == {"steps": 2}
    assert calls[0]["prompts"] == [PTTA_PROMPTS[0].text, PTTA_PROMPTS[1].text] and calls[0]["seeds"] == [0, 1]
    assert all(r.video.is_file() for r in records)
    assert not (tmp_path / "videos" / "base" / "_generating").exists()

    # A rerun after one video was lost samples just that prompt and seed, for just that method.
    lost = next(r for r in records if r.method == "ptta" and r.prompt_id == "f02" and r.sample == 1)
    lost.video.unlink()
    calls.clear()
    generate_missing(records, methods, "tiny", {}, log=lambda _: None)
    assert [(c["prompts"], c["seeds"]) for c in calls] == [([PTTA_PROMPTS[1].text], [1])]
    assert lost.video.is_file()


def test_a_method_whose_sampling_fails_is_reported_and_the_others_are_sampled(tmp_path, monkeypatch):
    import ptta.evaluate.generation

    calls = []
    working = fake_sampler(calls)

    def flaky(prompts, out_dir, *, adapter=None, **kwargs):
        if adapter is not None:
            raise RuntimeError("adapter does not fit this model")
        return working(prompts, out_dir, adapter=adapter, **kwargs)

    monkeypatch.setattr(ptta.evaluate.generation, "generate_videos", flaky)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    methods = [MethodSpec.parse(f"ptta={adapter}"), MethodSpec.parse("base")]
    records = plan_videos([m.name for m in methods], list(PTTA_PROMPTS[:1]), 1, 0, tmp_path / "videos")
    failures = generate_missing(records, methods, "tiny", {}, log=lambda _: None)
    assert failures == {"ptta": "RuntimeError: adapter does not fit this model"}
    assert [r.video.is_file() for r in records] == [False, True]


def test_a_missing_adapter_path_is_refused_before_sampling(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere: no such adapter folder or LoRA file"):
        MethodSpec.parse(f"ptta={tmp_path / 'nowhere'}").sampler_arguments()
    with pytest.raises(ValueError, match="expected NAME"):
        MethodSpec.parse("=x")


def test_ablation_trains_missing_adapters_with_n_heads_then_samples_each(tmp_path, monkeypatch):
    import ptta.evaluate.generation
    import ptta.train.trainer

    trained = []

    def fake_train(config, resume=None, progress=True):
        trained.append((config.adapter.num_heads, Path(config.output_dir)))
        adapter_dir = Path(config.output_dir) / "adapter"
        adapter_dir.mkdir(parents=True)
        (adapter_dir / "adapter_model.safetensors").write_bytes(b"")
        return SimpleNamespace(adapter_dir=adapter_dir)

    calls = []
    monkeypatch.setattr(ptta.train.trainer, "train", fake_train)
    monkeypatch.setattr(ptta.evaluate.generation, "generate_videos", fake_sampler(calls))
    existing = tmp_path / "adapters" / "heads2"
    existing.mkdir(parents=True)
    (existing / "adapter_model.safetensors").write_bytes(b"")
    (tmp_path / "train.yaml").write_text("model: tiny\n")
    (tmp_path / "prompts.txt").write_text("anime girl, waving\n")
    parser = argparse.ArgumentParser()
    ablate.add_arguments(parser)
    args = parser.parse_args(["--heads", "2,4", "--model", "tiny", "--train-config", str(tmp_path / "train.yaml"),
                              "--adapter-pattern", str(tmp_path / "adapters" / "heads{N}"), "--samples", "1",
                              "--prompts", str(tmp_path / "prompts.txt"), "--out", str(tmp_path / "out")])
    assert ablate.run(args) == 0
    assert trained == [(4, (tmp_path / "adapters" / "heads4").resolve())]
    assert [c["adapter"] for c in calls] == [existing, (tmp_path / "adapters" / "heads4" / "adapter").resolve()]
    table = (tmp_path / "out" / "table.md").read_text()
    assert "| 2 | " in table and "| 4 (Default) | " in table


def test_evaluate_samples_the_tiny_model_through_the_sampling_module(tmp_path):
    pytest.importorskip("diffusers")
    (tmp_path / "prompts.txt").write_text("anime girl, waving\nred ball, bouncing\n")
    out = tmp_path / "eval"
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    args = parser.parse_args(["--model", "tiny", "--method", "base", "--prompts", str(tmp_path / "prompts.txt"),
                              "--samples", "1", "--steps", "2", "--height", "32", "--width", "32", "--frames", "5",
                              "--device", "cpu", "--out", str(out)])
    assert command.run(args) == 0
    with (out / "per_video.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["video"], r["prompt_id"], r["seed"]) for r in rows] == [
        ("videos/base/p01_s00.mp4", "p01", "0"), ("videos/base/p02_s00.mp4", "p02", "0")]
    assert read_manifest(out / "manifest.csv")[0].video == out / "videos/base/p01_s00.mp4"


def test_the_cli_registers_evaluate_and_ablate():
    import importlib

    from ptta.cli import COMMANDS

    for name in ("evaluate", "ablate"):
        module = importlib.import_module(COMMANDS[name][0])
        assert callable(module.add_arguments) and callable(module.run)
