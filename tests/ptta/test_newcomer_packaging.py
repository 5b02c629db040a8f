"""Installing prints no setuptools deprecation (issue #17, item 9): both pyproject.toml files give
the license as an SPDX string, which needs setuptools >= 77 to build."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("pyproject", ["pyproject.toml", "examples/ptta/pyproject.toml"])
def test_license_is_an_spdx_string_and_the_build_needs_a_setuptools_that_reads_it(pyproject):
    data = tomllib.loads((ROOT / pyproject).read_text())
    assert data["project"]["license"] == "Apache-2.0"  # not the deprecated {text = ...} table
    (setuptools,) = [r for r in data["build-system"]["requires"] if r.startswith("setuptools")]
    assert tuple(int(x) for x in re.search(r">=\s*([\d.]+)", setuptools).group(1).split(".")) >= (77,)
