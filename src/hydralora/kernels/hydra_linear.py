"""`hydra_linear_triton`: the fused HydraLinear as an autograd.Function over the Triton kernels.

Forward, two kernels:   shrink (s = dropout(x) A^T, router softmax)  ->  fused GEMM (y).
Backward, up to four:   heads (ds, d omega / dlogits from dy)  ->  dB, dA (+ dWg), dx.
Saved for backward beyond the base's x and W: s (M, r), omega or the probabilities (M, N) and a
dropout seed, i.e. M * (r + N) elements per layer. Derivation and design: docs/kernels.md.

HYDRALORA_BASE_GEMM=triton|cublas picks who computes the frozen x W^T and dy W (see
`fused_forward`); "triton" (the default) fuses the adapter into the K loop of the base GEMM.
"""

from __future__ import annotations

import contextlib
import os

import torch
from torch.autograd.function import once_differentiable

from hydralora.kernels import KERNEL_DTYPES
from hydralora.kernels.backward_heads import hydra_heads_backward
from hydralora.kernels.backward_input import hydra_fused_grad_input
from hydralora.kernels.backward_weights import hydra_lora_a_backward, hydra_lora_b_backward
from hydralora.kernels.dropout import draw_dropout_seed
from hydralora.kernels.fused_forward import hydra_fused_forward
from hydralora.kernels.shrink import hydra_shrink
from hydralora.kernels.tiling import MAX_CONCAT_RANK, fits_kernels, heads_pad, rank_pad

BASE_GEMMS = ("triton", "cublas")


def base_gemm_choice() -> str:
    """HYDRALORA_BASE_GEMM, read on every call so that a benchmark can switch it between runs."""
    choice = os.environ.get("HYDRALORA_BASE_GEMM", "triton")
    if choice not in BASE_GEMMS:
        raise ValueError(f"HYDRALORA_BASE_GEMM must be one of {BASE_GEMMS}, got {choice!r}")
    return choice


