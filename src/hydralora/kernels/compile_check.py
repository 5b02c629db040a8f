"""Compile every HydraLinear kernel for an NVIDIA GPU without one (ahead of time), to catch GPU-only errors.

The interpreter that runs the CPU tests executes kernels in NumPy and never lowers them, so
layout, shared-memory or dot-shape errors would first show on a GPU. This lowers each kernel, in
each flag variant, to a cubin for the given architecture with the specialisations a real launch
gets (unit inner strides, 16-byte aligned pointers and sizes), and prints its shared memory and
whether its loops use wgmma (Hopper tensor cores) and asynchronous copies (software pipelining).
It also compiles the heads backward for the widest adapter the dispatcher sends to the kernels
(`MAX_CONCAT_RANK`) with the tiles the autotuner keeps, and fails if none fits the architecture's
shared memory. It needs Triton's NVIDIA backend and ptxas, not a GPU, and must run without
TRITON_INTERPRET.

    python -m hydralora.kernels.compile_check [--arch 90] [--dtype bf16] [--all-configs]
"""

from __future__ import annotations

import argparse
import os
import sys

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from hydralora.kernels import backward_heads, backward_input, backward_weights, dropout, fused_forward, shrink, tiling

INT_ARGS = {"M", "N", "K", "R", "NUM_HEADS", "num_splits", "seed"}
FLOAT_ARGS = {"scale", "inv_temperature", "dropout_p"}
# Per kernel: its fp32 pointers (the rest carry the activation dtype) and the strides that are 1 for
# the contiguous tensors its launcher allocates or usually receives (a launch specialises on them).
KERNELS = {
    "shrink": (shrink.hydra_shrink_fwd_kernel, {"probs_ptr"},
               {"stride_xk", "stride_ak", "stride_gc", "stride_sr", "stride_ph"}),
    "fused_fwd": (fused_forward.hydra_fused_fwd_kernel, {"omega_ptr"},
                  {"stride_xk", "stride_wk", "stride_basen", "stride_sr", "stride_oh", "stride_br", "stride_yn"}),
    "heads_bwd": (backward_heads.hydra_heads_bwd_kernel, {"omega_ptr", "grad_probs_ptr", "d_omega_ptr"},
                  {"stride_dyk", "stride_br", "stride_sr", "stride_oh", "stride_gph", "stride_gr", "stride_dsr",
                   "stride_doh"}),
    "lora_b_bwd": (backward_weights.hydra_lora_b_bwd_kernel, {"omega_ptr", "partial_ptr"},
                   {"stride_dyn", "stride_sr", "stride_oh", "stride_pc"}),
    "lora_a_bwd": (backward_weights.hydra_lora_a_bwd_kernel, {"dlogits_ptr", "partial_a_ptr", "partial_g_ptr"},
                   {"stride_xn", "stride_dsr", "stride_dlh", "stride_pan", "stride_pgn"}),
    "fused_dx": (backward_input.hydra_fused_dx_kernel, {"dlogits_ptr"},
                 {"stride_dyk", "stride_wn", "stride_basen", "stride_dsr", "stride_an", "stride_dlh", "stride_gn",
                  "stride_dxn"}),
    "dropout_mask": (dropout.dropout_keep_mask_kernel, set(), set()),
}
SHAPE_CONSTANTS = {"R_PAD": 32, "G_PAD": 16, "H_PAD": 4, "HEADS_PER_BLOCK": 4}
WIDEST_HEADS = {"H_PAD": 16, "R_PAD": tiling.MAX_CONCAT_RANK // 16}
# Shared memory one block may opt into, in bytes (CUDA's per-architecture limits).
SHARED_MEMORY_LIMIT = {80: 166912, 86: 101376, 87: 166912, 89: 101376, 90: 232448, 100: 232448, 120: 101376}


def variants() -> list[tuple[str, dict, list[triton.Config]]]:
    """(kernel name, flags, autotune configs) for every kernel and the flag combinations in use."""
    routers = [dict(ROUTER_ON_X=True, ROUTER_ON_LORA=False), dict(ROUTER_ON_X=False, ROUTER_ON_LORA=True),
               dict(ROUTER_ON_X=False, ROUTER_ON_LORA=False)]
    return [
        *[("shrink", {**r, "HAS_DROPOUT": d}, tiling.row_pass_configs()) for r in routers for d in (False, True)],
        *[("fused_fwd", dict(FUSE_BASE=f, HAS_BIAS=b), tiling.gemm_configs())
          for f in (True, False) for b in (True, False)],
        *[("heads_bwd", dict(HAS_ROUTER=h, ROUTER_ON_LORA=lo, HAS_GRAD_PROBS=g, WRITE_D_OMEGA=not h),
           tiling.row_pass_configs())
          for h, lo, g in ((True, False, True), (True, True, False), (False, False, False))],
        ("lora_b_bwd", {}, tiling.column_reduction_configs()),
        *[("lora_a_bwd", dict(COMPUTE_A=a, COMPUTE_ROUTER=g, HAS_DROPOUT=d), tiling.column_reduction_configs())
          for a, g, d in ((True, True, True), (True, False, False), (False, True, False))],
        *[("fused_dx", dict(FUSE_BASE=f, ROUTER_ON_X=r, HAS_DROPOUT=d), tiling.gemm_configs())
          for f, r, d in ((True, True, True), (True, False, False), (False, True, False))],
        ("dropout_mask", {}, [triton.Config({"BLOCK_M": 32, "BLOCK_K": 32})]),
    ]


def jit_function(kernel) -> triton.runtime.jit.JITFunction:
    while not isinstance(kernel, triton.runtime.jit.JITFunction):
        kernel = kernel.fn  # through the autotuner
    return kernel


def compile_kernel(name: str, flags: dict, config: triton.Config, dtype: str, arch: int, shapes: dict | None = None):
    kernel, fp32_pointers, unit_strides = KERNELS[name]
    fn = jit_function(kernel)
    constants = {**flags, **config.kwargs}
    if "DOT_PRECISION" in fn.arg_names:
        constants["DOT_PRECISION"] = "ieee" if dtype == "fp32" else "tf32"
    shapes = {**SHAPE_CONSTANTS, **(shapes or {})}
    constants.update({name: value for name, value in shapes.items() if name in fn.arg_names})
    constants.update({arg: 1 for arg in unit_strides})
    signature, aligned = {}, {}
    for index, arg in enumerate(fn.arg_names):
        if arg in constants:
            signature[arg] = "constexpr"
        elif arg.endswith("_ptr"):
            signature[arg] = "*" + ("fp32" if arg in fp32_pointers else "i8" if arg == "keep_ptr" else dtype)
            aligned[(index,)] = [["tt.divisibility", 16]]
        elif arg in FLOAT_ARGS:
            signature[arg] = "fp32"
        elif arg in INT_ARGS or arg.startswith("stride"):
            signature[arg] = "i32"
            if arg not in ("seed", "num_splits"):  # values a launch does not see as multiples of 16
                aligned[(index,)] = [["tt.divisibility", 16]]
        else:
            raise KeyError(f"{fn.__name__}: no rule for argument {arg}")
    source = ASTSource(fn, signature, constexprs=constants, attrs=aligned)
    options = {"num_warps": config.num_warps, "num_stages": config.num_stages}
    return triton.compile(source, target=GPUTarget("cuda", arch, 32), options=options)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", type=int, default=90, help="compute capability x 10 (90: H100 / H200, 80: A100)")
    parser.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), default="bf16")
    parser.add_argument("--all-configs", action="store_true", help="every autotune config, not only the first")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        parser.error("unset TRITON_INTERPRET: the interpreter replaces the compiler")
    failures = 0
    for name, flags, configs in variants():
        for config in configs if args.all_configs else configs[:1]:
            label = f"{name:<12} {flags} {config.kwargs} warps={config.num_warps} stages={config.num_stages}"
            try:
                compiled = compile_kernel(name, flags, config, args.dtype, args.arch)
            except Exception as error:  # report every failing variant, not only the first
                failures += 1
                print(f"FAIL {label}\n     {type(error).__name__}: {str(error).splitlines()[0][:300]}")
                continue
            ir = compiled.asm["ttgir"]
            print(f"ok   {label}  shared={compiled.metadata.shared}B wgmma={'warp_group_dot ' in ir} "
                  f"async_copy={'async_copy_global_to_local' in ir}")
    failures += not widest_heads_backward_fits(args.dtype, args.arch)
    print(f"{failures} failures")
    return 1 if failures else 0


