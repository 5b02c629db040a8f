"""Inputs, runs and error measures shared by the HydraLinear kernel tests (CPU and GPU)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from hydralora.functional import expand_head_weights
from hydralora.kernels.hydra_linear import hydra_linear_triton
from hydralora.kernels.reference import hydra_linear_torch

MIXINGS = ("router_x", "router_lora", "per_layer", "per_sample", "per_token")
# Under the interpreter the kernels take CPU tensors; compiled (a GPU machine) they need CUDA ones,
# so the same odd-shape fp32/fp16 cases also check the compiled kernels there.
KERNEL_DEVICE = "cpu" if os.environ.get("TRITON_INTERPRET") == "1" or not torch.cuda.is_available() else "cuda"


@dataclass(frozen=True)
class Shape:
    lead: tuple[int, ...]  # leading dims of x; their product is M
    in_features: int
    out_features: int
    rank: int
    num_heads: int

    def __str__(self) -> str:
        lead = "x".join(map(str, self.lead))
        return f"M{lead}-k{self.in_features}-d{self.out_features}-r{self.rank}-N{self.num_heads}"


def make_inputs(
    shape: Shape,
    mixing: str,
    dtype: torch.dtype,
    *,
    param_dtype: torch.dtype | None = None,
    bias: bool = True,
    x_layout: str = "contiguous",
    device: str = KERNEL_DEVICE,
    seed: int = 0,
) -> dict:
    """Leaf tensors for one HydraLinear call; the adapter's are trainable, W and bias frozen.

    x_layout: "contiguous", "transposed" (column-major x, lead must be 1-D) or "strided" (every
    other column of a wider tensor). B is random rather than zero so that every gradient is live.
    """
    gen = torch.Generator().manual_seed(seed)
    param_dtype = param_dtype or dtype
    k, d, r, n = shape.in_features, shape.out_features, shape.rank, shape.num_heads

    def rand(*size, dtype=dtype, std=1.0):
        return (torch.randn(*size, generator=gen, dtype=torch.float64) * std).to(device=device, dtype=dtype)

    if x_layout == "contiguous":
        x = rand(*shape.lead, k)
    elif x_layout == "transposed":
        (m,) = shape.lead
        x = rand(k, m).t()
    elif x_layout == "strided":
        x = rand(*shape.lead, 2 * k)[..., ::2]
    else:
        raise ValueError(x_layout)
    inputs = {
        "x": x.requires_grad_(),
        "weight": rand(d, k, std=k**-0.5),
        "bias": rand(d) if bias else None,
        "lora_A": rand(r, k, dtype=param_dtype, std=k**-0.5).requires_grad_(),
        "lora_B": rand(n, d, r, dtype=param_dtype, std=r**-0.5).requires_grad_(),
        "router_weight": None,
        "head_weights": None,
    }
    if mixing == "router_x":
        inputs["router_weight"] = rand(n, k, dtype=param_dtype, std=k**-0.5).requires_grad_()
    elif mixing == "router_lora":
        inputs["router_weight"] = rand(n, r, dtype=param_dtype).requires_grad_()
    elif mixing == "per_layer":
        inputs["head_weights"] = rand(n, dtype=param_dtype).requires_grad_()
    elif mixing == "per_sample":
        inputs["head_weights"] = rand(shape.lead[0], n, dtype=param_dtype).requires_grad_()
    elif mixing == "per_token":
        inputs["head_weights"] = rand(*shape.lead, n, dtype=param_dtype).requires_grad_()
    else:
        raise ValueError(mixing)
    return inputs


def upcast(inputs: dict, dtype: torch.dtype = torch.float64) -> dict:
    """Same values in `dtype`, fresh leaves with the same requires_grad."""
    return {
        name: None if t is None else t.detach().to(dtype).requires_grad_(t.requires_grad)
        for name, t in inputs.items()
    }


def run_hydra(fn, inputs: dict, mixing: str, *, scale=0.75, temperature=1.0, dropout_p=0.0, training=False):
    """Call a backend (`hydra_linear_torch` or `hydra_linear_triton`) the way `hydra_linear` does."""
    x = inputs["x"]
    num_heads = inputs["lora_B"].shape[0]
    head_weights = inputs["head_weights"]
    if head_weights is not None:
        head_weights = expand_head_weights(head_weights, x.shape[:-1], num_heads)
    return fn(
        x.reshape(-1, x.shape[-1]), inputs["weight"], inputs["bias"], inputs["lora_A"], inputs["lora_B"], scale,
        head_weights, inputs["router_weight"], mixing == "router_lora", temperature, dropout_p, training,
    )


def trainable(inputs: dict) -> list[str]:
    return [name for name, t in inputs.items() if t is not None and t.requires_grad]


def outputs_and_grads(fn, inputs: dict, mixing: str, probe_seed: int = 1, probs_in_loss: bool = True, **kwargs) -> dict:
    """y, probs and the gradient of every trainable input under a fixed random linear loss.

    The loss weights y (and the probabilities, when asked) by seeded random probes, so the
    backward sees a dense dy and, through probs, the gradient a balance loss would send.
    """
    y, probs = run_hydra(fn, inputs, mixing, **kwargs)
    gen = torch.Generator().manual_seed(probe_seed)
    loss = (y.double() * torch.randn(y.shape, generator=gen, dtype=torch.float64).to(y.device)).sum()
    if probs is not None and probs_in_loss:
        loss = loss + (probs.double() * torch.randn(probs.shape, generator=gen, dtype=torch.float64).to(y.device)).sum()
    names = trainable(inputs)
    grads = torch.autograd.grad(loss, [inputs[n] for n in names])
    result = {"y": y.detach(), **{f"grad_{n}": g for n, g in zip(names, grads)}}
    if probs is not None:
        result["probs"] = probs.detach()
    return result


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    """max |value - reference| / max |reference|, in fp64; inf for any NaN."""
    value, reference = value.double().cpu(), reference.double().cpu()
    if torch.isnan(value).any():
        return float("inf")
    return ((value - reference).abs().max() / reference.abs().max().clamp_min(1e-30)).item()


def assert_matches_reference(inputs: dict, mixing: str, reference_dtype=torch.float64, **kwargs) -> None:
    """The Triton path's y, probs and gradients against the reference run in `reference_dtype`.

    fp32 must match to 1e-5 (relative to the largest reference element). fp16 / bf16 must be
    within twice the error of the reference's own computation in that dtype, both measured
    against `reference_dtype` (Liger-Kernel's criterion; 1e-6 absorbs round-off where both are
    exact, e.g. the router gradient of a single head).
    """
    dtype = inputs["x"].dtype
    got = outputs_and_grads(hydra_linear_triton, inputs, mixing, **kwargs)
    exact = outputs_and_grads(hydra_linear_torch, upcast(inputs, reference_dtype), mixing, **kwargs)
    assert got.keys() == exact.keys()
    if dtype == torch.float32:
        errors = {name: relative_error(got[name], exact[name]) for name in exact}
        assert all(err <= 1e-5 for err in errors.values()), errors
        return
    same_precision = outputs_and_grads(hydra_linear_torch, upcast(inputs, dtype), mixing, **kwargs)
    for name in exact:
        err = relative_error(got[name], exact[name])
        torch_err = relative_error(same_precision[name], exact[name])
        limit = 2 * torch_err + 1e-6
        assert err <= limit, f"{name}: kernel {err:.2e}, torch {dtype} {torch_err:.2e}"
