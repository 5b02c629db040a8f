"""Shrink: s = dropout(x) A^T once per token, and the router's tempered softmax over the heads.

One program owns BLOCK_M rows and the whole padded rank, so s rows are complete in registers and
the router runs in the epilogue: on x its logits x Wg^T accumulate in the same pass over x (on the
raw x: the reference routes before dropout), on A x they are one small dot s Wg^T. x is read once.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from hydralora.kernels.dropout import dropout_keep
from hydralora.kernels.tiling import dot_precision, prune_row_blocks, rank_pad, router_pad, row_pass_configs


@triton.autotune(
    configs=row_pass_configs(),
    key=["M", "K", "R", "NUM_HEADS", "ROUTER_ON_X", "ROUTER_ON_LORA", "HAS_DROPOUT"],
    prune_configs_by={"early_config_prune": prune_row_blocks(lambda kw: kw["R_PAD"] + kw["G_PAD"])},
)
@triton.jit(do_not_specialize=["seed"])
def hydra_shrink_fwd_kernel(
    x_ptr, a_ptr, router_ptr, s_ptr, probs_ptr,
    M, K, R, NUM_HEADS,
    stride_xm, stride_xk, stride_ar, stride_ak, stride_gh, stride_gc, stride_sm, stride_sr, stride_pm, stride_ph,
    inv_temperature, dropout_p, seed,
    ROUTER_ON_X: tl.constexpr, ROUTER_ON_LORA: tl.constexpr, HAS_DROPOUT: tl.constexpr,
    R_PAD: tl.constexpr, G_PAD: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
):
    offs_m = (tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)  # token rows    [BLOCK_M]
    offs_r = tl.arange(0, R_PAD)                                # ranks, padded [R_PAD]
    offs_g = tl.arange(0, G_PAD)                                # heads, padded [G_PAD]
    mask_m = offs_m < M
    mask_r = offs_r < R
    mask_g = offs_g < NUM_HEADS

    acc_s = tl.zeros((BLOCK_M, R_PAD), dtype=tl.float32)
    acc_logits = tl.zeros((BLOCK_M, G_PAD), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)  # [BLOCK_K]
        mask_k = offs_k < K
        p_x = x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :] * stride_xk  # [BLOCK_M, BLOCK_K]
        b_x = tl.load(p_x, mask=mask_m[:, None] & mask_k[None, :], other=0.0)
        p_a = a_ptr + offs_k[:, None] * stride_ak + offs_r[None, :] * stride_ar  # A^T [BLOCK_K, R_PAD]
        b_a = tl.load(p_a, mask=mask_k[:, None] & mask_r[None, :], other=0.0)
        if ROUTER_ON_X:
            p_g = router_ptr + offs_k[:, None] * stride_gc + offs_g[None, :] * stride_gh  # Wg^T [BLOCK_K, G_PAD]
            b_g = tl.load(p_g, mask=mask_k[:, None] & mask_g[None, :], other=0.0)
            acc_logits = tl.dot(b_x, b_g, acc_logits, input_precision=DOT_PRECISION)
        if HAS_DROPOUT:
            keep = dropout_keep(seed, offs_m, offs_k, K, dropout_p)
            b_x = tl.where(keep, b_x.to(tl.float32) / (1.0 - dropout_p), 0.0).to(x_ptr.dtype.element_ty)
        acc_s = tl.dot(b_x, b_a, acc_s, input_precision=DOT_PRECISION)

    b_s = acc_s.to(s_ptr.dtype.element_ty)
    p_s = s_ptr + offs_m[:, None] * stride_sm + offs_r[None, :] * stride_sr  # [BLOCK_M, R_PAD]
    tl.store(p_s, b_s, mask=mask_m[:, None] & mask_r[None, :])

    if ROUTER_ON_X or ROUTER_ON_LORA:
        if ROUTER_ON_LORA:
            p_g = router_ptr + offs_r[:, None] * stride_gc + offs_g[None, :] * stride_gh  # Wg^T [R_PAD, G_PAD]
            b_g = tl.load(p_g, mask=mask_r[:, None] & mask_g[None, :], other=0.0)
            acc_logits = tl.dot(b_s, b_g, input_precision=DOT_PRECISION)
        logits = tl.where(mask_g[None, :], acc_logits * inv_temperature, float("-inf"))
        logits = logits - tl.max(logits, axis=1)[:, None]
        numerators = tl.exp(logits)
        probs = numerators / tl.sum(numerators, axis=1)[:, None]
        p_p = probs_ptr + offs_m[:, None] * stride_pm + offs_g[None, :] * stride_ph  # [BLOCK_M, G_PAD]
        tl.store(p_p, probs, mask=mask_m[:, None] & mask_g[None, :])


def hydra_shrink(
    x: torch.Tensor,
    lora_A: torch.Tensor,
    router_weight: torch.Tensor | None,
    router_on_lora: bool,
    num_heads: int,
    temperature: float,
    dropout_p: float,
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """s = dropout(x) A^T (M, r) in x's dtype and the router's fp32 probabilities (M, N) or None.

    Every tensor is already in x's dtype; dropout is off when dropout_p == 0.
    """
    num_rows, num_cols = x.shape
    rank = lora_A.shape[0]
    has_router = router_weight is not None
    s = torch.empty((num_rows, rank), dtype=x.dtype, device=x.device)
    probs = torch.empty((num_rows, num_heads), dtype=torch.float32, device=x.device) if has_router else None
    router_arg = router_weight if has_router else lora_A  # never read without a router
    probs_arg = probs if has_router else s  # never written without a router

    def grid(meta):
        return (triton.cdiv(num_rows, meta["BLOCK_M"]),)

    hydra_shrink_fwd_kernel[grid](
        x, lora_A, router_arg, s, probs_arg,
        num_rows, num_cols, rank, num_heads,
        x.stride(0), x.stride(1), lora_A.stride(0), lora_A.stride(1),
        router_arg.stride(0), router_arg.stride(1), s.stride(0), s.stride(1), probs_arg.stride(0), probs_arg.stride(1),
        1.0 / temperature, dropout_p, seed,
        ROUTER_ON_X=has_router and not router_on_lora, ROUTER_ON_LORA=has_router and router_on_lora,
        HAS_DROPOUT=dropout_p > 0, R_PAD=rank_pad(rank), G_PAD=router_pad(num_heads),
        DOT_PRECISION=dot_precision(x.dtype),
    )
    return s, probs
