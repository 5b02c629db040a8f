"""Backends of `hydralora.functional.hydra_linear`: the PyTorch reference and the Triton kernels."""

import torch

from hydralora.kernels.reference import hydra_linear_torch, router_probs

# What the Triton kernels compute in: tl.dot has no fp64 path into their fp32 accumulators.
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# The heads backward keeps one row block's whole concatenated rank, heads_pad x rank_pad columns
# (powers of two, rank_pad >= 16), in registers and shared memory. At 2048 (16 heads of r = 128)
# it takes 132 KiB on sm_90 in bf16; at 4096 it takes 263 KiB, more than an H100 has
# (`python -m hydralora.kernels.compile_check` measures it). Wider adapters run the reference.
MAX_CONCAT_RANK = 2048


def padded_concat_rank(num_heads: int, rank: int) -> int:
    """heads_pad x rank_pad: the concatenated rank as the kernels lay it out."""
    return (1 << (num_heads - 1).bit_length()) * max(16, 1 << (rank - 1).bit_length())


def fits_kernels(num_heads: int, rank: int) -> bool:
    return padded_concat_rank(num_heads, rank) <= MAX_CONCAT_RANK


__all__ = ["KERNEL_DTYPES", "MAX_CONCAT_RANK", "fits_kernels", "hydra_linear_torch", "padded_concat_rank",
           "router_probs"]
