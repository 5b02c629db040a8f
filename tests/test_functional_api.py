"""The public functional form `hydralora.hydra_linear` and the backend switch, on the CPU reference."""

from __future__ import annotations

import types

import pytest
import torch
from explicit_math import explicit_hydra, make_layer

import hydralora
from hydralora.functional import resolve_backend


def call(layer, x, **mixing):
    return hydralora.hydra_linear(
        x, layer.base_layer.weight, layer.base_layer.bias, layer.lora_A, layer.lora_B, layer.scale, **mixing
    )


def test_functional_form_with_head_weights_returns_no_gate():
    layer = make_layer(mixing="fixed")
    x = torch.randn(2, 3, 6, dtype=torch.float64)
    omega = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    y, probs = call(layer, x, head_weights=omega)
    assert probs is None
    torch.testing.assert_close(y, explicit_hydra(layer, x, omega=omega), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("router_input", ["x", "lora"])
def test_functional_form_with_a_router_returns_its_fp32_gate(router_input):
    layer = make_layer(mixing="router", router_input=router_input, router_temperature=0.7)
    x = torch.randn(2, 3, 6, dtype=torch.float64)
    y, probs = call(layer, x, router_weight=layer.router.weight, router_on_lora=router_input == "lora", temperature=0.7)
    assert probs.shape == (2, 3, 4) and probs.dtype == torch.float32
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 3))
    torch.testing.assert_close(y, explicit_hydra(layer, x), rtol=1e-6, atol=1e-6)


def test_head_weights_win_over_a_router():
    layer = make_layer(mixing="router")
    x = torch.randn(5, 6, dtype=torch.float64)
    omega = torch.tensor([0.0, 1.0, 0.0, 0.0], dtype=torch.float64)
    y, probs = call(layer, x, head_weights=omega, router_weight=layer.router.weight)
    assert probs is None
    torch.testing.assert_close(y, explicit_hydra(layer, x, omega=omega), rtol=1e-12, atol=1e-12)


def test_functional_form_needs_a_way_to_mix():
    layer = make_layer(mixing="fixed")
    with pytest.raises(ValueError, match="needs head_weights or router_weight"):
        call(layer, torch.randn(2, 6, dtype=torch.float64))


def test_head_weights_with_the_wrong_head_count():
    layer = make_layer(mixing="fixed")
    with pytest.raises(ValueError, match="the adapter has 4 heads"):
        call(layer, torch.randn(2, 6, dtype=torch.float64), head_weights=torch.ones(3, dtype=torch.float64))


def test_backend_switch_validates_and_resolves(monkeypatch):
    x = torch.zeros(1)
    monkeypatch.delenv("HYDRALORA_BACKEND", raising=False)
    try:
        assert resolve_backend(x) == "torch"  # CPU tensors take the reference under "auto"
        hydralora.set_backend("triton")
        assert resolve_backend(x) == "triton"
        assert resolve_backend(x, backend="torch") == "torch"
        hydralora.set_backend(None)
        monkeypatch.setenv("HYDRALORA_BACKEND", "torch")
        assert resolve_backend(x) == "torch"
        monkeypatch.setenv("HYDRALORA_BACKEND", "cuda")
        with pytest.raises(ValueError, match="backend must be one of"):
            resolve_backend(x)
        with pytest.raises(ValueError, match="backend must be one of"):
            hydralora.set_backend("cuda")
    finally:
        hydralora.set_backend(None)


@pytest.mark.parametrize(("dtype", "expected"), [(torch.bfloat16, "triton"), (torch.float32, "triton"),
                                                 (torch.float64, "torch")])
def test_auto_backend_sends_cuda_tensors_to_triton_only_in_kernel_dtypes(dtype, expected, monkeypatch):
    """fp64 on a GPU takes the reference: the kernels' tl.dot has no fp64 path (a CUDA tensor's
    two attributes that decide are stood in for, as this machine has no GPU)."""
    monkeypatch.delenv("HYDRALORA_BACKEND", raising=False)
    pytest.importorskip("triton")
    assert resolve_backend(types.SimpleNamespace(is_cuda=True, dtype=dtype)) == expected


@pytest.mark.parametrize(("num_heads", "rank", "expected"), [(4, 32, "triton"), (16, 128, "triton"), (12, 128, "triton"),
                                                             (17, 128, "torch"), (16, 129, "torch")])
def test_auto_backend_sends_adapters_wider_than_the_kernels_to_the_reference(num_heads, rank, expected, monkeypatch):
    """Heads and rank are padded to powers of two (rank to at least 16); past 2048 columns the heads
    backward no longer fits a GPU's shared memory, so such adapters run the reference."""
    monkeypatch.delenv("HYDRALORA_BACKEND", raising=False)
    pytest.importorskip("triton")
    x = types.SimpleNamespace(is_cuda=True, dtype=torch.bfloat16)
    assert resolve_backend(x, num_heads=num_heads, rank=rank) == expected


@pytest.mark.parametrize(("num_heads", "rank", "padded"), [(1, 1, 16), (3, 8, 64), (4, 32, 128), (5, 33, 512),
                                                           (16, 128, 2048)])
def test_the_concatenated_rank_the_kernels_hold(num_heads, rank, padded):
    pytest.importorskip("triton")
    from hydralora.kernels.tiling import heads_pad, rank_pad

    assert heads_pad(num_heads) * rank_pad(rank) == padded
