"""Two CPU processes (torchrun, gloo, DDP through accelerate) end with identical adapters."""

from __future__ import annotations

import os
import subprocess
import sys

import torch
import yaml
from safetensors.torch import load_file
from test_train_fixtures import built_cache, clip_manifest, make_config_dict, tiny_model_dir  # noqa: F401

# Each rank trains, then writes the adapter it holds in memory.
RANK_SCRIPT = """
import sys
import hydralora
import torch.distributed as dist
from safetensors.torch import save_file
from ptta.config import load_config
from ptta.train.trainer import end_distributed, train

result = train(load_config(sys.argv[1]), progress=False)
state = {k: v.detach().contiguous() for k, v in hydralora.adapter_state_dict(result.model).items()}
save_file(state, f"{sys.argv[2]}/rank{dist.get_rank()}.safetensors")
end_distributed()
"""


def test_two_processes_end_with_identical_adapters(tiny_model_dir, clip_manifest, built_cache, tmp_path):
    data = make_config_dict(tiny_model_dir, clip_manifest, built_cache, tmp_path / "run",
                            training={"batch_size": 1, "epochs": 2, "checkpoint_every": 2})
    config_path = tmp_path / "run.yaml"
    config_path.write_text(yaml.safe_dump(data))
    script = tmp_path / "rank_train.py"
    script.write_text(RANK_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(script), str(config_path), str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    rank0, rank1 = load_file(str(tmp_path / "rank0.safetensors")), load_file(str(tmp_path / "rank1.safetensors"))
    assert rank0.keys() == rank1.keys() and rank0
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    saved = load_file(str(tmp_path / "run" / "adapter" / "adapter_model.safetensors"))
    for key in rank0:
        assert torch.equal(saved[key], rank0[key]), key
    # 4 clips, batch 1, 2 ranks: 2 steps per epoch, 2 epochs; both ranks' RNG states are checkpointed
    checkpoint = tmp_path / "run" / "checkpoints" / "step-000004"
    assert (checkpoint / "rng-rank0.safetensors").is_file() and (checkpoint / "rng-rank1.safetensors").is_file()
