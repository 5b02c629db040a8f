"""Fixtures shared by the core tests; the builders themselves live in tiny_models.py."""

from __future__ import annotations

import pytest
from tiny_models import MODEL_CASES, ModelCase


@pytest.fixture(params=MODEL_CASES, ids=[case.name for case in MODEL_CASES])
def model_case(request) -> ModelCase:
    """Each of the three tiny models: custom nested module, Llama, HunyuanVideo transformer."""
    return request.param
