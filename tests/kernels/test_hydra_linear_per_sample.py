"""Training with head weights per sample (B, N) or per token (B, T, N) through HydraLinear, on both backends.

Each case runs a forward and a backward through `HydraLinear` with `set_backend("torch")` (the
reference) or `set_backend("triton")` (the kernels: interpreted on a machine without CUDA, compiled
on a GPU) and checks y and every gradient (A, B, x, and the head weights when they require grad)
against the explicit fp64 sum over heads of tests/explicit_math.py, computed on an fp64 copy of the
layer. It also checks what supervision per sample promises: with one-hot weights head k learns from
the samples labelled k only, so heads trained that way diverge where per-layer mixing keeps them equal.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from explicit_math import explicit_hydra
from hydra_kernel_cases import KERNEL_DEVICE, relative_error

import hydralora
from hydralora import HydraConfig, HydraLinear

BACKENDS = ("torch", "triton")
BATCH, TOKENS, IN_FEATURES, OUT_FEATURES, RANK, HEADS = 3, 5, 24, 20, 4, 4
LABELS = torch.tensor([0, 2, 0])  # head 1 and head 3 label no sample


@pytest.fixture(params=BACKENDS)
def backend(request):
    hydralora.set_backend(request.param)
    yield request.param
    hydralora.set_backend(None)


def make_layer(mixing: str = "fixed", dtype: torch.dtype = torch.float32, seed: int = 0, random_b: bool = True,
               **config) -> HydraLinear:
    torch.manual_seed(seed)
    base = torch.nn.Linear(IN_FEATURES, OUT_FEATURES).to(device=KERNEL_DEVICE, dtype=dtype)
    layer = HydraLinear(base, HydraConfig(r=RANK, alpha=2.0 * RANK, num_heads=HEADS, mixing=mixing, **config))
    if random_b:
        with torch.no_grad():
            layer.lora_B.normal_(std=RANK**-0.5)
    return layer.train()


def make_x(dtype: torch.dtype = torch.float32, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(BATCH, TOKENS, IN_FEATURES, generator=generator).to(KERNEL_DEVICE, dtype).requires_grad_()


def head_weight_cases() -> dict[str, torch.Tensor]:
    """Overrides as a trainer would pass them, each with its own layout or dtype."""
    generator = torch.Generator().manual_seed(2)
    one_hot = F.one_hot(LABELS, HEADS)
    return {
        "per-sample": torch.rand(BATCH, HEADS, generator=generator),
        "per-sample-one-hot-int64": one_hot,
        "per-sample-one-hot-bool": one_hot.bool(),
        "per-sample-transposed": torch.rand(HEADS, BATCH, generator=generator).t(),
        "per-sample-fp64": torch.rand(BATCH, HEADS, generator=generator, dtype=torch.float64),
        "per-token": torch.rand(BATCH, TOKENS, HEADS, generator=generator),
        "per-token-strided": torch.rand(BATCH, TOKENS, 2 * HEADS, generator=generator)[..., ::2],
        "per-token-transposed": torch.rand(TOKENS, BATCH, HEADS, generator=generator).transpose(0, 1),
    }


def broadcast(weights: torch.Tensor) -> torch.Tensor:
    """The override shaped to broadcast against (B, T, d) for the explicit math."""
    return weights[:, None, :] if weights.dim() == 2 else weights


def probe(shape: torch.Size, seed: int = 3) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def train_step(layer: HydraLinear, x: torch.Tensor, weights: torch.Tensor) -> dict[str, torch.Tensor]:
    """y and the gradients of one backward with `weights` as a per-sample / per-token override."""
    with hydralora.head_weights(layer, weights):
        y = layer(x)
        (y.double() * probe(y.shape).to(y.device)).sum().backward()
    grads = {"y": y.detach(), "lora_A": layer.lora_A.grad, "lora_B": layer.lora_B.grad, "x": x.grad}
    if weights.requires_grad:
        grads["head_weights"] = weights.grad
    return grads


def explicit_step(layer: HydraLinear, x: torch.Tensor, weights: torch.Tensor) -> dict[str, torch.Tensor]:
    """The same step written head by head in fp64 on a copy of the layer (shares no hydralora code path)."""
    exact = copy.deepcopy(layer).cpu().double()
    x64 = x.detach().cpu().double().requires_grad_()
    w64 = weights.detach().cpu().double().requires_grad_(weights.requires_grad)
    y = explicit_hydra(exact, x64, omega=broadcast(w64))
    leaves = {"lora_A": exact.lora_A, "lora_B": exact.lora_B, "x": x64}
    if weights.requires_grad:
        leaves["head_weights"] = w64
    grads = torch.autograd.grad((y * probe(y.shape)).sum(), list(leaves.values()))
    return {"y": y.detach(), **dict(zip(leaves, grads))}


@pytest.mark.parametrize("mixing", ["fixed", "learned", "router"])
@pytest.mark.parametrize("kind", ["per-sample", "per-token"])
def test_gradients_match_explicit_math(backend, mixing, kind):
    layer = make_layer(mixing)
    weights = head_weight_cases()[kind].to(KERNEL_DEVICE).requires_grad_()
    x = make_x()
    got, exact = train_step(layer, x, weights), explicit_step(layer, x, weights)
    assert got.keys() == exact.keys()
    errors = {name: relative_error(got[name], exact[name]) for name in exact}
    assert all(error <= 1e-5 for error in errors.values()), errors
    for name in ("lora_A", "lora_B", "x", "head_weights"):
        assert got[name].dtype == torch.float32, name


@pytest.mark.parametrize("case", [name for name in head_weight_cases() if name not in ("per-sample", "per-token")])
def test_layouts_and_dtypes_of_the_override(backend, case):
    """Integer and bool one-hot labels, transposed or strided views, fp64 weights on an fp32 layer."""
    layer = make_layer("fixed")
    weights = head_weight_cases()[case].to(KERNEL_DEVICE)
    x = make_x()
    got, exact = train_step(layer, x, weights), explicit_step(layer, x, weights)
    errors = {name: relative_error(got[name], exact[name]) for name in exact}
    assert all(error <= 1e-5 for error in errors.values()), errors


@pytest.mark.parametrize("kind", ["per-sample", "per-token"])
def test_fp16_activations_with_fp32_adapter(kind):
    """A half-precision base (fp32 adapter, fp16 compute): the kernels within twice the reference's
    own fp16 error, both measured against fp64; gradients return in the parameters' dtypes."""
    weights = head_weight_cases()[kind].to(KERNEL_DEVICE).requires_grad_()
    results = {}
    for name in BACKENDS:
        hydralora.set_backend(name)
        try:
            layer, x = make_layer("fixed", dtype=torch.float16), make_x(torch.float16)
            weights.grad = None
            results[name] = train_step(layer, x, weights)
        finally:
            hydralora.set_backend(None)
    exact = explicit_step(layer, x, weights)
    assert results["triton"]["lora_B"].dtype == torch.float32 and results["triton"]["x"].dtype == torch.float16
    for name in exact:
        kernel_error = relative_error(results["triton"][name], exact[name])
        torch_error = relative_error(results["torch"][name], exact[name])
        assert kernel_error <= 2 * torch_error + 1e-6, f"{name}: kernel {kernel_error:.2e}, torch {torch_error:.2e}"


