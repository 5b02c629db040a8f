"""Backward reductions over the tokens: dB = scale * dy^T s~ and dA = ds^T dropout(x) (+ dWg = dlogits^T x).

Both are skinny GEMMs whose long axis M is the reduction axis. Programs tile the short output
axis (d for dB, k for dA) and split M into `reduction_splits` interleaved shares; each writes an
fp32 partial sum and the launcher adds them, which is deterministic, unlike atomics.
s~ = omega (x) s is rebuilt tile by tile in registers from s and omega, never stored.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from hydralora.kernels.dropout import dropout_keep
from hydralora.kernels.tiling import (
    MAX_CONCAT_BLOCK,
    column_reduction_configs,
    dot_precision,
    heads_pad,
    rank_pad,
    reduction_splits,
    router_pad,
)


@triton.autotune(configs=column_reduction_configs(), key=["M", "N", "R", "NUM_HEADS"])
@triton.jit
def hydra_lora_b_bwd_kernel(
    dy_ptr, s_ptr, omega_ptr, partial_ptr,
    M, N, R, NUM_HEADS, num_splits,
    stride_dym, stride_dyn, stride_sm, stride_sr, stride_om, stride_oh, stride_ps, stride_pn, stride_pc,
    scale,
    R_PAD: tl.constexpr, HEADS_PER_BLOCK: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    # partial[split, n, c] = scale * sum over this split's rows m of dy[m, n] * s~[m, c], c = head * R_PAD + rank,
    # for the HEADS_PER_BLOCK heads of this program. The head block is the fastest grid axis, so
    # programs sharing a dy tile run together (L2).
    pid_h = tl.program_id(0)
    pid_n = tl.program_id(1)
    pid_split = tl.program_id(2)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)                  # output columns of the linear [BLOCK_N]
    offs_h = pid_h * HEADS_PER_BLOCK + tl.arange(0, HEADS_PER_BLOCK)  # heads                        [HEADS_PER_BLOCK]
    offs_r = tl.arange(0, R_PAD)                                      # ranks, padded                [R_PAD]
    offs_c = pid_h * HEADS_PER_BLOCK * R_PAD + tl.arange(0, HEADS_PER_BLOCK * R_PAD)  # (head, rank) columns
    mask_n = offs_n < N
    mask_h = offs_h < NUM_HEADS
    mask_r = offs_r < R
    dtype = dy_ptr.dtype.element_ty

    acc = tl.zeros((BLOCK_N, HEADS_PER_BLOCK * R_PAD), dtype=tl.float32)
    for m0 in range(pid_split * BLOCK_M, M, num_splits * BLOCK_M):
        offs_m = (m0 + tl.arange(0, BLOCK_M)).to(tl.int64)  # [BLOCK_M]
        mask_m = offs_m < M
        p_dy = dy_ptr + offs_n[:, None] * stride_dyn + offs_m[None, :] * stride_dym  # dy^T [BLOCK_N, BLOCK_M]
        p_s = s_ptr + offs_m[:, None] * stride_sm + offs_r[None, :] * stride_sr      # [BLOCK_M, R_PAD]
        p_o = omega_ptr + offs_m[:, None] * stride_om + offs_h[None, :] * stride_oh  # [BLOCK_M, HEADS_PER_BLOCK]
        b_dy = tl.load(p_dy, mask=mask_n[:, None] & mask_m[None, :], other=0.0)
        b_s = tl.load(p_s, mask=mask_m[:, None] & mask_r[None, :], other=0.0).to(tl.float32)
        b_o = tl.load(p_o, mask=mask_m[:, None] & mask_h[None, :], other=0.0).to(tl.float32)
        b_s_tilde = tl.reshape(b_o[:, :, None] * b_s[:, None, :], (BLOCK_M, HEADS_PER_BLOCK * R_PAD))
        acc = tl.dot(b_dy, b_s_tilde.to(dtype), acc, input_precision=DOT_PRECISION)

    p_part = partial_ptr + pid_split * stride_ps + offs_n[:, None] * stride_pn + offs_c[None, :] * stride_pc
    tl.store(p_part, acc * scale, mask=mask_n[:, None])


@triton.autotune(
    configs=column_reduction_configs(),
    key=["M", "N", "R", "NUM_HEADS", "COMPUTE_A", "COMPUTE_ROUTER", "HAS_DROPOUT"],
)
@triton.jit(do_not_specialize=["seed"])
def hydra_lora_a_bwd_kernel(
    x_ptr, ds_ptr, dlogits_ptr, partial_a_ptr, partial_g_ptr,
    M, N, R, NUM_HEADS, num_splits,
    stride_xm, stride_xn, stride_dsm, stride_dsr, stride_dlm, stride_dlh,
    stride_pas, stride_par, stride_pan, stride_pgs, stride_pgh, stride_pgn,
    dropout_p, seed,
    COMPUTE_A: tl.constexpr, COMPUTE_ROUTER: tl.constexpr, HAS_DROPOUT: tl.constexpr,
    R_PAD: tl.constexpr, G_PAD: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    # N is the linear's input width k: partial_a[split] = ds^T dropout(x), partial_g[split] = dlogits^T x.
    pid_n = tl.program_id(0)
    pid_split = tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # input columns  [BLOCK_N]
    offs_r = tl.arange(0, R_PAD)                      # ranks, padded  [R_PAD]
    offs_g = tl.arange(0, G_PAD)                      # heads, padded  [G_PAD]
    mask_n = offs_n < N
    dtype = x_ptr.dtype.element_ty

    acc_a = tl.zeros((R_PAD, BLOCK_N), dtype=tl.float32)
    acc_g = tl.zeros((G_PAD, BLOCK_N), dtype=tl.float32)
    for m0 in range(pid_split * BLOCK_M, M, num_splits * BLOCK_M):
        offs_m = (m0 + tl.arange(0, BLOCK_M)).to(tl.int64)  # [BLOCK_M]
        mask_m = offs_m < M
        p_x = x_ptr + offs_m[:, None] * stride_xm + offs_n[None, :] * stride_xn  # [BLOCK_M, BLOCK_N]
        b_x = tl.load(p_x, mask=mask_m[:, None] & mask_n[None, :], other=0.0)
        if COMPUTE_ROUTER:
            p_dl = dlogits_ptr + offs_g[:, None] * stride_dlh + offs_m[None, :] * stride_dlm  # dlogits^T
            b_dl = tl.load(p_dl, mask=(offs_g[:, None] < NUM_HEADS) & mask_m[None, :], other=0.0).to(dtype)
            acc_g = tl.dot(b_dl, b_x, acc_g, input_precision=DOT_PRECISION)
        if COMPUTE_A:
            if HAS_DROPOUT:
                keep = dropout_keep(seed, offs_m, offs_n, N, dropout_p)
                b_x = tl.where(keep, b_x.to(tl.float32) / (1.0 - dropout_p), 0.0).to(dtype)
            p_ds = ds_ptr + offs_r[:, None] * stride_dsr + offs_m[None, :] * stride_dsm  # ds^T [R_PAD, BLOCK_M]
            b_ds = tl.load(p_ds, mask=(offs_r[:, None] < R) & mask_m[None, :], other=0.0)
            acc_a = tl.dot(b_ds, b_x, acc_a, input_precision=DOT_PRECISION)

    if COMPUTE_A:
        p_pa = partial_a_ptr + pid_split * stride_pas + offs_r[:, None] * stride_par + offs_n[None, :] * stride_pan
        tl.store(p_pa, acc_a, mask=(offs_r[:, None] < R) & mask_n[None, :])
    if COMPUTE_ROUTER:
        p_pg = partial_g_ptr + pid_split * stride_pgs + offs_g[:, None] * stride_pgh + offs_n[None, :] * stride_pgn
        tl.store(p_pg, acc_g, mask=(offs_g[:, None] < NUM_HEADS) & mask_n[None, :])


def hydra_lora_b_backward(
    grad_y: torch.Tensor, s: torch.Tensor, omega: torch.Tensor, num_heads: int, scale: float
) -> torch.Tensor:
    """dB (N, d, r) in fp32: dB_i = scale * dy^T (omega_i s)."""
    num_rows, out_features = grad_y.shape
    rank = s.shape[1]
    r_pad, h_pad = rank_pad(rank), heads_pad(num_heads)
    # Wider accumulators would spill (N = 12, r = 32 is 512 columns); both are powers of two.
    heads_per_block = max(1, min(h_pad, MAX_CONCAT_BLOCK // r_pad))
    head_blocks = h_pad // heads_per_block
    splits = reduction_splits(num_rows, head_blocks * triton.cdiv(out_features, 128), grad_y.device)
    partial = torch.empty((splits, out_features, h_pad * r_pad), dtype=torch.float32, device=grad_y.device)

    def grid(meta):
        return (head_blocks, triton.cdiv(out_features, meta["BLOCK_N"]), splits)

    hydra_lora_b_bwd_kernel[grid](
        grad_y, s, omega, partial,
        num_rows, out_features, rank, num_heads, splits,
        grad_y.stride(0), grad_y.stride(1), s.stride(0), s.stride(1), omega.stride(0), omega.stride(1),
        partial.stride(0), partial.stride(1), partial.stride(2),
        scale,
        R_PAD=r_pad, HEADS_PER_BLOCK=heads_per_block, DOT_PRECISION=dot_precision(grad_y.dtype),
    )
    grad_b_cat = partial.sum(0).view(out_features, h_pad, r_pad)[:, :num_heads, :rank]
    return grad_b_cat.permute(1, 0, 2)


def hydra_lora_a_backward(
    x: torch.Tensor,
    ds: torch.Tensor,
    dlogits: torch.Tensor | None,
    compute_a: bool,
    dropout_p: float,
    seed: int,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(dA (r, k), dWg (N, k)) in fp32 from one pass over x; dWg only when `dlogits` (router on x) is given."""
    num_rows, in_features = x.shape
    rank = ds.shape[1]
    compute_router = dlogits is not None
    num_heads = dlogits.shape[1] if compute_router else 1
    splits = reduction_splits(num_rows, triton.cdiv(in_features, 128), x.device)
    partial_a = partial_g = None
    if compute_a:
        partial_a = torch.empty((splits, rank, in_features), dtype=torch.float32, device=x.device)
    if compute_router:
        partial_g = torch.empty((splits, num_heads, in_features), dtype=torch.float32, device=x.device)
    partial_a_arg = partial_a if compute_a else partial_g  # each never touched when its flag is off
    partial_g_arg = partial_g if compute_router else partial_a
    dlogits_arg = dlogits if compute_router else ds

    def grid(meta):
        return (triton.cdiv(in_features, meta["BLOCK_N"]), splits)

    hydra_lora_a_bwd_kernel[grid](
        x, ds, dlogits_arg, partial_a_arg, partial_g_arg,
        num_rows, in_features, rank, num_heads, splits,
        x.stride(0), x.stride(1), ds.stride(0), ds.stride(1), dlogits_arg.stride(0), dlogits_arg.stride(1),
        partial_a_arg.stride(0), partial_a_arg.stride(1), partial_a_arg.stride(2),
        partial_g_arg.stride(0), partial_g_arg.stride(1), partial_g_arg.stride(2),
        dropout_p, seed,
        COMPUTE_A=compute_a, COMPUTE_ROUTER=compute_router, HAS_DROPOUT=dropout_p > 0,
        R_PAD=rank_pad(rank), G_PAD=router_pad(num_heads), DOT_PRECISION=dot_precision(x.dtype),
    )
    grad_a = partial_a.sum(0) if compute_a else None
    grad_router = partial_g.sum(0) if compute_router else None
    return grad_a, grad_router
