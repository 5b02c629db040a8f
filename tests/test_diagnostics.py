"""`head_report`: distances between heads, effective rank, router usage and the collapsed flag."""

from __future__ import annotations

import contextlib
import json
import math
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import hydralora
from hydralora import HeadCollapseWarning, HydraConfig, HydraInjectionError, HydraLinear
from hydralora.diagnostics import effective_rank

HEADS = 4


def model_with(**config) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 6))
    hydralora.inject(model, HydraConfig(**{"r": 2, "num_heads": HEADS, "mixing": "fixed", **config}))
    return model.train()


def adam_train(model: nn.Module, labels: torch.Tensor | None, steps: int = 4) -> nn.Module:
    """A few Adam steps, with one-hot head weights per sample from `labels` or without any."""
    optimizer = torch.optim.Adam([p for _, p in hydralora.adapter_parameters(model)], lr=1e-2)
    for step in range(steps):
        x = torch.randn(4, 3, 8, generator=torch.Generator().manual_seed(step))
        if labels is None:
            steering = contextlib.nullcontext()
        else:
            steering = hydralora.head_weights(model, F.one_hot(labels, HEADS).float())
        with steering, warnings.catch_warnings():
            warnings.simplefilter("ignore", HeadCollapseWarning)
            model(x).square().mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    return model


def as_json(report: dict) -> dict:
    """The report survives a strict JSON round trip (no NaN, no tensors) unchanged."""
    return json.loads(json.dumps(report, allow_nan=False))


@pytest.mark.parametrize("mixing", ["learned", "fixed"])
def test_collapsed_adapter_has_distance_zero_and_is_flagged(mixing):
    report = hydralora.head_report(adam_train(model_with(mixing=mixing), labels=None))
    assert as_json(report) == report
    assert set(report["layers"]) == {"0", "2"}
    for entry in report["layers"].values():
        assert entry["mean_norm"] > 0, "the heads were trained"
        assert entry["distance"] == [[0.0] * HEADS] * HEADS
        assert entry["mean_distance"] == entry["max_distance"] == 0.0
        assert entry["effective_rank"] == pytest.approx(1.0, abs=1e-6)
        assert entry["collapsed"] is True
        assert entry["mixing"] == mixing and entry["num_heads"] == HEADS
        assert len(entry["head_weights"]) == HEADS and entry["head_usage"] is None
    summary = report["summary"]
    assert summary == {"num_layers": 2, "collapsed_layers": 2, "collapsed": True, "mean_distance": 0.0,
                       "min_distance": 0.0, "mean_effective_rank": pytest.approx(1.0, abs=1e-6)}


def test_heads_trained_per_sample_are_apart_and_not_flagged():
    report = hydralora.head_report(adam_train(model_with(), labels=torch.tensor([0, 1, 2, 3])))
    assert as_json(report) == report
    for entry in report["layers"].values():
        off_diagonal = [entry["distance"][i][j] for i in range(HEADS) for j in range(HEADS) if i != j]
        assert min(off_diagonal) > 0.1
        assert entry["collapsed"] is False
        assert entry["effective_rank"] > 1.5
    assert report["summary"]["collapsed"] is False and report["summary"]["collapsed_layers"] == 0
    assert report["summary"]["min_distance"] > 0.1


def test_untrained_zero_heads_report_zeros_not_nan():
    report = hydralora.head_report(model_with())
    entry = report["layers"]["0"]
    assert entry["head_norms"] == [0.0] * HEADS and entry["mean_norm"] == 0.0
    assert entry["mean_distance"] == 0.0 and entry["effective_rank"] == 0.0
    assert entry["collapsed"] is True
    assert as_json(report) == report


