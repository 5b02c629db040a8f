"""How the HydraLinear kernels tile their work: padded sizes, tile order, autotune configs, split counts.

tl.dot needs every block dimension to be a power of two and at least 16, so the rank r and the
router's head count are padded (`rank_pad`, `router_pad`); padded lanes are loaded as zeros and
never stored. The concatenated head axis of the backward uses `heads_pad` (no minimum of 16: it is
only ever the outer factor of heads_pad * rank_pad, which already is >= 16).

Under the Triton interpreter (TRITON_INTERPRET=1, CPU) every kernel gets one small config: the
interpreter runs each program in NumPy, autotuning there would only burn time, and small blocks
let tiny test shapes cross block edges and exercise every mask.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"

# Widest block of the concatenated (head, rank) axis one dB program accumulates (whole heads, unless
# one head is wider); the interpreter's is small so that test shapes cross several blocks.
MAX_CONCAT_BLOCK = 32 if INTERPRETING else 128


def rank_pad(rank: int) -> int:
    """The rank as a tl.dot dimension: next power of two, at least 16 (r=8 runs as 16, zero-filled)."""
    return max(16, triton.next_power_of_2(rank))


def router_pad(num_heads: int) -> int:
    """The head count where the router's logits take part in a tl.dot (x Wg^T, dlogits Wg)."""
    return max(16, triton.next_power_of_2(num_heads))


def heads_pad(num_heads: int) -> int:
    """The head count as the outer factor of the concatenated rank heads_pad * rank_pad."""
    return triton.next_power_of_2(num_heads)


# The heads backward keeps one row block's whole concatenated rank, heads_pad x rank_pad columns,
# in registers and shared memory. At 2048 (16 heads of r = 128) it takes 132 KiB on sm_90 in bf16;
# at 4096 it takes 263 KiB, more than an H100 has (`python -m hydralora.kernels.compile_check`
# measures it). Wider adapters run the reference.
MAX_CONCAT_RANK = 2048


def fits_kernels(num_heads: int, rank: int) -> bool:
    """Whether an adapter of `num_heads` heads of rank `rank` is narrow enough for the kernels."""
    return heads_pad(num_heads) * rank_pad(rank) <= MAX_CONCAT_RANK


def dot_precision(dtype: torch.dtype) -> str:
    """fp32 inputs follow torch's own switch: TF32 only where torch would use it for a matmul."""
    if dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32:
        return "ieee"
    return "tf32"


def reduction_splits(num_rows: int, column_blocks: int, device: torch.device, rows_per_block: int = 128) -> int:
    """How many programs share the rows of a reduction over M (dA, dB): enough to fill the GPU twice.

    The programs write fp32 partial sums that the launcher adds up, which keeps the result
    deterministic (no atomics).
    """
    if device.type == "cuda":
        target_programs = 2 * torch.cuda.get_device_properties(device).multi_processor_count
    else:
        target_programs = 4
    by_occupancy = triton.cdiv(target_programs, max(column_blocks, 1))
    return max(1, min(by_occupancy, triton.cdiv(num_rows, rows_per_block)))