def widest_heads_backward_fits(dtype: str, arch: int) -> bool:
    """Whether one of the tiles the autotuner keeps for the widest adapter fits shared memory."""
    width = WIDEST_HEADS["H_PAD"] * WIDEST_HEADS["R_PAD"]
    kept = tiling.prune_row_blocks(lambda kw: kw["H_PAD"] * kw["R_PAD"])(tiling.row_pass_configs(), {}, **WIDEST_HEADS)
    limit = SHARED_MEMORY_LIMIT.get(arch)
    flags = dict(HAS_ROUTER=True, ROUTER_ON_LORA=False, HAS_GRAD_PROBS=True, WRITE_D_OMEGA=False)
    fitting = 0
    for config in kept:
        label = f"heads_bwd    width {width} {config.kwargs} warps={config.num_warps} stages={config.num_stages}"
        try:
            shared = compile_kernel("heads_bwd", flags, config, dtype, arch, WIDEST_HEADS).metadata.shared
        except Exception as error:
            print(f"no   {label}\n     {type(error).__name__}: {str(error).splitlines()[0][:300]}")
            continue
        fits = limit is None or shared <= limit
        fitting += fits
        print(f"{'ok  ' if fits else 'no  '} {label}  shared={shared}B (limit {limit}B)")
    if not fitting:
        print(f"FAIL the widest adapter ({width} columns) fits no kept tile on sm_{arch}")
    return fitting > 0


if __name__ == "__main__":
    sys.exit(main())
