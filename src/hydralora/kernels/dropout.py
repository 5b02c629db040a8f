"""Dropout on the adapter's input without storing a mask: every kernel regenerates the same bits.

The keep decision for x[m, c] is Philox(seed, offset = m * k + c) >= p (Triton's counter-based
generator), so the forward shrink, the dx epilogue and the dA reduction all see one mask while
only a 31-bit seed is saved. The seed comes from torch's CPU generator: `torch.manual_seed` makes a
run reproducible and drawing it never synchronises with the GPU. The mask has the distribution of
`F.dropout`'s but not its bits; `dropout_keep_mask` materialises it for tests and debugging.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


def draw_dropout_seed() -> int:
    """A fresh seed from torch's default CPU generator (reproducible under torch.manual_seed)."""
    return int(torch.randint(0, 2**31 - 1, (1,)).item())


@triton.jit
def dropout_keep(seed, offs_m, offs_k, num_cols, dropout_p):
    """Keep mask [len(offs_m), len(offs_k)] of the elements x[offs_m, offs_k] of an (M, num_cols) x.

    64-bit offsets: M * k passes 2**31 for long video sequences."""
    offsets = offs_m[:, None].to(tl.int64) * num_cols + offs_k[None, :]
    return tl.rand(seed, offsets) >= dropout_p


@triton.jit(do_not_specialize=["seed"])
def dropout_keep_mask_kernel(keep_ptr, M, K, stride_km, seed, dropout_p, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
    offs_m = (tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)  # [BLOCK_M]
    offs_k = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)  # [BLOCK_K]
    keep = dropout_keep(seed, offs_m, offs_k, K, dropout_p)
    mask = (offs_m[:, None] < M) & (offs_k[None, :] < K)
    tl.store(keep_ptr + offs_m[:, None] * stride_km + offs_k[None, :], keep.to(tl.int8), mask=mask)


def dropout_keep_mask(seed: int, num_rows: int, num_cols: int, dropout_p: float, device: torch.device) -> torch.Tensor:
    """The (num_rows, num_cols) bool keep mask the kernels use for `seed` and `dropout_p`."""
    keep = torch.empty((num_rows, num_cols), dtype=torch.int8, device=device)
    grid = (triton.cdiv(num_rows, 32), triton.cdiv(num_cols, 32))
    dropout_keep_mask_kernel[grid](keep, num_rows, num_cols, keep.stride(0), seed, dropout_p, BLOCK_M=32, BLOCK_K=32)
    return keep.bool()
