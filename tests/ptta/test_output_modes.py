"""Files PTTA writes through safetensors take the umask's mode like every other output (#12).

safetensors' own `save_file` creates files 0600 whatever the umask, so a cache shard or a
checkpoint's RNG state could not be read by the group that reads the rest of the run folder.
"""

from __future__ import annotations

import os
import stat

import pytest
import torch

from ptta.cache.build import _write_shard
from ptta.train.checkpoint import _save_rng_state


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_cache_shards_and_rng_states_follow_the_umask(tmp_path, umask_022):
    shard = tmp_path / "shard-00000.safetensors"
    _write_shard(shard, {"clip/latents": torch.zeros(2, 3)}, [{"id": "clip"}], [])
    _save_rng_state(tmp_path, rank=0)
    assert mode(shard) == 0o644
    assert mode(tmp_path / "rng-rank0.safetensors") == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rng-rank0.json", "rng-rank0.safetensors",
                                                          "shard-00000.safetensors"]
