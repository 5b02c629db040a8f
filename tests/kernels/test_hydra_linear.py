"""The Triton HydraLinear against the PyTorch reference: y, probabilities and every gradient.

On a machine without CUDA this runs under the Triton interpreter (see conftest.py), on a GPU
compiled, fp32 and fp16 both; the criteria are those of `assert_matches_reference`.
"""

from __future__ import annotations

import pytest
import torch
from hydra_kernel_cases import (
    KERNEL_DEVICE,
    MIXINGS,
    Shape,
    assert_matches_reference,
    make_inputs,
    outputs_and_grads,
    relative_error,
    run_hydra,
    trainable,
    upcast,
)

from hydralora.functional import hydra_linear
from hydralora.kernels.hydra_linear import hydra_linear_triton, with_32bit_column_offsets
from hydralora.kernels.reference import hydra_linear_torch

SHAPES = [
    Shape((37,), 48, 80, 8, 3),     # the odd shape: every dim masked, r padded 8 -> 16
    Shape((3, 13), 48, 80, 8, 3),   # per-sample weights need a batch dim
    Shape((70,), 33, 19, 20, 5),    # r = 20 pads to 32, 5 heads to 8: dB runs one head per block
    Shape((16,), 64, 64, 32, 1),    # exact block multiples, a single head
    Shape((5,), 17, 40, 16, 12),    # fewer rows than one block, 12 heads
]
LOW_PRECISION = [torch.float16]  # bf16 is checked on a GPU: the interpreter mishandles it


def mixings_for(shape: Shape) -> list[str]:
    """Per-sample weights only where x has a batch dim distinct from its tokens."""
    return [m for m in MIXINGS if m != "per_sample" or len(shape.lead) > 1]


CASES = [(shape, mixing) for shape in SHAPES for mixing in mixings_for(shape)]


def assert_grad_dtypes(inputs: dict, mixing: str) -> None:
    got = outputs_and_grads(hydra_linear_triton, inputs, mixing)
    for name, tensor in inputs.items():
        if tensor is not None and tensor.requires_grad:
            assert got[f"grad_{name}"].dtype == tensor.dtype, name


@pytest.mark.parametrize("dtype", [torch.float32, *LOW_PRECISION], ids=str)
@pytest.mark.parametrize(("shape", "mixing"), CASES, ids=[f"{s}-{m}" for s, m in CASES])
def test_outputs_and_grads_match_reference(shape, mixing, dtype):
    assert_matches_reference(make_inputs(shape, mixing, dtype), mixing, temperature=0.7)


@pytest.mark.parametrize("dtype", [torch.float32, *LOW_PRECISION], ids=str)
@pytest.mark.parametrize("mixing", mixings_for(SHAPES[1]))
def test_without_bias(mixing, dtype):
    assert_matches_reference(make_inputs(SHAPES[1], mixing, dtype, bias=False), mixing)


@pytest.mark.parametrize("dtype", [torch.float32, *LOW_PRECISION], ids=str)
@pytest.mark.parametrize("x_layout", ["transposed", "strided"])
@pytest.mark.parametrize("mixing", ["router_x", "router_lora", "per_token"])
def test_non_contiguous_x(mixing, x_layout, dtype):
    inputs = make_inputs(SHAPES[0], mixing, dtype, x_layout=x_layout)
    assert not inputs["x"].is_contiguous()
    assert_matches_reference(inputs, mixing)


@pytest.mark.parametrize(("mixing", "frozen"), [
    ("per_token", ("head_weights",)),          # fixed head weights: no d omega is asked for
    ("router_x", ("x",)),                      # the first layer: no dx
    ("router_x", ("lora_A", "lora_B")),        # only the router trains (dA skipped, its dWg kept)
    ("router_lora", ("lora_A", "router_weight")),
])
def test_partly_frozen_inputs(mixing, frozen):
    """Each gradient the backward skips must leave the others exact."""
    inputs = make_inputs(SHAPES[0], mixing, torch.float32)
    for name in frozen:
        inputs[name].requires_grad_(False)
    assert_matches_reference(inputs, mixing)