class HydraLinearFunction(torch.autograd.Function):
    """y = x W^T + b + scale * sum_i omega_i s B_i^T with s = D(x) A^T, D = dropout (mask keep, 1/(1-p)).

    omega is given (head weights, (M, N), any strides) or omega = softmax(g / T) with router
    logits g = x Wg^T (router on x, raw x) or g = s Wg^T (router on A x). With dy = dL/dy and
    dP = dL/d probs (a loss on the returned probabilities, else 0), the backward is
        ds~_i = scale * dy B_i                          (M, r) per head, never stored
        d omega_i = rowsum(ds~_i * s) + dP_i            (M, N)
        dg = omega * (d omega - rowsum(omega * d omega)) / T           (router only)
        ds = sum_i omega_i ds~_i  [+ dg Wg for a router on A x]
        dB_i = scale * dy^T (omega_i * s)               dA = ds^T D(x)
        dWg = dg^T x (router on x)  or  dg^T s (router on A x)
        dx = dy W + D'(ds A) [+ dg Wg for a router on x],  D'(z) = keep * z / (1 - p)
        d head_weights = d omega (autograd sums it over the rows of an expanded view)
    W is frozen; if a caller still asks, dW = dy^T x and db = rowsum(dy) come from torch.
    Adapter tensors run in x's dtype and their gradients return in each parameter's own dtype.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, lora_A, lora_B, head_weights, router_weight, scale, router_on_lora,
                temperature, dropout_p, base_gemm):
        num_heads = lora_B.shape[0]
        dtype = x.dtype
        lora_a = lora_A.to(dtype)
        lora_b = lora_B.to(dtype)
        router = router_weight.to(dtype) if router_weight is not None else None
        seed = draw_dropout_seed() if dropout_p > 0 else 0
        s, probs = hydra_shrink(x, lora_a, router, router_on_lora, num_heads, temperature, dropout_p, seed)
        omega = probs if router is not None else head_weights
        y = hydra_fused_forward(x, weight, bias, s, omega, lora_b, scale, base_gemm)

        ctx.save_for_backward(x, weight, lora_a, lora_b, router, s, omega)
        ctx.param_dtypes = (lora_A.dtype, lora_B.dtype, None if router_weight is None else router_weight.dtype,
                            None if head_weights is None else head_weights.dtype)
        ctx.scale, ctx.router_on_lora, ctx.temperature = scale, router_on_lora, temperature
        ctx.dropout_p, ctx.seed, ctx.base_gemm = dropout_p, seed, base_gemm
        ctx.set_materialize_grads(False)
        return y, probs

    @staticmethod
    @once_differentiable  # the kernels' backward is not itself differentiable: double backward errors
    def backward(ctx, grad_y, grad_probs):
        x, weight, lora_a, lora_b, router, s, omega = ctx.saved_tensors
        grad_y = None if grad_y is None else with_32bit_column_offsets(grad_y)
        a_dtype, b_dtype, router_dtype, head_weights_dtype = ctx.param_dtypes
        need_x, need_w, need_bias, need_a, need_b, need_head_weights, need_router = ctx.needs_input_grad[:7]
        if grad_y is None:  # only the probabilities reached the loss
            grad_y = torch.zeros((x.shape[0], weight.shape[0]), dtype=x.dtype, device=x.device)
        has_router = router is not None
        router_on_x = has_router and not ctx.router_on_lora

        ds, d_omega = hydra_heads_backward(grad_y, lora_b, s, omega, grad_probs, router, ctx.router_on_lora,
                                           ctx.scale, ctx.temperature, need_head_weights)
        grad_b = hydra_lora_b_backward(grad_y, s, omega, lora_b.shape[0], ctx.scale).to(b_dtype) if need_b else None

        grad_a = grad_router = None
        if need_a or (router_on_x and need_router):
            grad_a, grad_router = hydra_lora_a_backward(x, ds, d_omega if router_on_x and need_router else None,
                                                        need_a, ctx.dropout_p, ctx.seed)
        if has_router and ctx.router_on_lora and need_router:
            grad_router = d_omega.t() @ s.float()
        grad_x = None
        if need_x:
            grad_x = hydra_fused_grad_input(grad_y, weight, ds, lora_a, d_omega if router_on_x else None,
                                            router if router_on_x else None, ctx.dropout_p, ctx.seed, ctx.base_gemm)
        grad_w = grad_y.t() @ x if need_w else None
        grad_bias = grad_y.sum(0) if need_bias else None
        return (
            grad_x,
            grad_w,
            grad_bias,
            None if grad_a is None else grad_a.to(a_dtype),
            grad_b,
            d_omega.to(head_weights_dtype) if need_head_weights else None,
            None if grad_router is None else grad_router.to(router_dtype),
            None, None, None, None, None,
        )


def with_32bit_column_offsets(matrix: torch.Tensor) -> torch.Tensor:
    """`matrix`, made contiguous if its column offsets pass 2^31 elements.

    The kernels address rows in 64 bits and columns in 32: only a column-major x or dy of over
    2^31 elements gets there.
    """
    return matrix.contiguous() if (matrix.shape[1] - 1) * matrix.stride(1) >= 2**31 else matrix


def hydra_linear_triton(
    x2d: torch.Tensor,
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
    """Fused `hydra_linear_torch`: same arguments (x2d (M, k), any strides), same (y, probs)."""
    if head_weights is None and router_weight is None:
        raise ValueError("hydra_linear_triton needs head_weights or router_weight")
    if head_weights is not None:
        router_weight = None
    device_type = x2d.device.type
    if torch.is_autocast_enabled(device_type) and x2d.dtype != torch.float64:
        # An autograd.Function is not autocast: cast as F.linear would (the reference's base GEMM),
        # so an fp32 x (e.g. a LayerNorm output) meets a bf16 W in one dtype; the adapter follows x.
        dtype = torch.get_autocast_dtype(device_type)
        x2d, weight = x2d.to(dtype), weight.to(dtype)
        bias = None if bias is None else bias.to(dtype)
    if x2d.dtype not in KERNEL_DTYPES:
        raise TypeError(f"the Triton backend runs {KERNEL_DTYPES}, got x in {x2d.dtype}; use backend='torch'")
    num_heads, _, rank = lora_B.shape
    if not fits_kernels(num_heads, rank):
        raise ValueError(
            f"the Triton backend holds heads x rank up to {MAX_CONCAT_RANK} (padded to powers of two), got "
            f"{num_heads} heads of r={rank} ({heads_pad(num_heads) * rank_pad(rank)}); use backend='torch'"
        )
    x2d = with_32bit_column_offsets(x2d)
    active_dropout = dropout_p if training else 0.0
    # Triton launches on the current CUDA device: make it x's (a model on cuda:1 while cuda:0 is current)
    device_guard = torch.cuda.device(x2d.device) if x2d.is_cuda else contextlib.nullcontext()
    with device_guard:
        return HydraLinearFunction.apply(x2d, weight, bias, lora_A, lora_B, head_weights, router_weight, scale,
                                         router_on_lora, temperature, active_dropout, base_gemm_choice())
