"""Backends of `hydralora.functional.hydra_linear`: the PyTorch reference and the Triton kernels."""

from hydralora.kernels.reference import hydra_linear_torch, router_probs

__all__ = ["hydra_linear_torch", "router_probs"]