@pytest.mark.parametrize("temperature", [0.25, 4.0])
@pytest.mark.parametrize("mixing", ["router_x", "router_lora"])
def test_router_temperature(mixing, temperature):
    assert_matches_reference(make_inputs(SHAPES[0], mixing, torch.float32), mixing, temperature=temperature)


@pytest.mark.parametrize("mixing", ["router_x", "router_lora"])
def test_router_without_loss_on_probabilities(mixing):
    """No gradient reaches probs: the backward gets None for it and must not read it."""
    assert_matches_reference(make_inputs(SHAPES[0], mixing, torch.float32), mixing, probs_in_loss=False)


@pytest.mark.parametrize("mixing", ["router_x", "router_lora"])
def test_loss_on_probabilities_only(mixing):
    """A balance loss alone: y never reaches the loss, so dy is None in the backward."""

    def grads(fn, inputs):
        _, probs = run_hydra(fn, inputs, mixing)
        names = trainable(inputs)
        found = torch.autograd.grad((probs**2).sum(), [inputs[n] for n in names], allow_unused=True)
        # B does not reach probs: torch reports None where the fused backward computes zeros.
        return {n: torch.zeros_like(inputs[n]) if g is None else g for n, g in zip(names, found)}

    inputs = make_inputs(SHAPES[0], mixing, torch.float32)
    got, exact = grads(hydra_linear_triton, inputs), grads(hydra_linear_torch, upcast(inputs))
    errors = {name: relative_error(got[name], exact[name]) for name in exact}
    assert all(err <= 1e-5 for err in errors.values()), errors


@pytest.mark.parametrize("mixing", ["router_x", "router_lora", "per_layer"])
def test_fp32_adapter_with_fp16_input(mixing):
    """fp32 parameters on an fp16 activation: computed in fp16 like the reference, grads in fp32."""
    inputs = make_inputs(SHAPES[0], mixing, torch.float16, param_dtype=torch.float32)
    assert_grad_dtypes(inputs, mixing)
    assert_matches_reference(inputs, mixing)


def test_frozen_base_asked_for_grads_gets_them():
    """W and bias are frozen in HydraLoRA; if a caller trains them anyway the grads are still right."""
    inputs = make_inputs(SHAPES[0], "per_token", torch.float32)
    inputs["weight"].requires_grad_()
    inputs["bias"].requires_grad_()
    assert_matches_reference(inputs, "per_token")


@pytest.mark.parametrize("mixing", ["per_layer", "per_sample", "router_lora"])
def test_dispatch_through_functional(mixing, monkeypatch):
    """hydra_linear on a 3-D x reaches the Triton path by the env switch and matches the torch backend."""
    import hydralora.kernels.hydra_linear as triton_module

    calls = []
    real_triton = triton_module.hydra_linear_triton
    monkeypatch.setattr(triton_module, "hydra_linear_triton", lambda *args: calls.append(1) or real_triton(*args))
    monkeypatch.setenv("HYDRALORA_BACKEND", "triton")

    def grads(inputs, backend):
        y, _ = hydra_linear(inputs["x"], inputs["weight"], inputs["bias"], inputs["lora_A"], inputs["lora_B"], 0.5,
                            head_weights=inputs["head_weights"], router_weight=inputs["router_weight"],
                            router_on_lora=mixing == "router_lora", backend=backend)
        probe = torch.randn(y.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64).to(y.device)
        names = trainable(inputs)
        found = torch.autograd.grad((y.double() * probe).sum(), [inputs[n] for n in names])
        return {"y": y, **dict(zip(names, found))}

    inputs = make_inputs(SHAPES[1], mixing, torch.float32)
    got = grads(inputs, None)
    assert calls, "HYDRALORA_BACKEND=triton did not reach hydra_linear_triton"
    exact = grads(upcast(inputs), "torch")
    errors = {name: relative_error(got[name], exact[name]) for name in exact}
    assert all(err <= 1e-5 for err in errors.values()), errors


