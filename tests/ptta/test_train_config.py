"""The training config: the paper's defaults, and a clear error for every kind of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from ptta.config import ConfigError, config_from_dict, load_config


def write_yaml(path, data):
    path.write_text(yaml.safe_dump(data))
    return path


def test_defaults_are_the_papers_hyper_parameters(tmp_path):
    config = config_from_dict({})
    assert (config.adapter.r, config.adapter.alpha, config.adapter.num_heads) == (32, 32.0, 4)
    assert config.optimizer.lr == 2e-5 and config.optimizer.betas == [0.9, 0.99]
    assert config.optimizer.weight_decay == 0.01 and config.training.epochs == 2
    assert config.training.objective == "flow" and config.training.mixed_precision == "bf16"
    hydra = config.hydra_config()
    assert (hydra.r, hydra.num_heads, hydra.mixing) == (32, 4, "router")


def test_lora_baseline_is_one_head_of_the_same_rank():
    hydra = config_from_dict({"adapter": {"type": "lora", "r": 16, "alpha": 16}}).hydra_config()
    assert (hydra.r, hydra.num_heads, hydra.mixing) == (16, 1, "fixed")


def test_yaml_file_relative_paths_and_exponent_without_dot(tmp_path):
    path = write_yaml(tmp_path / "run.yaml", {"output_dir": "out", "data": {"cache_dir": "c"}, "optimizer": {"lr": "2e-5"}})
    config = load_config(path)
    assert config.output_path == tmp_path / "out" and config.cache_path == tmp_path / "c"
    assert config.optimizer.lr == 2e-5


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"trainig": {}}, "unknown key(s) ['trainig']"),
        ({"training": {"batchsize": 2}}, "unknown key(s) ['training.batchsize']"),
        ({"data": {"frame_buckets": [33, 64]}}, "data.frame_buckets: frame count 64 is not of the form 4k+1"),
        ({"data": {"resolution_buckets": [[450, 800]]}}, "height 450 is not a positive multiple of 16"),
        ({"optimizer": {"lr": "fast"}}, "optimizer.lr: expected float"),
        ({"training": {"epochs": 0}}, "training.epochs: must be > 0"),
        ({"training": {"objective": "v"}}, "training.objective: must be one of ['flow', 'epsilon']"),
        ({"adapter": {"mixing": "dense"}}, "adapter: HydraConfig.mixing"),
        ({"heads": {"from_captions": True}}, "heads.from_captions: the caption weights replace omega"),
        ({"validation": {"every": 10}}, "validation.prompts: validation.every is set but no prompts"),
        ({"model": "/nonexistent/hunyuan"}, "model: /nonexistent/hunyuan does not exist"),
        ({"vae_dtype": "fp16"}, "vae_dtype: must be one of ['auto', 'float32', 'bfloat16', 'float16']"),
        ({"data": {"fps": 0}}, "data.fps: must be > 0"),
        ({"training": {"process_group_timeout_minutes": -1}}, "training.process_group_timeout_minutes: must be > 0"),
    ],
)
def test_bad_config_names_file_and_key(tmp_path, data, message):
    path = write_yaml(tmp_path / "bad.yaml", data)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_model_dir_without_model_index_is_rejected(tmp_path):
    (tmp_path / "model").mkdir()
    with pytest.raises(ConfigError, match="has no model_index.json"):
        config_from_dict({"model": str(tmp_path / "model")})


def fake_model_dir(root: Path, pipeline: str, in_channels: int) -> Path:
    """The JSON files of a pipeline directory (no weights): enough for the directory check."""
    for name, data in {"model_index.json": {"_class_name": pipeline},
                       "transformer/config.json": {"in_channels": in_channels},
                       "vae/config.json": {"latent_channels": 16}}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(json.dumps(data))
    return root


@pytest.mark.parametrize(
    ("pipeline", "in_channels", "bad_file", "message"),
    [
        ("HunyuanVideoImageToVideoPipeline", 33, "model_index.json", "trains the text-to-video HunyuanVideoPipeline"),
        ("HunyuanVideoPipeline", 32, "transformer/config.json", "in_channels is 32, not the VAE's 16 latent channels"),
    ],
)
def test_image_to_video_model_dirs_are_refused_naming_the_file(tmp_path, pipeline, in_channels, bad_file, message):
    from ptta.models.hunyuan_video import resolve_model_dir

    model = fake_model_dir(tmp_path / "model", pipeline, in_channels)
    with pytest.raises(ConfigError, match=message) as info:
        config_from_dict({"model": str(model)})
    assert str(model / bad_file) in str(info.value)
    with pytest.raises(ValueError, match=message):
        resolve_model_dir(model)  # what `ptta sample --model` checks
    config_from_dict({"model": str(fake_model_dir(tmp_path / "t2v", "HunyuanVideoPipeline", 16))})


def test_process_group_timeout_reaches_the_accelerator():
    from datetime import timedelta

    from ptta.train.trainer import make_accelerator

    assert make_accelerator(config_from_dict({})).init_handler.timeout == timedelta(minutes=120)
    accelerator = make_accelerator(config_from_dict({"training": {"process_group_timeout_minutes": 7.5}}))
    assert accelerator.init_handler.timeout == timedelta(minutes=7.5)


def test_missing_config_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "absent.yaml")
    (tmp_path / "broken.yaml").write_text("training: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "broken.yaml")


def test_train_cli_reports_bad_config_and_exits_2(tmp_path, capsys):
    from ptta.cli import main

    path = write_yaml(tmp_path / "bad.yaml", {"data": {"frame_buckets": [32]}})
    assert main(["train", "--config", str(path)]) == 2
    assert "frame count 32 is not of the form 4k+1" in capsys.readouterr().err


def test_empty_manifest_is_a_clear_error(tmp_path, capsys):
    from ptta.cli import main

    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text(json.dumps({"id": "a", "clip_path": "a.mp4", "caption": "x", "selected": False}) + "\n")
    path = write_yaml(tmp_path / "run.yaml", {"data": {"manifest": str(manifest)}})
    assert main(["cache", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "no selected clips to train on (1 records" in err and str(manifest) in err
    assert not (tmp_path / "cache").exists()  # nothing was created for a failed run


def test_paper_recipe_holds_the_paper_hyper_parameters():
    configs = Path(__file__).resolve().parents[2] / "examples" / "ptta" / "configs"
    data = yaml.safe_load((configs / "train-paper.yaml").read_text())
    data["model"] = "tiny"  # the recipe names a real model directory, absent here
    config = config_from_dict(data, source="train-paper.yaml", base_dir=str(configs))
    hydra = config.hydra_config()
    # the paper's sub-task heads (male, female, object, background), supervised by caption words
    assert (hydra.r, hydra.alpha, hydra.num_heads, hydra.mixing) == (32, 32, 4, "fixed")
    assert config.heads.from_captions and config.heads.names == ["male", "female", "object", "background"]
    assert (config.optimizer.lr, config.optimizer.betas, config.optimizer.weight_decay) == (2e-5, [0.9, 0.99], 0.01)
    assert config.training.epochs == 2 and not config.training.fsdp
    assert (config.data.fps, config.vae_dtype, config.training.process_group_timeout_minutes) == (24, "auto", 120)


def test_router_recipe_differs_from_the_paper_recipe_only_in_the_mixing():
    configs = Path(__file__).resolve().parents[2] / "examples" / "ptta" / "configs"
    paper, router = (yaml.safe_load((configs / name).read_text()) for name in ("train-paper.yaml", "train-router.yaml"))
    config = config_from_dict({**router, "model": "tiny"}, source="train-router.yaml", base_dir=str(configs))
    assert config.hydra_config().mixing == "router" and not config.heads.from_captions
    for key in ("data", "optimizer", "training", "validation", "seed", "vae_dtype"):
        assert paper[key] == router[key], key
    assert {k: v for k, v in paper["adapter"].items() if k != "mixing"} == \
        {k: v for k, v in router["adapter"].items() if k != "mixing"}
