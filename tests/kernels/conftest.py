"""Kernel tests run the Triton path; without CUDA under the interpreter, and outputs start as NaN.

TRITON_INTERPRET must be in the environment before the kernels are decorated, so it is set here
at import time (pytest imports this file before collecting the test modules). The NaN fill makes
any output element a kernel forgets to write fail the comparison instead of passing on a lucky 0.
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def nan_filled_empty(monkeypatch):
    """torch.empty / torch.empty_like return NaN-filled floating tensors during these tests."""
    real_empty, real_empty_like = torch.empty, torch.empty_like

    def poison(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.fill_(float("nan")) if tensor.is_floating_point() else tensor

    monkeypatch.setattr(torch, "empty", lambda *args, **kwargs: poison(real_empty(*args, **kwargs)))
    monkeypatch.setattr(torch, "empty_like", lambda *args, **kwargs: poison(real_empty_like(*args, **kwargs)))
