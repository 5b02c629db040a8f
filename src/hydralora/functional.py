"""`hydra_linear`: the functional HydraLoRA linear that `HydraLinear` calls, with a backend switch.

Backends: "torch" (the plain reference, also the CPU path) and "triton" (fused kernels). The
default "auto" picks Triton for fp32/fp16/bf16 CUDA tensors when Triton imports and the adapter is
no wider than the kernels hold (`fits_kernels`: N x r up to 2048 padded), else the reference. The
environment variable HYDRALORA_BACKEND=torch|triton|auto or `set_backend` forces one; CI sets
triton together with TRITON_INTERPRET=1 to run the kernels on the CPU.
"""

from __future__ import annotations

import functools
import os

import torch

from hydralora.kernels import KERNEL_DTYPES
from hydralora.kernels.reference import hydra_linear_torch

BACKENDS = ("auto", "torch", "triton")
_forced_backend: str | None = None


def set_backend(name: str | None) -> None:
    """Force a backend for every later call ("auto", "torch", "triton"); None defers to the env."""
    global _forced_backend
    if name is not None and name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    _forced_backend = name


def resolve_backend(x: torch.Tensor, backend: str | None = None, num_heads: int = 1, rank: int = 1) -> str:
    """The backend a call on `x` (with N = `num_heads` heads of rank `rank`) runs: the argument,
    else set_backend, else HYDRALORA_BACKEND."""
    name = backend or _forced_backend or os.environ.get("HYDRALORA_BACKEND", "auto")
    if name not in BACKENDS:
        raise ValueError(f"HydraLoRA backend must be one of {BACKENDS}, got {name!r}")
    if name == "auto":
        if not (x.is_cuda and x.dtype in KERNEL_DTYPES and _triton_available()):
            return "torch"
        from hydralora.kernels.tiling import fits_kernels

        return "triton" if fits_kernels(num_heads, rank) else "torch"
    return name


@functools.cache  # asked on every CUDA call: a failing import would search sys.path each time
def _triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def expand_head_weights(head_weights: torch.Tensor, lead_shape: torch.Size, num_heads: int) -> torch.Tensor:
    """Broadcast head weights to one row per token, (M, N), as a view where possible.

    Accepted: (N,) per layer; (B, N) per sample, B = lead_shape[0]; (*lead_shape, N) per token.
    """
    if head_weights.shape[-1] != num_heads:
        raise ValueError(
            f"head weights have {head_weights.shape[-1]} entries in their last dim, the adapter has {num_heads} heads"
        )
    if head_weights.dim() == 1:
        expanded = head_weights.view(*([1] * len(lead_shape)), num_heads).expand(*lead_shape, num_heads)
    elif tuple(head_weights.shape[:-1]) == tuple(lead_shape):
        expanded = head_weights
    elif head_weights.dim() == 2 and len(lead_shape) >= 1 and head_weights.shape[0] == lead_shape[0]:
        view_shape = (lead_shape[0],) + (1,) * (len(lead_shape) - 1) + (num_heads,)
        expanded = head_weights.view(view_shape).expand(*lead_shape, num_heads)
    else:
        raise ValueError(
            f"head weights of shape {tuple(head_weights.shape)} fit neither per layer ({num_heads},), "
            f"per sample ({lead_shape[0] if len(lead_shape) else '?'}, {num_heads}) nor per token "
            f"{tuple(lead_shape) + (num_heads,)} for an input with leading dims {tuple(lead_shape)}"
        )
    return expanded.reshape(-1, num_heads)


def hydra_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    lora_A: torch.Tensor,
    lora_B: torch.Tensor,
    scale: float,
    *,
    head_weights: torch.Tensor | None = None,
    router_weight: torch.Tensor | None = None,
    router_on_lora: bool = False,
    temperature: float = 1.0,
    dropout_p: float = 0.0,
    training: bool = False,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """y = x W^T + bias + scale * sum_i omega_i B_i A dropout(x) for x of shape (..., k).

    Give `head_weights` ((N,), (B, N) or (..., N), see `expand_head_weights`; any strides and
    dtype, integer and bool one-hot labels included) for per-layer, per-sample or per-token mixing,
    or `router_weight` ((N, k), or (N, r) with `router_on_lora`) for the per-token softmax router;
    head_weights win when both are given. Returns y (..., d) and the router's fp32 probabilities
    (..., N) (None without a router).
    """
    num_heads, d, rank = lora_B.shape
    lead_shape = x.shape[:-1]
    x2d = x.reshape(-1, x.shape[-1])
    if head_weights is not None:
        if not head_weights.is_floating_point():  # one-hot labels (int64, bool): the kernels read floats
            head_weights = head_weights.to(x.dtype)
        head_weights = expand_head_weights(head_weights, lead_shape, num_heads)
        router_weight = None
    elif router_weight is None:
        raise ValueError("hydra_linear needs head_weights or router_weight")
    args = (x2d, weight, bias, lora_A, lora_B, scale, head_weights, router_weight, router_on_lora,
            temperature, dropout_p, training)
    if resolve_backend(x, backend, num_heads, rank) == "triton":
        from hydralora.kernels.hydra_linear import hydra_linear_triton

        y, probs = hydra_linear_triton(*args)
    else:
        y, probs = hydra_linear_torch(*args)
    y = y.reshape(*lead_shape, d)
    return y, (None if probs is None else probs.reshape(*lead_shape, num_heads))
