"""Dropout in the Triton HydraLinear: exact against the reference given the kernels' own mask.

The kernels draw their keep mask from Philox (seed, element offset), not from F.dropout's
generator. The reference is therefore run with F.dropout replaced by that very mask
(`dropout_keep_mask` of the seed the forward drew), which checks y and every gradient, the
backward's regenerated mask included. The mask's own statistics are checked separately.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hydra_kernel_cases import KERNEL_DEVICE, Shape, assert_matches_reference, make_inputs, run_hydra

from hydralora.kernels.dropout import draw_dropout_seed, dropout_keep_mask
from hydralora.kernels.hydra_linear import hydra_linear_triton

SHAPE = Shape((37,), 48, 80, 8, 3)
DROPOUT_P = 0.3


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("mixing", ["router_x", "router_lora", "per_token"])
def test_dropout_matches_reference_with_the_kernel_mask(mixing, dtype, monkeypatch):
    inputs = make_inputs(SHAPE, mixing, dtype, x_layout="strided")
    torch.manual_seed(1234)
    keep = dropout_keep_mask(draw_dropout_seed(), SHAPE.lead[0], SHAPE.in_features, DROPOUT_P, inputs["x"].device)
    assert 0 < keep.float().mean() < 1

    def kernel_mask_dropout(x, p, training):
        assert training and p == DROPOUT_P
        return x * keep.to(x.dtype) / (1 - p)

    monkeypatch.setattr(F, "dropout", kernel_mask_dropout)  # only the reference calls F.dropout
    torch.manual_seed(1234)  # the kernel's forward, run first, draws the same seed
    assert_matches_reference(inputs, mixing, dropout_p=DROPOUT_P, training=True)


def test_keep_mask_statistics():
    p = 0.25
    device = torch.device(KERNEL_DEVICE)
    keep = dropout_keep_mask(7, 256, 200, p, device)
    # 51200 Bernoulli(0.75) draws: the standard deviation of the mean is 0.0019.
    assert abs(keep.float().mean().item() - (1 - p)) < 0.01
    assert not torch.equal(keep[0], keep[1]), "rows repeat: the offset ignores the row"
    assert not torch.equal(keep, dropout_keep_mask(8, 256, 200, p, device)), "the seed is ignored"
    assert torch.equal(keep, dropout_keep_mask(7, 256, 200, p, device)), "the mask is not reproducible"


def test_training_off_or_zero_p_means_no_dropout():
    inputs = make_inputs(SHAPE, "router_x", torch.float32)
    plain, _ = run_hydra(hydra_linear_triton, inputs, "router_x")
    evaluated, _ = run_hydra(hydra_linear_triton, inputs, "router_x", dropout_p=0.5, training=False)
    dropped, _ = run_hydra(hydra_linear_triton, inputs, "router_x", dropout_p=0.5, training=True)
    assert torch.equal(plain, evaluated)
    assert not torch.allclose(plain, dropped)


def test_same_global_seed_same_result():
    """The kernel's seed comes from torch's generator: torch.manual_seed reproduces a step."""
    inputs = make_inputs(SHAPE, "per_token", torch.float32)
    runs = []
    for _ in range(2):
        torch.manual_seed(5)
        runs.append(run_hydra(hydra_linear_triton, inputs, "per_token", dropout_p=0.5, training=True)[0])
    assert torch.equal(*runs)