@pytest.mark.parametrize("mixing", ["learned", "router"])
def test_override_replaces_the_mixing_in_the_backward_too(backend, mixing):
    """Under an override the layer's own omega takes no part: no gradient reaches it."""
    layer = make_layer(mixing)
    train_step(layer, make_x(), head_weight_cases()["per-sample"].to(KERNEL_DEVICE))
    own = layer.head_weights if mixing == "learned" else layer.router.weight
    assert own.grad is None


def summed_loss(layer: HydraLinear, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """A loss that is a sum of per-sample terms, so a subset of the batch gives those samples' share."""
    with hydralora.head_weights(layer, weights):
        y = layer(x)
    return (y.double() * probe(y.shape[1:]).to(y.device)).sum()


def test_one_hot_heads_learn_only_from_their_samples(backend):
    """dB_k over the batch equals dB_k over the samples labelled k; unlabelled heads get exactly 0."""
    layer = make_layer("fixed")
    x = make_x().detach()
    one_hot = F.one_hot(LABELS, HEADS).float().to(KERNEL_DEVICE)
    (full,) = torch.autograd.grad(summed_loss(layer, x, one_hot), [layer.lora_B])
    for head in range(HEADS):
        rows = (LABELS == head).nonzero().flatten().to(KERNEL_DEVICE)
        if len(rows) == 0:
            assert torch.count_nonzero(full[head]) == 0, f"head {head} labels no sample but got a gradient"
            continue
        (subset,) = torch.autograd.grad(summed_loss(layer, x[rows], one_hot[rows]), [layer.lora_B])
        torch.testing.assert_close(full[head], subset[head], rtol=1e-5, atol=1e-6)
        others = [h for h in range(HEADS) if h != head]
        assert torch.count_nonzero(subset[others]) == 0


def train_heads(mixing: str, supervised: bool, steps: int = 3) -> torch.Tensor:
    """lora_B after a few Adam steps from zero-init B (the default), with or without labels."""
    layer = make_layer(mixing, random_b=False)
    optimizer = torch.optim.Adam([p for p in layer.parameters() if p.requires_grad], lr=1e-2)
    one_hot = F.one_hot(torch.tensor([0, 1, 2, 3, 0, 1]), HEADS).float().to(KERNEL_DEVICE)
    for step in range(steps):
        x = torch.randn(6, TOKENS, IN_FEATURES, generator=torch.Generator().manual_seed(step)).to(KERNEL_DEVICE)
        if supervised:
            with hydralora.head_weights(layer, one_hot):
                loss = layer(x).square().mean()
                loss.backward()
        else:
            layer(x).square().mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    return layer.lora_B.detach()


@pytest.mark.filterwarnings("ignore::hydralora.HeadCollapseWarning")
@pytest.mark.parametrize("mixing", ["fixed", "learned"])
def test_per_sample_supervision_separates_heads_that_per_layer_mixing_keeps_equal(backend, mixing):
    """Without labels the heads stay equal: bit for bit on the reference; to rounding on the kernels,
    whose GEMM tiles may sum the columns of different heads in different orders."""
    collapsed = train_heads(mixing, supervised=False)
    assert collapsed.abs().max() > 0
    for head in range(1, HEADS):
        if backend == "torch":
            assert torch.equal(collapsed[0], collapsed[head]), head
        else:
            assert relative_error(collapsed[head], collapsed[0]) <= 1e-5, head
    supervised = train_heads(mixing, supervised=True)
    gaps = [(supervised[i] - supervised[j]).norm() / supervised.norm() for i in range(HEADS) for j in range(i)]
    assert min(gaps) > 0.1, gaps
