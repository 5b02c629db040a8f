"""The HydraLoRA forward written out head by head in fp64: the independent oracle of the core tests.

It shares no code with hydralora: no stacked B, no s~ trick, no expand_head_weights. Each head's
update B_i A x is computed on its own and summed with its weight, as in the paper's Eq. 3.
"""

from __future__ import annotations

import torch

from hydralora import HydraLinear


def explicit_omega(layer: HydraLinear, x: torch.Tensor, adapter_input: torch.Tensor) -> torch.Tensor:
    """omega as the layer's own mixing makes it, fp64, broadcastable against x's leading dims."""
    config = layer.config
    if layer.router is None:
        return layer.head_weights.double()
    router_in = x if config.router_input == "x" else adapter_input @ layer.lora_A.double().t()
    logits = router_in @ layer.router.weight.double().t()
    return torch.softmax(logits / config.router_temperature, dim=-1)


def explicit_hydra(
    layer: HydraLinear,
    x: torch.Tensor,
    omega: torch.Tensor | None = None,
    dropout_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """base(x) + (alpha/r) * sum_i omega_i B_i A (mask * x), all in fp64 and differentiable.

    `omega` overrides the layer's mixing and must already broadcast against x's leading dims, e.g.
    (B, 1, N) for a per-sample override of a (B, T, k) input. `dropout_mask` is the scaled keep
    mask F.dropout applied (zeros and 1/(1-p)).
    """
    x = x.double()
    weight = layer.base_layer.weight.double()
    bias = layer.base_layer.bias
    y = x @ weight.t() + (0 if bias is None else bias.double())
    adapter_input = x if dropout_mask is None else x * dropout_mask.double()
    if omega is None:
        omega = explicit_omega(layer, x, adapter_input)
    omega = omega.double()
    lora_a = layer.lora_A.double()
    delta = torch.zeros_like(y)
    for head in range(layer.num_heads):
        lora_b = layer.lora_B[head].double()
        delta = delta + omega[..., head : head + 1] * (adapter_input @ lora_a.t() @ lora_b.t())
    return y + layer.config.alpha / layer.config.r * delta


def make_layer(
    in_features: int = 6,
    out_features: int = 5,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
    random_b: bool = True,
    bias: bool = True,
    **config,
) -> HydraLinear:
    """A HydraLinear on a seeded random base, with random B unless `random_b` is False."""
    from hydralora import HydraConfig

    torch.manual_seed(seed)
    base = torch.nn.Linear(in_features, out_features, bias=bias).to(dtype)
    settings = {"r": 3, "alpha": 6.0, "num_heads": 4}
    settings.update(config)
    layer = HydraLinear(base, HydraConfig(**settings))
    if random_b:
        with torch.no_grad():
            layer.lora_B.normal_(std=1.0)
            if layer.router is not None:
                layer.router.weight.normal_(std=1.0)
    return layer
