"""Backends of `hydralora.functional.hydra_linear`: the PyTorch reference and the Triton kernels."""

import torch

from hydralora.kernels.reference import hydra_linear_torch, router_probs

# What the Triton kernels compute in: tl.dot has no fp64 path into their fp32 accumulators.
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

__all__ = ["KERNEL_DTYPES", "hydra_linear_torch", "router_probs"]
