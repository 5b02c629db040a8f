"""Every kernel lowers to a Hopper (sm_90) cubin on this machine, GPU or not.

The interpreter tests never lower the kernels; this runs `hydralora.kernels.compile_check` in a
subprocess without TRITON_INTERPRET, so an error that only the compiler sees fails CI too.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import triton


def ptxas_available() -> bool:
    try:
        return os.path.exists(triton.knobs.nvidia.ptxas_blackwell.path)
    except Exception:  # no NVIDIA backend in this Triton build
        return False


@pytest.mark.skipif(not ptxas_available(), reason="Triton's NVIDIA backend or its ptxas is missing")
def test_every_kernel_compiles_for_hopper():
    env = {name: value for name, value in os.environ.items() if name != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-m", "hydralora.kernels.compile_check", "--arch", "90"],
                            env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1] == "0 failures"
    # The fused GEMMs with the base in their K loop must run on wgmma with a pipelined main loop.
    fused = [line for line in lines if line.startswith("ok   fused_") and "'FUSE_BASE': True" in line]
    assert len(fused) == 4
    assert all("wgmma=True" in line and "async_copy=True" in line for line in fused), "\n".join(fused)
    # The widest adapter the dispatcher lets through fits H100 shared memory in a tile it keeps.
    assert any(line.startswith("ok   heads_bwd    width 2048") for line in lines), result.stdout
