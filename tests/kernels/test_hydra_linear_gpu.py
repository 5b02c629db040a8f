"""The compiled Triton HydraLinear on a CUDA device: bf16 at realistic sizes, fp32, dropout.

bf16 criterion (as Liger-Kernel's): against an fp32 reference on the same inputs, the kernel's
error is at most twice the error of torch's own bf16 computation, for y, probs and every
gradient (`assert_matches_reference`). Skipped without CUDA.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hydra_kernel_cases import MIXINGS, Shape, assert_matches_reference, make_inputs

from hydralora.kernels.dropout import draw_dropout_seed, dropout_keep_mask

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

SHAPES = [
    Shape((4096,), 3072, 3072, 32, 4),   # a HunyuanVideo attention projection, the target shape
    Shape((2, 1500), 3072, 12288, 32, 8),  # the MLP up-projection, ragged token count
    Shape((1000,), 12288, 3072, 32, 12),   # the MLP down-projection, 12 heads
    Shape((333,), 1000, 1500, 8, 3),       # nothing a multiple of a block; r padded 8 -> 16
]


def mixings_for(shape: Shape) -> list[str]:
    return [m for m in MIXINGS if m != "per_sample" or len(shape.lead) > 1]


CASES = [(shape, mixing) for shape in SHAPES for mixing in mixings_for(shape)]


@pytest.mark.parametrize(("shape", "mixing"), CASES, ids=[f"{s}-{m}" for s, m in CASES])
def test_bf16_within_twice_torch_error(shape, mixing):
    inputs = make_inputs(shape, mixing, torch.bfloat16, device="cuda")
    assert_matches_reference(inputs, mixing, reference_dtype=torch.float32, temperature=0.7)


@pytest.mark.parametrize("mixing", ["router_x", "router_lora", "per_token"])
def test_bf16_with_fp32_adapter(mixing):
    inputs = make_inputs(SHAPES[0], mixing, torch.bfloat16, param_dtype=torch.float32, device="cuda")
    assert_matches_reference(inputs, mixing, reference_dtype=torch.float32)


@pytest.mark.parametrize("mixing", ["router_x", "router_lora", "per_layer"])
def test_fp32(mixing):
    assert_matches_reference(make_inputs(SHAPES[3], mixing, torch.float32, device="cuda"), mixing)


@pytest.mark.parametrize("mixing", ["router_x", "per_token"])
def test_non_contiguous_bf16(mixing):
    inputs = make_inputs(SHAPES[3], mixing, torch.bfloat16, x_layout="transposed", device="cuda")
    assert_matches_reference(inputs, mixing, reference_dtype=torch.float32)


@pytest.mark.parametrize("mixing", ["router_x", "per_token"])
def test_cublas_base_gemm_bf16(mixing, monkeypatch):
    monkeypatch.setenv("HYDRALORA_BASE_GEMM", "cublas")
    inputs = make_inputs(SHAPES[0], mixing, torch.bfloat16, device="cuda")
    assert_matches_reference(inputs, mixing, reference_dtype=torch.float32)


@pytest.mark.parametrize("mixing", ["router_x", "router_lora"])
def test_dropout_bf16(mixing, monkeypatch):
    shape, p = SHAPES[3], 0.1
    inputs = make_inputs(shape, mixing, torch.bfloat16, device="cuda")
    torch.manual_seed(99)
    keep = dropout_keep_mask(draw_dropout_seed(), shape.lead[0], shape.in_features, p, torch.device("cuda"))
    assert abs(keep.float().mean().item() - (1 - p)) < 0.01
    monkeypatch.setattr(F, "dropout", lambda x, p, training: x * keep.to(x.dtype) / (1 - p))
    torch.manual_seed(99)
    assert_matches_reference(inputs, mixing, reference_dtype=torch.float32, dropout_p=p, training=True)
