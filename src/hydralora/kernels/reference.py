"""Plain PyTorch HydraLinear: the readable reference every kernel is tested against, and the CPU path.

Shapes (x flattened to M x k):
    x (M, k), W (d, k), bias (d,), A (r, k), B (N, d, r), omega (M, N)
    s = dropout(x) A^T                      (M, r)    computed once, shared by every head
    s~ = omega (x) s                        (M, N*r)  s~[m, i*r + j] = omega[m, i] * s[m, j]
    B_cat = [B_1 ... B_N]                   (d, N*r)
    y = x W^T + bias + scale * s~ B_cat^T   (M, d)
so the N heads act as one adapter of rank N*r and A x is never recomputed per head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def router_probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Dense softmax gate in fp32 (as the official HydraLoRA code), tempered by `temperature`."""
    return torch.softmax(logits.float() / temperature, dim=-1)


def hydra_linear_torch(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    lora_A: torch.Tensor,
    lora_B: torch.Tensor,
    scale: float,
    head_weights: torch.Tensor | None = None,
    router_weight: torch.Tensor | None = None,
    router_on_lora: bool = False,
    temperature: float = 1.0,
    dropout_p: float = 0.0,
    training: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """y = x W^T + bias + scale * sum_i omega_i B_i A dropout(x), on a 2-D x (M, k).

    Exactly one of `head_weights` (M, N), any strides, expanded views allowed) and
    `router_weight` (N, k) or (N, r) when `router_on_lora`) is given. Returns (y, probs), where
    probs is the router's fp32 (M, N) softmax or None. Adapter tensors are cast to x's dtype;
    autograd carries their gradients back to the parameters' own dtype.
    """
    num_heads, d, r = lora_B.shape
    dtype = x.dtype
    y = F.linear(x, weight, bias)
    x_adapter = F.dropout(x, p=dropout_p, training=True) if (training and dropout_p > 0) else x
    s = x_adapter @ lora_A.to(dtype).t()
    probs = None
    if router_weight is not None:
        router_in = s if router_on_lora else x
        probs = router_probs(router_in @ router_weight.to(dtype).t(), temperature)
        omega = probs
    else:
        omega = head_weights
    s_tilde = (omega.to(dtype).unsqueeze(-1) * s.unsqueeze(1)).reshape(x.shape[0], num_heads * r)
    b_cat = lora_B.to(dtype).permute(1, 0, 2).reshape(d, num_heads * r)
    return y + scale * (s_tilde @ b_cat.t()), probs
