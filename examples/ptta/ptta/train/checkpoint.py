"""Checkpoints that resume a run exactly, written so a crash never leaves a half-written one.

`OUT/checkpoints/step-000012/` holds the adapter (adapter_model.safetensors + adapter_config.json,
loadable by hydralora.load_adapter, and text_encoding.json for `ptta sample`), optimizer.pt
(AdamW moments; under FSDP gathered whole and keyed by parameter name), trainer_state.json (step, data
position, scheduler state, settings that must not change on resume) and rng-rank<r>.safetensors /
.json (torch, CUDA, numpy and Python random states of every process). Every process writes into
`step-000012.partial/`; the main process renames it into place once all files are there, then
deletes all but the newest `keep` checkpoints.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from ptta.config import HeadsConfig
from ptta.train.heads import log_head_report, write_caption_heads

CHECKPOINTS_DIR = "checkpoints"
STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.pt"
_STEP_DIR = re.compile(r"step-(\d+)")


class ResumeError(ValueError):
    """The checkpoint cannot continue this run (missing, or made with other settings)."""


def checkpoint_path(output_dir: Path, step: int) -> Path:
    return Path(output_dir) / CHECKPOINTS_DIR / f"step-{step:06d}"


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Finished checkpoints, oldest first (unfinished `.partial` folders are ignored)."""
    root = Path(output_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.fullmatch(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(output_dir: Path) -> Path | None:
    checkpoints = list_checkpoints(output_dir)
    return checkpoints[-1] if checkpoints else None


def save_checkpoint(accelerator, model, optimizer, scheduler, state: dict, output_dir: Path, keep: int,
                    max_sequence_length: int, fps: float, caption_heads: HeadsConfig | None = None) -> Path:
    """Write a checkpoint of step `state["step"]` from every process; returns its folder.
    `max_sequence_length` (the cache's prompt length limit) and `fps` are recorded beside the adapter,
    and `caption_heads` (the heads config of a run trained with caption heads). The head report of
    the step is appended to output_dir/heads.jsonl."""
    import hydralora

    from ptta.models.text_encoders import write_text_encoding
    from ptta.train.fsdp import full_adapter, is_sharded, optimizer_state_to_save

    final = checkpoint_path(output_dir, state["step"])
    staging = final.with_name(final.name + ".partial")
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    accelerator.wait_for_everyone()
    _save_rng_state(staging, accelerator.process_index)
    accelerator.wait_for_everyone()
    with full_adapter(model):
        if accelerator.is_main_process:
            hydralora.save_adapter(model, staging)
            write_text_encoding(staging, max_sequence_length, fps)
            if caption_heads is not None:
                write_caption_heads(staging, caption_heads.names, caption_heads.tags)
            log_head_report(model, output_dir, state["step"])
    sharded = is_sharded(model)
    optimizer_state = optimizer_state_to_save(model, optimizer) if sharded else optimizer.state_dict()
    if accelerator.is_main_process:
        torch.save(optimizer_state, staging / OPTIMIZER_FILE)
        full_state = {**state, "scheduler": scheduler.state_dict()}
        (staging / STATE_FILE).write_text(json.dumps(full_state, indent=2))
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
        for old in list_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(path: Path, accelerator, model, optimizer, scheduler) -> dict:
    """Restore adapter, optimiser, scheduler and this process's RNG states; returns the trainer state."""
    import hydralora

    from ptta.train.fsdp import full_adapter, is_sharded, load_optimizer_state

    path = Path(path)
    state_path = path / STATE_FILE
    if not state_path.is_file():
        raise ResumeError(f"{path} is not a finished checkpoint (no {STATE_FILE})")
    state = json.loads(state_path.read_text())
    if state["world_size"] != accelerator.num_processes:
        raise ResumeError(f"{path} was written by a run with {state['world_size']} processes; resume it with the same "
                          f"number (this run has {accelerator.num_processes}) so the data order stays the same")
    with full_adapter(model):
        hydralora.load_adapter(model, path)
    if is_sharded(model):
        # read once, on the main process, and scattered from there
        saved = None
        if accelerator.is_main_process:
            saved = torch.load(path / OPTIMIZER_FILE, map_location="cpu", weights_only=True)
        load_optimizer_state(model, optimizer, saved)
    else:
        optimizer.load_state_dict(torch.load(path / OPTIMIZER_FILE, map_location="cpu", weights_only=True))
    scheduler.load_state_dict(state.pop("scheduler"))
    _load_rng_state(path, accelerator.process_index)
    return state


def _save_rng_state(directory: Path, rank: int) -> None:
    # with the umask's mode (safetensors' own save_file writes 0600)
    from hydralora.io import save_safetensors

    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, cuda_state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = cuda_state
    save_safetensors(tensors, directory / f"rng-rank{rank}.safetensors")
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    payload = {
        "numpy": [kind, keys.tolist(), position, has_gauss, cached_gaussian],
        "python": [version, list(internal), gauss_next],
    }
    (directory / f"rng-rank{rank}.json").write_text(json.dumps(payload))


def _load_rng_state(directory: Path, rank: int) -> None:
    from safetensors.torch import load_file

    tensor_path = directory / f"rng-rank{rank}.safetensors"
    if not tensor_path.is_file():
        raise ResumeError(f"{directory} has no RNG state for process {rank}")
    tensors = load_file(str(tensor_path))
    torch.set_rng_state(tensors["torch"])
    if torch.cuda.is_available():
        cuda_keys = sorted((k for k in tensors if k.startswith("cuda.")), key=lambda k: int(k.split(".")[1]))
        cuda_states = [tensors[k] for k in cuda_keys]
        if cuda_states:
            torch.cuda.set_rng_state_all(cuda_states)
    payload = json.loads((directory / f"rng-rank{rank}.json").read_text())
    kind, keys, position, has_gauss, cached_gaussian = payload["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), position, has_gauss, cached_gaussian))
    version, internal, gauss_next = payload["python"]
    random.setstate((version, tuple(internal), gauss_next))
