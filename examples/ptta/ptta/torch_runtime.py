"""Device and dtype choice shared by every stage that runs a model, and quiet weight loading."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

DTYPES = ("auto", "float32", "bfloat16", "float16")


def resolve_device(device: str | None):
    """"auto" or None -> the first CUDA device when there is one, else the CPU."""
    import torch

    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device):
    """"auto" -> bfloat16 on a GPU (how the scorers' checkpoints were trained), float32 on a CPU."""
    import torch

    if dtype not in DTYPES:
        raise ValueError(f"dtype: expected one of {DTYPES}, got {dtype!r}")
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, dtype)


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load report while loading a backbone whose checkpoint also holds a
    head we read ourselves (it would list the head's weights as "unexpected")."""
    from transformers.utils import logging

    previous = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(previous)
