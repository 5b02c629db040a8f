"""Backward pass over dy for the heads: ds~ = scale * dy B_cat, reduced at once to ds and d omega.

One program owns BLOCK_M rows and the whole concatenated rank heads_pad * rank_pad, so after the
loop over d the row block of ds~ is complete in registers; it is never stored. Seen as
(BLOCK_M, heads, rank) it gives
    d omega[m, i] = sum_j ds~[m, i, j] s[m, j]        ds[m, j] = sum_i omega[m, i] ds~[m, i, j]
and, with a router (omega = softmax(logits / T)), the softmax backward
    dlogits = omega * (d omega - sum_i omega_i d omega_i) / T
plus, for a router on A x, its contribution dlogits Wg to ds. Outputs: ds (M, r) in x's dtype and
either dlogits or d omega (M, N) in fp32.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from hydralora.kernels.tiling import dot_precision, heads_pad, prune_row_blocks, rank_pad, row_pass_configs


@triton.autotune(
    configs=row_pass_configs(),
    key=["M", "K", "R", "NUM_HEADS", "HAS_ROUTER", "ROUTER_ON_LORA"],
    prune_configs_by={"early_config_prune": prune_row_blocks(lambda kw: kw["H_PAD"] * kw["R_PAD"])},
)
@triton.jit
def hydra_heads_bwd_kernel(
    dy_ptr, b_ptr, s_ptr, omega_ptr, grad_probs_ptr, router_ptr, ds_ptr, d_omega_ptr,
    M, K, R, NUM_HEADS,
    stride_dym, stride_dyk, stride_bh, stride_bk, stride_br, stride_sm, stride_sr, stride_om, stride_oh,
    stride_gpm, stride_gph, stride_gh, stride_gr, stride_dsm, stride_dsr, stride_dom, stride_doh,
    scale, inv_temperature,
    HAS_ROUTER: tl.constexpr, ROUTER_ON_LORA: tl.constexpr, HAS_GRAD_PROBS: tl.constexpr,
    WRITE_D_OMEGA: tl.constexpr, R_PAD: tl.constexpr, H_PAD: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # The reduction runs over the linear's output width d, called K here.
    offs_m = (tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)  # token rows                 [BLOCK_M]
    offs_c = tl.arange(0, H_PAD * R_PAD)                        # concatenated (head, rank)   [H_PAD * R_PAD]
    offs_r = tl.arange(0, R_PAD)                                # ranks, padded               [R_PAD]
    offs_h = tl.arange(0, H_PAD)                                # heads, padded               [H_PAD]
    head_c = offs_c // R_PAD
    rank_c = offs_c % R_PAD
    mask_m = offs_m < M
    mask_c = (head_c < NUM_HEADS) & (rank_c < R)
    mask_r = offs_r < R
    mask_h = offs_h < NUM_HEADS

    acc = tl.zeros((BLOCK_M, H_PAD * R_PAD), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)  # [BLOCK_K]
        mask_k = offs_k < K
        p_dy = dy_ptr + offs_m[:, None] * stride_dym + offs_k[None, :] * stride_dyk  # [BLOCK_M, BLOCK_K]
        b_dy = tl.load(p_dy, mask=mask_m[:, None] & mask_k[None, :], other=0.0)
        # B_cat [BLOCK_K, H_PAD * R_PAD]: column c of B_cat is column c % R_PAD of head c // R_PAD
        p_b = b_ptr + head_c[None, :] * stride_bh + offs_k[:, None] * stride_bk + rank_c[None, :] * stride_br
        b_b = tl.load(p_b, mask=mask_k[:, None] & mask_c[None, :], other=0.0)
        acc = tl.dot(b_dy, b_b, acc, input_precision=DOT_PRECISION)
    b_ds_tilde = tl.reshape(acc * scale, (BLOCK_M, H_PAD, R_PAD))

    p_s = s_ptr + offs_m[:, None] * stride_sm + offs_r[None, :] * stride_sr  # [BLOCK_M, R_PAD]
    b_s = tl.load(p_s, mask=mask_m[:, None] & mask_r[None, :], other=0.0).to(tl.float32)
    p_o = omega_ptr + offs_m[:, None] * stride_om + offs_h[None, :] * stride_oh  # [BLOCK_M, H_PAD]
    mask_mh = mask_m[:, None] & mask_h[None, :]
    b_omega = tl.load(p_o, mask=mask_mh, other=0.0).to(tl.float32)
    b_d_omega = tl.sum(b_ds_tilde * b_s[:, None, :], axis=2)  # [BLOCK_M, H_PAD]
    b_ds = tl.sum(b_ds_tilde * b_omega[:, :, None], axis=1)   # [BLOCK_M, R_PAD]

    p_do = d_omega_ptr + offs_m[:, None] * stride_dom + offs_h[None, :] * stride_doh  # [BLOCK_M, H_PAD]
    if HAS_ROUTER:
        if HAS_GRAD_PROBS:
            p_gp = grad_probs_ptr + offs_m[:, None] * stride_gpm + offs_h[None, :] * stride_gph
            b_d_omega += tl.load(p_gp, mask=mask_mh, other=0.0).to(tl.float32)
        b_mean = tl.sum(b_omega * b_d_omega, axis=1)  # [BLOCK_M]
        b_dlogits = b_omega * (b_d_omega - b_mean[:, None]) * inv_temperature
        tl.store(p_do, b_dlogits, mask=mask_mh)
        if ROUTER_ON_LORA:
            p_g = router_ptr + offs_h[:, None] * stride_gh + offs_r[None, :] * stride_gr  # Wg [H_PAD, R_PAD]
            b_g = tl.load(p_g, mask=mask_h[:, None] & mask_r[None, :], other=0.0).to(tl.float32)
            b_ds += tl.sum(b_dlogits[:, :, None] * b_g[None, :, :], axis=1)
    elif WRITE_D_OMEGA:
        tl.store(p_do, b_d_omega, mask=mask_mh)

    p_ds = ds_ptr + offs_m[:, None] * stride_dsm + offs_r[None, :] * stride_dsr  # [BLOCK_M, R_PAD]
    tl.store(p_ds, b_ds.to(ds_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_r[None, :])


def hydra_heads_backward(
    grad_y: torch.Tensor,
    lora_B: torch.Tensor,
    s: torch.Tensor,
    omega: torch.Tensor,
    grad_probs: torch.Tensor | None,
    router_weight: torch.Tensor | None,
    router_on_lora: bool,
    scale: float,
    temperature: float,
    need_d_omega: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(ds, dlogits or d omega) from dy; the second is None without a router unless `need_d_omega`.

    ds includes the path through a router on A x; grad_probs (the gradient reaching the returned
    probabilities, e.g. from a balance loss) joins d omega before the softmax backward.
    """
    num_rows, out_features = grad_y.shape
    num_heads, _, rank = lora_B.shape
    has_router = router_weight is not None
    ds = torch.empty_like(s)
    writes_d_omega = has_router or need_d_omega
    d_omega = torch.empty((num_rows, num_heads), dtype=torch.float32, device=s.device) if writes_d_omega else None
    d_omega_arg = d_omega if writes_d_omega else ds  # never written
    router_arg = router_weight if has_router else s  # never read
    grad_probs_arg = grad_probs if grad_probs is not None else omega  # never read

    def grid(meta):
        return (triton.cdiv(num_rows, meta["BLOCK_M"]),)

    hydra_heads_bwd_kernel[grid](
        grad_y, lora_B, s, omega, grad_probs_arg, router_arg, ds, d_omega_arg,
        num_rows, out_features, rank, num_heads,
        grad_y.stride(0), grad_y.stride(1), lora_B.stride(0), lora_B.stride(1), lora_B.stride(2),
        s.stride(0), s.stride(1), omega.stride(0), omega.stride(1),
        grad_probs_arg.stride(0), grad_probs_arg.stride(1), router_arg.stride(0), router_arg.stride(1),
        ds.stride(0), ds.stride(1), d_omega_arg.stride(0), d_omega_arg.stride(1),
        scale, 1.0 / temperature,
        HAS_ROUTER=has_router, ROUTER_ON_LORA=has_router and router_on_lora, HAS_GRAD_PROBS=grad_probs is not None,
        WRITE_D_OMEGA=need_d_omega, R_PAD=rank_pad(rank), H_PAD=heads_pad(num_heads),
        DOT_PRECISION=dot_precision(grad_y.dtype),
    )
    return ds, d_omega
