"""Batches of cached clips: one bucket per batch, a seeded order per epoch, resumable by position.

An epoch's plan is fixed by (seed, epoch): clips are shuffled within their bucket, cut into
batches, and the batches shuffled. With several processes, rank r takes batches r, r+W, ... of a
plan cut to a multiple of W (so every rank runs the same number of steps); optimiser steps take
`accumulation` consecutive batches. A position (epoch, step in epoch) therefore names exactly the
data still to come, which is what a checkpoint stores.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch

from ptta.cache.build import CachedClip
from ptta.models.text_encoders import pad_prompt_batch


@dataclass
class Batch:
    latents: torch.Tensor        # (B, C, T, H, W) fp32, scaled
    prompt_embeds: torch.Tensor  # (B, L, D)
    prompt_mask: torch.Tensor    # (B, L)
    pooled: torch.Tensor         # (B, P)
    captions: list[str]


def epoch_plan(clips: list[CachedClip], batch_size: int, seed: int, epoch: int, world_size: int) -> list[list[int]]:
    """The epoch's batches (lists of clip indices) in the order all ranks together take them."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    by_bucket: dict[str, list[int]] = defaultdict(list)
    for index, clip in enumerate(clips):
        by_bucket[clip.bucket.key].append(index)
    batches = []
    for key in sorted(by_bucket):
        members = by_bucket[key]
        order = [members[i] for i in torch.randperm(len(members), generator=generator).tolist()]
        batches += [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
    return batches[:len(batches) - len(batches) % world_size]


def rank_step_groups(plan: list[list[int]], rank: int, world_size: int, accumulation: int) -> list[list[list[int]]]:
    """This rank's batches grouped per optimiser step (the last group may be shorter)."""
    mine = plan[rank::world_size]
    return [mine[i:i + accumulation] for i in range(0, len(mine), accumulation)]


def steps_per_epoch(plan: list[list[int]], world_size: int, accumulation: int) -> int:
    """Optimiser steps each rank takes in an epoch with this plan."""
    per_rank = len(plan) // world_size
    return -(-per_rank // accumulation)


class CachedClipReader:
    """Loads clips from the cache's shards (memory-mapped; each shard opened once)."""

    def __init__(self, clips: list[CachedClip]):
        self.clips = clips
        self._handles: dict[Path, object] = {}

    def _tensor(self, clip: CachedClip, name: str) -> torch.Tensor:
        from safetensors import safe_open

        handle = self._handles.get(clip.shard)
        if handle is None:
            handle = self._handles[clip.shard] = safe_open(str(clip.shard), framework="pt")
        return handle.get_tensor(f"{clip.id}/{name}").float()

    def batch(self, indices: list[int], device) -> Batch:
        chosen = [self.clips[i] for i in indices]
        latents = torch.stack([self._tensor(c, "latents") for c in chosen])
        embeds, mask = pad_prompt_batch([self._tensor(c, "prompt_embeds") for c in chosen])
        pooled = torch.stack([self._tensor(c, "pooled") for c in chosen])
        return Batch(latents.to(device), embeds.to(device), mask.to(device), pooled.to(device), [c.caption for c in chosen])
