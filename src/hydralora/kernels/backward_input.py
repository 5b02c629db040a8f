"""Backward GEMM for the input: dx = dy W + dropout'(ds A) + dlogits Wg, the adapter extending K.

After the K loop over d of the base dy W, each tile adds ds A (K = rank_pad) and, with a router
on x, dlogits Wg (K = router_pad). Dropout was applied to the adapter's copy of x only, so its
term passes through the same regenerated mask (keep / (1 - p)); that needs its own accumulator
and is applied in the epilogue. `base_gemm` = "cublas" starts from torch.mm(dy, W) instead of the
K loop, like the forward.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from hydralora.kernels.dropout import dropout_keep
from hydralora.kernels.tiling import base_gemm_tile, dot_precision, gemm_configs, grouped_tile, rank_pad, router_pad


@triton.autotune(
    configs=gemm_configs(), key=["M", "N", "K", "R", "NUM_HEADS", "FUSE_BASE", "ROUTER_ON_X", "HAS_DROPOUT"]
)
@triton.jit(do_not_specialize=["seed"])
def hydra_fused_dx_kernel(
    dy_ptr, w_ptr, base_ptr, ds_ptr, a_ptr, dlogits_ptr, router_ptr, dx_ptr,
    M, N, K, R, NUM_HEADS,
    stride_dym, stride_dyk, stride_wk, stride_wn, stride_basem, stride_basen, stride_dsm, stride_dsr,
    stride_ar, stride_an, stride_dlm, stride_dlh, stride_gh, stride_gn, stride_dxm, stride_dxn,
    dropout_p, seed,
    FUSE_BASE: tl.constexpr, ROUTER_ON_X: tl.constexpr, HAS_DROPOUT: tl.constexpr,
    R_PAD: tl.constexpr, G_PAD: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    # N is the linear's input width k (columns of dx), K its output width d (the reduction).
    pid_m, pid_n = grouped_tile(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)
    offs_m = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)  # token rows     [BLOCK_M]
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # input columns  [BLOCK_N]
    offs_r = tl.arange(0, R_PAD)                      # ranks, padded  [R_PAD]
    offs_g = tl.arange(0, G_PAD)                      # heads, padded  [G_PAD]
    mask_m = offs_m < M
    mask_n = offs_n < N
    mask_r = offs_r < R
    mask_g = offs_g < NUM_HEADS
    dtype = dy_ptr.dtype.element_ty

    acc = base_gemm_tile(dy_ptr, stride_dym, stride_dyk, w_ptr, stride_wk, stride_wn, base_ptr, stride_basem, stride_basen,
                         offs_m, offs_n, mask_m, mask_n, K, BLOCK_M, BLOCK_N, BLOCK_K, FUSE_BASE, DOT_PRECISION)

    p_ds = ds_ptr + offs_m[:, None] * stride_dsm + offs_r[None, :] * stride_dsr  # [BLOCK_M, R_PAD]
    p_a = a_ptr + offs_r[:, None] * stride_ar + offs_n[None, :] * stride_an      # [R_PAD, BLOCK_N]
    b_ds = tl.load(p_ds, mask=mask_m[:, None] & mask_r[None, :], other=0.0)
    b_a = tl.load(p_a, mask=mask_r[:, None] & mask_n[None, :], other=0.0)
    if HAS_DROPOUT:
        b_lora = tl.dot(b_ds, b_a, input_precision=DOT_PRECISION)
        keep = dropout_keep(seed, offs_m, offs_n, N, dropout_p)
        acc += tl.where(keep, b_lora / (1.0 - dropout_p), 0.0)
    else:
        acc = tl.dot(b_ds, b_a, acc, input_precision=DOT_PRECISION)

    if ROUTER_ON_X:
        p_dl = dlogits_ptr + offs_m[:, None] * stride_dlm + offs_g[None, :] * stride_dlh  # [BLOCK_M, G_PAD]
        p_g = router_ptr + offs_g[:, None] * stride_gh + offs_n[None, :] * stride_gn      # [G_PAD, BLOCK_N]
        b_dl = tl.load(p_dl, mask=mask_m[:, None] & mask_g[None, :], other=0.0).to(dtype)
        b_g = tl.load(p_g, mask=mask_g[:, None] & mask_n[None, :], other=0.0)
        acc = tl.dot(b_dl, b_g, acc, input_precision=DOT_PRECISION)

    p_dx = dx_ptr + offs_m[:, None] * stride_dxm + offs_n[None, :] * stride_dxn  # [BLOCK_M, BLOCK_N]
    tl.store(p_dx, acc.to(dx_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


def hydra_fused_grad_input(
    grad_y: torch.Tensor,
    weight: torch.Tensor,
    ds: torch.Tensor,
    lora_A: torch.Tensor,
    dlogits: torch.Tensor | None,
    router_weight: torch.Tensor | None,
    dropout_p: float,
    seed: int,
    base_gemm: str,
) -> torch.Tensor:
    """dx (M, k) in dy's dtype; `dlogits` and `router_weight` are given for a router on x only."""
    num_rows, out_features = grad_y.shape
    rank, in_features = lora_A.shape
    router_on_x = dlogits is not None
    num_heads = dlogits.shape[1] if router_on_x else 1
    fuse_base = base_gemm == "triton"
    base = grad_y if fuse_base else torch.mm(grad_y, weight)  # `grad_y` is a placeholder never read
    dx = torch.empty((num_rows, in_features), dtype=grad_y.dtype, device=grad_y.device)
    dlogits_arg = dlogits if router_on_x else ds  # never read without a router on x
    router_arg = router_weight if router_on_x else lora_A

    def grid(meta):
        return (triton.cdiv(num_rows, meta["BLOCK_M"]) * triton.cdiv(in_features, meta["BLOCK_N"]),)

    hydra_fused_dx_kernel[grid](
        grad_y, weight, base, ds, lora_A, dlogits_arg, router_arg, dx,
        num_rows, in_features, out_features, rank, num_heads,
        grad_y.stride(0), grad_y.stride(1), weight.stride(0), weight.stride(1), base.stride(0), base.stride(1),
        ds.stride(0), ds.stride(1), lora_A.stride(0), lora_A.stride(1),
        dlogits_arg.stride(0), dlogits_arg.stride(1), router_arg.stride(0), router_arg.stride(1),
        dx.stride(0), dx.stride(1),
        dropout_p, seed,
        FUSE_BASE=fuse_base, ROUTER_ON_X=router_on_x, HAS_DROPOUT=dropout_p > 0,
        R_PAD=rank_pad(rank), G_PAD=router_pad(num_heads), DOT_PRECISION=dot_precision(grad_y.dtype),
    )
    return dx