def test_values_on_hand_made_heads():
    """Orthogonal heads of equal norm: distance sqrt(2) between each pair, effective rank N."""
    layer = HydraLinear(nn.Linear(3, 4), HydraConfig(r=2, num_heads=HEADS, mixing="learned"))
    with torch.no_grad():
        layer.lora_B.zero_()
        for head in range(HEADS):
            layer.lora_B[head, head, 0] = 2.0
        layer.head_weights.copy_(torch.tensor([0.1, 0.2, 0.3, 0.4]))
    entry = hydralora.head_report(layer)["layers"][""]
    assert entry["head_norms"] == [2.0] * HEADS
    assert entry["distance"][0][1] == pytest.approx(math.sqrt(2)) and entry["distance"][2][2] == 0.0
    assert entry["effective_rank"] == pytest.approx(HEADS)
    assert entry["head_weights"] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    # two equal heads and two opposite ones: distance relative to the mean norm, rank 1
    with torch.no_grad():
        layer.lora_B.copy_(torch.randn(1, 4, 2).expand(HEADS, 4, 2) * torch.tensor([1.0, 1.0, -1.0, 3.0])[:, None, None])
    entry = hydralora.head_report(layer)["layers"][""]
    norm = layer.lora_B[0].norm().item()
    assert entry["mean_norm"] == pytest.approx(1.5 * norm)
    assert entry["distance"][0][1] == 0.0
    assert entry["distance"][0][2] == pytest.approx(2 / 1.5)
    assert entry["distance"][0][3] == pytest.approx(2 / 1.5)
    assert entry["max_distance"] == pytest.approx(4 / 1.5)
    assert entry["effective_rank"] == pytest.approx(1.0, abs=1e-6)
    assert entry["collapsed"] is False


def test_collapse_tolerance():
    layer = HydraLinear(nn.Linear(3, 4), HydraConfig(r=2, num_heads=2, mixing="fixed"))
    with torch.no_grad():
        layer.lora_B.fill_(1.0)
        layer.lora_B[1, 0, 0] += 1e-4  # 1e-4 / sqrt(8) apart, relative
    assert hydralora.head_report(layer)["layers"][""]["collapsed"] is True
    assert hydralora.head_report(layer, tolerance=1e-6)["layers"][""]["collapsed"] is False


def test_router_usage_and_gate_entropy():
    model = model_with(mixing="router")
    report = hydralora.head_report(model)
    assert report["layers"]["0"]["head_usage"] is None and report["layers"]["0"]["gate_entropy"] is None
    x = torch.randn(5, 8)
    probs = {}
    model[0].register_forward_hook(lambda m, i, o: probs.__setitem__(0, torch.softmax(i[0] @ m.router.weight.t(), -1)))
    model(x)
    entry = hydralora.head_report(model)["layers"]["0"]
    assert entry["head_weights"] is None
    assert entry["head_usage"] == pytest.approx(probs[0].mean(0).tolist(), abs=1e-6)
    assert sum(entry["head_usage"]) == pytest.approx(1.0, abs=1e-6)
    gate_entropy = -(probs[0] * probs[0].log()).sum(-1).mean().item()
    assert entry["gate_entropy"] == pytest.approx(gate_entropy, abs=1e-6)
    usage = torch.tensor(entry["head_usage"], dtype=torch.float64)
    assert entry["usage_entropy"] == pytest.approx(-(usage * usage.log()).sum().item(), abs=1e-9)
    assert entry["gate_entropy"] <= entry["usage_entropy"] <= math.log(HEADS) + 1e-9
    # uniform gates: both entropies ln N
    with torch.no_grad():
        model[0].router.weight.zero_()
    model(x)
    entry = hydralora.head_report(model)["layers"]["0"]
    assert entry["gate_entropy"] == pytest.approx(math.log(HEADS)) and entry["usage_entropy"] == pytest.approx(math.log(HEADS))
    assert as_json(hydralora.head_report(model)) == hydralora.head_report(model)


def test_single_head_is_never_collapsed():
    report = hydralora.head_report(adam_train(model_with(num_heads=1, mixing="learned"), labels=None))
    entry = report["layers"]["0"]
    assert entry["mean_distance"] is None and entry["max_distance"] is None and entry["collapsed"] is False
    assert entry["effective_rank"] == pytest.approx(1.0)
    assert report["summary"]["collapsed"] is False and report["summary"]["mean_distance"] is None
    assert as_json(report) == report


def test_effective_rank_helper():
    assert effective_rank(torch.zeros(3, 5)) == 0.0
    assert effective_rank(torch.eye(3)) == pytest.approx(3.0)
    assert effective_rank(torch.ones(3, 5)) == pytest.approx(1.0)


def test_model_without_adapters_is_refused():
    with pytest.raises(HydraInjectionError, match="no HydraLoRA adapters"):
        hydralora.head_report(nn.Sequential(nn.Linear(2, 2)))
    assert "head_report" in hydralora.__all__