@pytest.mark.parametrize("mixing", ["router_x", "per_token"])
def test_cublas_base_gemm(mixing, monkeypatch):
    """HYDRALORA_BASE_GEMM=cublas: torch computes x W^T / dy W and the kernels add the adapter."""
    monkeypatch.setenv("HYDRALORA_BASE_GEMM", "cublas")
    assert_matches_reference(make_inputs(SHAPES[0], mixing, torch.float32), mixing)


def test_unknown_base_gemm_is_refused(monkeypatch):
    monkeypatch.setenv("HYDRALORA_BASE_GEMM", "cutlass")
    inputs = make_inputs(SHAPES[0], "per_token", torch.float32)
    with pytest.raises(ValueError, match="HYDRALORA_BASE_GEMM"):
        outputs_and_grads(hydra_linear_triton, inputs, "per_token")


@pytest.mark.parametrize("x_dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("mixing", ["router_x", "per_token"])
def test_autocast_casts_like_f_linear(mixing, x_dtype):
    """Under autocast an fp32 W (and an fp32 or fp16 x) run in the autocast dtype, as the reference's
    F.linear does, instead of handing tl.dot two dtypes; the grads return in the inputs' dtypes."""
    inputs = make_inputs(SHAPES[0], mixing, torch.float32)
    inputs["x"] = inputs["x"].detach().to(x_dtype).requires_grad_()
    with torch.autocast(KERNEL_DEVICE, dtype=torch.float16):
        got = outputs_and_grads(hydra_linear_triton, inputs, mixing)
        reference_y, _ = run_hydra(hydra_linear_torch, inputs, mixing)
    assert got["y"].dtype == reference_y.dtype == torch.float16
    assert got["grad_x"].dtype == x_dtype
    cast = {**inputs, **{name: inputs[name].detach().half().requires_grad_(inputs[name].requires_grad)
                         for name in ("x", "weight", "bias")}}
    expected = outputs_and_grads(hydra_linear_triton, cast, mixing)
    for name, value in expected.items():
        assert torch.equal(got[name].to(value.dtype), value), name


def test_an_adapter_wider_than_the_kernels_is_refused_with_the_way_out():
    inputs = make_inputs(SHAPES[0], "per_token", torch.float32)
    rank = inputs["lora_B"].shape[2]
    wide = 2048 // 16 + 1  # r = 8 runs as 16 columns; 129 heads as 256
    inputs["lora_B"] = inputs["lora_B"].new_zeros(wide, inputs["lora_B"].shape[1], rank)
    inputs["head_weights"] = inputs["x"].new_ones(*inputs["x"].shape[:-1], wide)
    with pytest.raises(ValueError, match=f"{inputs['lora_B'].shape[0]} heads of r={rank}.*backend='torch'"):
        run_hydra(hydra_linear_triton, inputs, "per_token")


def test_column_major_operands_past_32_bit_offsets_are_made_contiguous():
    """Column offsets are 32-bit in the kernels: such an x or dy is copied row-major first (a meta
    tensor stands for the 2^31-element matrix)."""
    far = torch.empty_strided((2, 3), (1, 2**30), device="meta")
    assert with_32bit_column_offsets(far).stride() == (3, 1)
    near = torch.empty_strided((2, 3), (1, 2), device="meta")
    assert with_32bit_column_offsets(near).stride() == (1, 2)  # non-contiguous, yet within reach: kept


def test_float64_is_refused_with_the_way_out():
    inputs = upcast(make_inputs(SHAPES[0], "per_token", torch.float32))
    with pytest.raises(TypeError, match="backend='torch'"):
        run_hydra(hydra_linear_triton, inputs, "per_token")
