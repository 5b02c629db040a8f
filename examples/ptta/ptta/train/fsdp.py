"""`training.fsdp`: the frozen base transformer sharded over the processes with FSDP2 (`fully_shard`).

Each HunyuanVideoTransformerBlock and HunyuanVideoSingleTransformerBlock is one FSDP unit
(its frozen linears and their HydraLoRA adapters together), the rest of the transformer the
root unit. FSDP2 keeps the module tree and the original parameters (as DTensor shards), so
hydralora finds its layers as without sharding; only the adapter tensors have to be gathered
whole to be saved, and scattered back after a load. The same code runs on GPUs (NCCL) and on
CPU processes (gloo), where the tests run it.

ptta shards the model itself, rather than through accelerate's FSDP plugin, because accelerate
only enables its plugin on accelerators; launch with a plain multi-process config.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn as nn

SHARDED_BLOCK_CLASSES = ("HunyuanVideoTransformerBlock", "HunyuanVideoSingleTransformerBlock")


def blocks_to_shard(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks that become FSDP units, in model order."""
    return [m for m in model.modules() if type(m).__name__ in SHARDED_BLOCK_CLASSES]


def shard_transformer(model: nn.Module) -> nn.Module:
    """Shard `model` in place over the default process group: one unit per block, then the root."""
    from torch.distributed.fsdp import fully_shard

    blocks = blocks_to_shard(model)
    if not blocks:
        raise ValueError(f"{type(model).__name__} has none of {SHARDED_BLOCK_CLASSES} to shard")
    for block in blocks:
        fully_shard(block)
    fully_shard(model)
    return model


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


@contextmanager
def full_adapter(model: nn.Module) -> Iterator[None]:
    """Inside, the adapter parameters are whole tensors on every process, so hydralora's save, load
    and export work unchanged; on leaving, their values (new ones after a load) go back into the
    shards. Only the adapter is gathered, never the base. Every process must enter it (gathering
    is collective); for an unsharded model it does nothing."""
    import hydralora
    from torch.distributed.tensor import DTensor, distribute_tensor

    if not is_sharded(model):
        yield
        return
    swapped = []
    for _, layer in hydralora.hydra_layers(model):
        owners = [(layer, n) for n in ("lora_A", "lora_B", "head_weights")] + [(layer.router, "weight")]
        for owner, name in owners:
            sharded = owner._parameters.get(name) if owner is not None else None
            if isinstance(sharded, DTensor):
                setattr(owner, name, nn.Parameter(sharded.full_tensor().detach(), requires_grad=sharded.requires_grad))
                swapped.append((owner, name, sharded))
    try:
        yield
    finally:
        with torch.no_grad():
            for owner, name, sharded in swapped:
                whole = getattr(owner, name)
                sharded.copy_(distribute_tensor(whole.detach(), sharded.device_mesh, sharded.placements))
                setattr(owner, name, sharded)


def optimizer_state_to_save(model: nn.Module, optimizer) -> dict | None:
    """The whole optimiser state (keyed by parameter name) on the main process, None on the others.

    Every process must call it: the AdamW moments are gathered from the shards."""
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    state = get_optimizer_state_dict(model, _torch_optimizer(optimizer),
                                     options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return state if dist.get_rank() == 0 else None


def load_optimizer_state(model: nn.Module, optimizer, state: dict | None) -> None:
    """Scatter a state from `optimizer_state_to_save`, read by the main process only (`None` on the others)."""
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    if (dist.get_rank() == 0) != (state is not None):
        raise ValueError("the optimiser state must be read by the main process and only there")
    set_optimizer_state_dict(model, _torch_optimizer(optimizer), optim_state_dict=state or {},
                             options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))


@contextmanager
def gradient_sync(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Skip FSDP's gradient reduce-scatter on all but the last micro-batch of an optimiser step."""
    model.set_requires_gradient_sync(enabled)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def _torch_optimizer(optimizer):
    # accelerate wraps the optimiser; the torch state-dict helpers need the torch one inside
    return getattr(optimizer, "optimizer", optimizer)