@triton.jit
def grouped_tile(pid, num_rows, num_cols, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """Map a flat program id to an output tile, GROUP_M row blocks at a time, so that neighbouring
    programs share operand tiles in L2 (the order of Triton's matmul tutorial)."""
    num_pid_m = tl.cdiv(num_rows, BLOCK_M)
    num_pid_n = tl.cdiv(num_cols, BLOCK_N)
    num_pid_in_group = GROUP_M * num_pid_n
    group_id = pid // num_pid_in_group
    first_pid_m = group_id * GROUP_M
    group_size_m = tl.minimum(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + (pid % num_pid_in_group) % group_size_m
    pid_n = (pid % num_pid_in_group) // group_size_m
    return pid_m, pid_n


def _config(num_warps: int = 4, num_stages: int = 3, **blocks: int) -> triton.Config:
    return triton.Config(blocks, num_warps=num_warps, num_stages=num_stages)


def gemm_configs() -> list[triton.Config]:
    """Tiles for the two large GEMMs (y with the adapter in its K loop, dx likewise).

    The GPU list follows Triton's matmul tutorial for Hopper/Ampere; 128x256x64 in 3 stages is the
    largest tile whose pipeline (144 KiB) fits H100 shared memory. Configs too large for a GPU
    (A100 has 164 KiB) fail to launch while autotuning and are skipped by the autotuner.
    """
    if INTERPRETING:
        return [_config(BLOCK_M=16, BLOCK_N=32, BLOCK_K=32, GROUP_M=2, num_warps=1, num_stages=1)]
    return [
        _config(BLOCK_M=128, BLOCK_N=256, BLOCK_K=64, GROUP_M=8, num_warps=8, num_stages=3),
        _config(BLOCK_M=256, BLOCK_N=128, BLOCK_K=64, GROUP_M=8, num_warps=8, num_stages=3),
        _config(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64, GROUP_M=8, num_warps=8, num_stages=4),
        _config(BLOCK_M=128, BLOCK_N=128, BLOCK_K=32, GROUP_M=8, num_warps=4, num_stages=4),
        _config(BLOCK_M=64, BLOCK_N=256, BLOCK_K=32, GROUP_M=8, num_warps=4, num_stages=4),
        _config(BLOCK_M=64, BLOCK_N=128, BLOCK_K=64, GROUP_M=8, num_warps=4, num_stages=4),
    ]


def row_pass_configs() -> list[triton.Config]:
    """Tiles for the passes that own whole rows (shrink over x, the head gradients over dy)."""
    if INTERPRETING:
        return [_config(BLOCK_M=16, BLOCK_K=32, num_warps=1, num_stages=1)]
    return [
        _config(BLOCK_M=16, BLOCK_K=32, num_warps=4, num_stages=2),
        _config(BLOCK_M=16, BLOCK_K=64, num_warps=4, num_stages=3),
        _config(BLOCK_M=16, BLOCK_K=128, num_warps=4, num_stages=4),
        _config(BLOCK_M=32, BLOCK_K=32, num_warps=4, num_stages=3),
        _config(BLOCK_M=32, BLOCK_K=64, num_warps=4, num_stages=3),
        _config(BLOCK_M=32, BLOCK_K=128, num_warps=4, num_stages=4),
        _config(BLOCK_M=64, BLOCK_K=64, num_warps=4, num_stages=4),
        _config(BLOCK_M=64, BLOCK_K=128, num_warps=4, num_stages=3),
        _config(BLOCK_M=128, BLOCK_K=64, num_warps=8, num_stages=3),
    ]


def prune_row_blocks(operand_width):
    """An autotune `early_config_prune` for the row passes, whose second operand is a whole padded
    rank (or heads x rank) wide: `operand_width(launch kwargs)` columns.

    It drops configs whose fp32 accumulator (BLOCK_M x width) would need more than ~128 registers
    per thread (they spill) or whose pipelined 16-bit operand tiles, num_stages x BLOCK_K x
    (BLOCK_M + width), pass 160 KiB of shared memory (A100 has 164, H100 227).
    """

    def prune(configs, named_args, **kwargs):
        width = operand_width(kwargs)

        def fits(config):
            block_m, block_k = config.kwargs["BLOCK_M"], config.kwargs["BLOCK_K"]
            registers_ok = block_m * width <= 128 * 32 * config.num_warps
            shared_ok = config.num_stages * block_k * (block_m + width) * 2 <= 160 * 1024
            return registers_ok and shared_ok

        fitting = [c for c in configs if fits(c)]
        return fitting or [min(configs, key=lambda c: (c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_K"], c.num_stages))]

    return prune


def column_reduction_configs() -> list[triton.Config]:
    """Tiles for the reductions over rows (dA and d router over x, dB)."""
    if INTERPRETING:
        return [_config(BLOCK_M=16, BLOCK_N=32, num_warps=1, num_stages=1)]
    return [
        _config(BLOCK_M=64, BLOCK_N=64, num_warps=4, num_stages=4),
        _config(BLOCK_M=64, BLOCK_N=128, num_warps=4, num_stages=3),
        _config(BLOCK_M=128, BLOCK_N=64, num_warps=8, num_stages=3),
        _config(BLOCK_M=128, BLOCK_N=128, num_warps=8, num_stages=3),
    ]


@triton.jit
def base_gemm_tile(
    a_ptr, stride_am, stride_ak, w_ptr, stride_wk, stride_wn, base_ptr, stride_basem, stride_basen,
    offs_m, offs_n, mask_m, mask_n, K,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    FUSE_BASE: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """The fp32 accumulator a fused GEMM starts from: the tile of a (M, K) times the (K, N) view of
    W, computed here (FUSE_BASE), or the tile of a product cuBLAS already wrote to `base_ptr`."""
    if FUSE_BASE:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)  # [BLOCK_K]
            mask_k = offs_k < K
            p_a = a_ptr + offs_m[:, None] * stride_am + offs_k[None, :] * stride_ak  # [BLOCK_M, BLOCK_K]
            p_w = w_ptr + offs_k[:, None] * stride_wk + offs_n[None, :] * stride_wn  # [BLOCK_K, BLOCK_N]
            b_a = tl.load(p_a, mask=mask_m[:, None] & mask_k[None, :], other=0.0)
            b_w = tl.load(p_w, mask=mask_k[:, None] & mask_n[None, :], other=0.0)
            acc = tl.dot(b_a, b_w, acc, input_precision=DOT_PRECISION)
    else:
        p_base = base_ptr + offs_m[:, None] * stride_basem + offs_n[None, :] * stride_basen  # [BLOCK_M, BLOCK_N]
        acc = tl.load(p_base, mask=mask_m[:, None] & mask_n[None, :], other=0.0).to(tl.float32)
    return acc
