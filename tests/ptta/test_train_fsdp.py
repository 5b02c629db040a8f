"""`training.fsdp`: two CPU processes (torchrun, gloo) training with the base sharded by FSDP2.

One launch runs every distributed training of this module (starting processes costs more than
the tiny trainings): FSDP and DDP runs of the same config, and an FSDP run stopped halfway and
resumed. The FSDP adapter must match the DDP one and the resumed run the uninterrupted one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from test_train_fixtures import built_cache, clip_manifest, make_config_dict, tiny_model_dir  # noqa: F401

import hydralora
from ptta.config import ConfigError, config_from_dict
from ptta.train.fsdp import SHARDED_BLOCK_CLASSES, blocks_to_shard
from ptta.models.hunyuan_video import load_transformer

# argv: one config file per run; a run named "*-resumed" stops at step 2 and is resumed to the end
RANK_SCRIPT = """
import sys
import yaml
from ptta.config import config_from_dict, load_config
from ptta.train.fsdp import is_sharded
from ptta.train.trainer import end_distributed, train

for path in sys.argv[1:]:
    config = load_config(path)
    if path.endswith("-resumed.yaml"):
        halfway = yaml.safe_load(open(path))
        halfway["training"]["max_steps"] = 2
        train(config_from_dict(halfway), progress=False)
        result = train(config, resume="latest", progress=False)
    else:
        result = train(config, progress=False)
    assert is_sharded(result.model) == config.training.fsdp, path
end_distributed()
"""

# 4 clips, batch 1, 2 processes, 2 micro-batches per step: 1 step per epoch, so 4 steps in all,
# each skipping the gradient reduction on its first micro-batch
TRAINING = {"batch_size": 1, "gradient_accumulation_steps": 2, "epochs": 4, "checkpoint_every": 2}


@pytest.fixture(scope="module")
def runs(tiny_model_dir, clip_manifest, built_cache, tmp_path_factory):
    """Output folders of the runs, by name, after one two-process launch."""
    root = tmp_path_factory.mktemp("fsdp")
    settings = {
        "ddp-learned": {"adapter": {"mixing": "learned"}, "training": {**TRAINING, "fsdp": False}},
        "fsdp-learned": {"adapter": {"mixing": "learned"}, "training": {**TRAINING, "fsdp": True}},
        # bf16: frozen bf16 base and fp32 adapter share each FSDP unit
        "fsdp-router": {"training": {**TRAINING, "fsdp": True, "mixed_precision": "bf16"}},
        "fsdp-router-resumed": {"training": {**TRAINING, "fsdp": True, "mixed_precision": "bf16"}},
    }
    config_paths = []
    for name, sections in settings.items():
        data = make_config_dict(tiny_model_dir, clip_manifest, built_cache, root / name, **sections)
        config_paths.append(root / f"{name}.yaml")
        config_paths[-1].write_text(yaml.safe_dump(data))
    script = root / "rank_train.py"
    script.write_text(RANK_SCRIPT)
    completed = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(script), *map(str, config_paths)],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    return {name: root / name for name in settings}


def assert_close_tensors(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys() and actual
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=1e-5, atol=1e-6, msg=key)


def test_fsdp_adapter_matches_ddp_and_loads_into_the_transformer(runs, tiny_model_dir):
    fsdp, ddp = runs["fsdp-learned"], runs["ddp-learned"]
    fsdp_state = load_file(str(fsdp / "adapter" / "adapter_model.safetensors"))
    ddp_state = load_file(str(ddp / "adapter" / "adapter_model.safetensors"))
    assert_close_tensors(fsdp_state, ddp_state)
    halfway = load_file(str(ddp / "checkpoints" / "step-000002" / "adapter_model.safetensors"))
    key = "transformer_blocks.0.attn.to_q.lora_B"
    assert not torch.equal(halfway[key], ddp_state[key])  # the last steps still changed the adapter
    # whole tensors (not one process's shard) that hydralora loads strictly
    transformer = load_transformer(tiny_model_dir, torch.float32)
    hydralora.load_adapter(transformer, fsdp / "adapter")
    assert_close_tensors({k: v.detach() for k, v in hydralora.adapter_state_dict(transformer).items()}, ddp_state)
    assert_close_tensors(load_file(str(fsdp / "lora_diffusers.safetensors")),
                         load_file(str(ddp / "lora_diffusers.safetensors")))


def test_fsdp_checkpoints_hold_the_whole_optimizer_state(runs):
    checkpoint = runs["fsdp-router"] / "checkpoints" / "step-000004"
    saved = torch.load(checkpoint / "optimizer.pt", map_location="cpu", weights_only=True)
    adapter = load_file(str(checkpoint / "adapter_model.safetensors"))
    assert set(saved["state"]) == set(adapter)
    for name, moments in saved["state"].items():
        assert moments["exp_avg"].shape == adapter[name].shape, name
    assert (checkpoint / "rng-rank0.safetensors").is_file() and (checkpoint / "rng-rank1.safetensors").is_file()


def test_resumed_fsdp_run_repeats_the_uninterrupted_one(runs):
    resumed, straight = runs["fsdp-router-resumed"], runs["fsdp-router"]
    assert_close_tensors(load_file(str(resumed / "adapter" / "adapter_model.safetensors")),
                         load_file(str(straight / "adapter" / "adapter_model.safetensors")))


def test_blocks_to_shard_are_the_dual_and_single_stream_blocks(tiny_model_dir):
    transformer = load_transformer(tiny_model_dir, torch.float32)
    blocks = blocks_to_shard(transformer)
    assert blocks == [*transformer.transformer_blocks, *transformer.single_transformer_blocks]
    assert {type(b).__name__ for b in blocks} == set(SHARDED_BLOCK_CLASSES)


def test_fsdp_refuses_validation_sampling(tiny_model_dir, clip_manifest, built_cache, tmp_path):
    data = make_config_dict(tiny_model_dir, clip_manifest, built_cache, tmp_path / "run", training={"fsdp": True},
                            validation={"every": 2, "prompts": ["a red ball"]})
    with pytest.raises(ConfigError, match="validation.every"):
        config_from_dict(data)


def test_fsdp_needs_several_processes(tiny_model_dir, clip_manifest, built_cache, tmp_path):
    from ptta.train.trainer import train

    config = config_from_dict(make_config_dict(tiny_model_dir, clip_manifest, built_cache, tmp_path / "run",
                                               training={"fsdp": True}))
    with pytest.raises(ConfigError, match="training.fsdp shards the model over processes"):
        train(config, progress=False)


def test_fsdp_recipe_configs_parse(tiny_model_dir):
    from accelerate.commands.config.config_args import load_config_from_file

    configs = Path(__file__).resolve().parents[2] / "examples" / "ptta" / "configs"
    data = yaml.safe_load((configs / "train-fsdp.yaml").read_text())
    data["model"] = str(tiny_model_dir)  # the recipe names a real model directory, absent here
    config = config_from_dict(data, source="train-fsdp.yaml", base_dir=str(configs))
    assert config.training.fsdp and config.training.mixed_precision == "bf16"
    launch = load_config_from_file(str(configs / "accelerate-multi-gpu.yaml"))
    # a plain multi-process launch: accelerate's own FSDP plugin is what ptta refuses
    assert launch.distributed_type == "MULTI_GPU" and launch.num_processes == 8 and launch.mixed_precision == "no"
