"""Forward GEMM: y = [x | s~] [W ; scale * B_cat]^T + bias, the adapter as an extension of K.

After the K loop of the base GEMM x W^T, each output tile runs N more steps of K = rank_pad:
a_i = scale * omega[:, i] * s (built in registers from s and omega, never stored) times B_i^T.
The adapter thus costs N * r extra K per tile and no second pass over y (LoRAFusion's layout).

`base_gemm` picks who computes x W^T: "triton" runs it in this kernel's K loop (the default);
"cublas" lets torch.mm do it and this kernel reads that result as its starting accumulator, one
extra read and write of y that a GPU benchmark can weigh against cuBLAS's faster main loop.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from hydralora.kernels.tiling import base_gemm_tile, dot_precision, gemm_configs, grouped_tile, rank_pad


@triton.autotune(configs=gemm_configs(), key=["M", "N", "K", "R", "NUM_HEADS", "FUSE_BASE"])
@triton.jit
def hydra_fused_fwd_kernel(
    x_ptr, w_ptr, base_ptr, bias_ptr, s_ptr, omega_ptr, b_ptr, y_ptr,
    M, N, K, R, NUM_HEADS,
    stride_xm, stride_xk, stride_wn, stride_wk, stride_basem, stride_basen,
    stride_sm, stride_sr, stride_om, stride_oh, stride_bh, stride_bn, stride_br, stride_ym, stride_yn,
    scale,
    FUSE_BASE: tl.constexpr, HAS_BIAS: tl.constexpr, R_PAD: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    # N is the output width d of the linear, K its input width k.
    pid_m, pid_n = grouped_tile(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)
    offs_m = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)  # token rows     [BLOCK_M]
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # output columns [BLOCK_N]
    offs_r = tl.arange(0, R_PAD)                      # ranks, padded  [R_PAD]
    mask_m = offs_m < M
    mask_n = offs_n < N
    mask_r = offs_r < R
    dtype = x_ptr.dtype.element_ty

    acc = base_gemm_tile(x_ptr, stride_xm, stride_xk, w_ptr, stride_wk, stride_wn, base_ptr, stride_basem, stride_basen,
                         offs_m, offs_n, mask_m, mask_n, K, BLOCK_M, BLOCK_N, BLOCK_K, FUSE_BASE, DOT_PRECISION)

    p_s = s_ptr + offs_m[:, None] * stride_sm + offs_r[None, :] * stride_sr  # [BLOCK_M, R_PAD]
    b_s = tl.load(p_s, mask=mask_m[:, None] & mask_r[None, :], other=0.0).to(tl.float32)
    for head in range(NUM_HEADS):
        p_o = omega_ptr + offs_m * stride_om + head * stride_oh  # [BLOCK_M]
        b_coef = scale * tl.load(p_o, mask=mask_m, other=0.0).to(tl.float32)
        b_a = (b_s * b_coef[:, None]).to(dtype)  # scale * omega_i * s, [BLOCK_M, R_PAD]
        p_b = b_ptr + head * stride_bh + offs_r[:, None] * stride_br + offs_n[None, :] * stride_bn  # B_i^T
        b_b = tl.load(p_b, mask=mask_r[:, None] & mask_n[None, :], other=0.0)
        acc = tl.dot(b_a, b_b, acc, input_precision=DOT_PRECISION)

    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    p_y = y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :] * stride_yn  # [BLOCK_M, BLOCK_N]
    tl.store(p_y, acc.to(y_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


def hydra_fused_forward(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    s: torch.Tensor,
    omega: torch.Tensor,
    lora_B: torch.Tensor,
    scale: float,
    base_gemm: str,
) -> torch.Tensor:
    """y = x W^T + bias + scale * sum_i omega_i s B_i^T, (M, d) in x's dtype.

    omega (M, N) may be fp32 probabilities or head weights of any dtype and strides (stride 0
    for broadcast rows); lora_B (N, d, r) is in x's dtype.
    """
    num_rows, in_features = x.shape
    num_heads, out_features, rank = lora_B.shape
    fuse_base = base_gemm == "triton"
    base = x if fuse_base else torch.mm(x, weight.t())  # `x` is a placeholder the kernel never reads
    y = torch.empty((num_rows, out_features), dtype=x.dtype, device=x.device)
    bias_arg = bias if bias is not None else y  # never read without a bias

    def grid(meta):
        return (triton.cdiv(num_rows, meta["BLOCK_M"]) * triton.cdiv(out_features, meta["BLOCK_N"]),)

    hydra_fused_fwd_kernel[grid](
        x, weight, base, bias_arg, s, omega, lora_B, y,
        num_rows, out_features, in_features, rank, num_heads,
        x.stride(0), x.stride(1), weight.stride(0), weight.stride(1), base.stride(0), base.stride(1),
        s.stride(0), s.stride(1), omega.stride(0), omega.stride(1),
        lora_B.stride(0), lora_B.stride(1), lora_B.stride(2), y.stride(0), y.stride(1),
        scale,
        FUSE_BASE=fuse_base, HAS_BIAS=bias is not None, R_PAD=rank_pad(rank), DOT_PRECISION=dot_precision(x.dtype),
    )
    return y
