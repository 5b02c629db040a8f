"""`head_report`: how different a model's heads are, per layer and overall, as plain JSON-ready data.

Heads B_i that stay equal make a HydraLoRA adapter a rank-r LoRA with N times the parameters
(docs/architecture.md, "When heads collapse"); this measures it after, or during, training.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn

from hydralora.injection import HydraInjectionError, hydra_layers

COLLAPSE_TOLERANCE = 1e-3


@torch.no_grad()
def head_report(model: nn.Module, tolerance: float = COLLAPSE_TOLERANCE) -> dict[str, Any]:
    """Per layer and overall: how far apart the heads B_i are, their effective rank, router usage.

    Per layer (`report["layers"][name]`):
        num_heads, mixing;
        head_norms: ||B_i|| (Frobenius), and mean_norm, their mean;
        distance: the N x N matrix ||B_i - B_j|| / mean_norm (0 on the diagonal; all 0 when every
            B_i is 0, where the heads are equal too); mean_distance and max_distance over the pairs
            i < j (None for a single head);
        effective_rank: exp(entropy) of the normalised singular values of the N x (d*r) stack of
            flattened heads (Roy & Vetterli): 1 for equal heads, N for orthogonal heads of equal
            norm, 0 when every B_i is 0;
        head_weights: the layer's own omega (learned or fixed mixing), else None;
        head_usage: the mean gate per head of the last router forward (`last_head_usage`), None
            without a router or before its first forward; usage_entropy: entropy of head_usage
            (ln N when heads are used equally); gate_entropy: mean per-token entropy of the gates
            of that forward (ln N for uniform gates, 0 for one-hot ones), None likewise;
        collapsed: max_distance <= `tolerance` with more than one head (heads that start equal and
            receive proportional gradients stay bit-identical: distance exactly 0).
    Overall (`report["summary"]`): num_layers, collapsed_layers (count), collapsed (every layer with
    several heads collapsed), mean_distance and min_distance over those layers' mean_distance,
    mean_effective_rank. Entropies are in nats. Everything is a float, int, bool, str, None or a
    list of them, so `json.dumps(report)` works. `model` may be a single HydraLinear.
    """
    layers = list(hydra_layers(model))
    if not layers:
        raise HydraInjectionError("the model has no HydraLoRA adapters: call hydralora.inject(model, config) first")
    per_layer = {name: _layer_report(layer, tolerance) for name, layer in layers}
    multi = [entry for entry in per_layer.values() if entry["num_heads"] > 1]
    distances = [entry["mean_distance"] for entry in multi]
    summary = {
        "num_layers": len(per_layer),
        "collapsed_layers": sum(entry["collapsed"] for entry in multi),
        "collapsed": bool(multi) and all(entry["collapsed"] for entry in multi),
        "mean_distance": _mean(distances),
        "min_distance": min(distances) if distances else None,
        "mean_effective_rank": _mean([entry["effective_rank"] for entry in per_layer.values()]),
    }
    return {"layers": per_layer, "summary": summary}


def _layer_report(layer: nn.Module, tolerance: float) -> dict[str, Any]:
    num_heads = layer.num_heads
    # fp64 on the adapter's own device: N x (d*r) is small, and equal heads give exactly 0
    heads = layer.lora_B.detach().reshape(num_heads, -1).double()
    norms = torch.linalg.vector_norm(heads, dim=1)
    # ||B_i - B_j|| for i < j, row by row (all pairs at once would hold N^2 copies of the heads)
    gaps = [torch.linalg.vector_norm(heads[i + 1 :] - heads[i], dim=1) for i in range(num_heads - 1)]
    norms_list = norms.tolist()
    gaps_list = torch.cat(gaps).tolist() if gaps else []  # one device sync per layer
    mean_norm = sum(norms_list) / num_heads
    distance = [[0.0] * num_heads for _ in range(num_heads)]
    pairs = []
    for i in range(num_heads):
        for j in range(i + 1, num_heads):
            gap = gaps_list[len(pairs)]
            distance[i][j] = distance[j][i] = gap / mean_norm if mean_norm > 0 else 0.0
            pairs.append(distance[i][j])
    mean_distance = _mean(pairs)
    max_distance = max(pairs) if pairs else None
    entry: dict[str, Any] = {
        "num_heads": num_heads,
        "mixing": layer.config.mixing,
        "head_norms": norms_list,
        "mean_norm": mean_norm,
        "distance": distance,
        "mean_distance": mean_distance,
        "max_distance": max_distance,
        "effective_rank": effective_rank(heads),
        "head_weights": None,
        "head_usage": None,
        "usage_entropy": None,
        "gate_entropy": None,
        "collapsed": max_distance is not None and max_distance <= tolerance,
    }
    if layer.router is None:
        entry["head_weights"] = layer.head_weights.detach().double().tolist()
    elif layer.last_head_usage is not None:
        usage = layer.last_head_usage.detach().double()
        entry["head_usage"] = usage.tolist()
        entry["usage_entropy"] = torch.special.entr(usage).sum().item()
        if layer.last_gate_entropy is not None:
            entry["gate_entropy"] = float(layer.last_gate_entropy)
    return entry


def effective_rank(matrix: torch.Tensor) -> float:
    """exp(H(p)), p = sigma / sum(sigma) over the singular values of `matrix`; 0 for a zero matrix."""
    singular = torch.linalg.svdvals(matrix.double())
    total = singular.sum()
    if total.item() == 0:
        return 0.0
    return math.exp(torch.special.entr(singular / total).sum().item())


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None
