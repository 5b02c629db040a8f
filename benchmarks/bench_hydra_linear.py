"""Time and memory of one HydraLoRA linear against its floor and its alternatives; rows to a CSV.

Providers (all with a frozen bf16 base nn.Linear with bias, x requiring grad as inside a model):
    base                 the frozen nn.Linear alone: the floor
    peft_lora            PEFT LoRA (one adapter, r as given) on that linear
    naive_hydra          the official HydraLoRA loop: A x recomputed per head, per-head B, per-head add
                         (its only mode is a router on x: run for --mixing router only)
    torch_hydra          hydralora's PyTorch reference (A x once, heads as one rank N*r adapter)
    triton_hydra         hydralora's Triton kernels, base GEMM fused (HYDRALORA_BASE_GEMM=triton)
    triton_hydra_cublas  the same kernels with cuBLAS computing x W^T and dy W (HYDRALORA_BASE_GEMM=cublas)
Modes: fwd, bwd (backward of a retained graph), fwd+bwd. Columns: median and 20/80% quantiles in
ms (triton.testing.do_bench), peak memory of one fwd+bwd above what was allocated before it (the
gradients of x and the adapter start unallocated, as after zero_grad), and the memory a forward
keeps for the backward beyond its own outputs ("saved").

GPU (the numbers the docs cite):
    python benchmarks/bench_hydra_linear.py                      # the full sweep of issue 3
    python benchmarks/bench_hydra_linear.py --shapes 3072x3072 --tokens 16384 --heads 4   # the target
CPU smoke run of the harness (tiny shapes, wall-clock timing; needs an explicit --csv so that CPU
rows never land in the GPU results file; triton providers only under TRITON_INTERPRET=1):
    python benchmarks/bench_hydra_linear.py --device cpu --quick --csv /tmp/hydra_cpu.csv
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from results_csv import append_rows, environment

from hydralora.functional import hydra_linear

RESULTS_CSV = Path(__file__).parent / "results" / "hydra_linear.csv"
PROVIDERS = ("base", "peft_lora", "naive_hydra", "torch_hydra", "triton_hydra", "triton_hydra_cublas")
MODES = ("fwd", "bwd", "fwd+bwd")
MIXINGS = ("router", "router_lora", "per_layer")
HUNYUAN_SHAPES = ("3072x3072", "3072x12288", "12288x3072")  # in_features x out_features
COLUMNS = ("date", "commit", "device", "torch", "triton", "cuda", "provider", "mode", "tokens", "in_features",
           "out_features", "rank", "heads", "mixing", "dtype", "ms_median", "ms_p20", "ms_p80", "peak_mb", "saved_mb")


class NaiveHydraLinear(nn.Module):
    """The official HydraLoRA forward (Clin0212/HydraLoRA, peft/tuners/lora.py), as users run it today."""

    def __init__(self, base: nn.Linear, rank: int, num_heads: int, scale: float):
        super().__init__()
        self.base, self.scale = base, scale
        self.lora_A = nn.Linear(base.in_features, rank, bias=False)
        self.lora_B = nn.ModuleList(nn.Linear(rank, base.out_features, bias=False) for _ in range(num_heads))
        self.lora_route = nn.Linear(base.in_features, num_heads, bias=False)

    def forward(self, x):
        result = self.base(x)
        route_weight = F.softmax(self.lora_route(x).float(), dim=-1).to(x.dtype)
        for i, lora_B in enumerate(self.lora_B):
            result = result + lora_B(self.lora_A(x)) * self.scale * route_weight[..., i : i + 1]
        return result


class HydraFunctional(nn.Module):
    """hydralora's functional op with its own parameters, on one backend."""

    def __init__(self, base: nn.Linear, rank: int, num_heads: int, scale: float, mixing: str, backend: str):
        super().__init__()
        self.base, self.scale, self.mixing, self.backend = base, scale, mixing, backend
        k, d = base.in_features, base.out_features
        self.lora_A = nn.Parameter(torch.randn(rank, k) / k**0.5)
        self.lora_B = nn.Parameter(torch.randn(num_heads, d, rank) * 0.01)  # nonzero: every gradient is live
        if mixing == "per_layer":
            self.head_weights = nn.Parameter(torch.full((num_heads,), 1.0 / num_heads))
        else:
            self.router = nn.Parameter(torch.randn(num_heads, rank if mixing == "router_lora" else k) * 0.01)

    def forward(self, x):
        per_layer = self.mixing == "per_layer"
        y, _ = hydra_linear(
            x, self.base.weight, self.base.bias, self.lora_A, self.lora_B, self.scale,
            head_weights=self.head_weights if per_layer else None, router_weight=None if per_layer else self.router,
            router_on_lora=self.mixing == "router_lora", backend=self.backend,
        )
        return y


def build_layer(provider: str, in_features: int, out_features: int, rank: int, num_heads: int, mixing: str,
                dtype: torch.dtype, device: str) -> nn.Module:
    base = nn.Linear(in_features, out_features, bias=True).requires_grad_(False)
    scale = 1.0  # alpha = r, as PTTA
    if provider == "base":
        layer = base
    elif provider == "peft_lora":
        from peft import LoraConfig, inject_adapter_in_model

        wrapper = nn.Module()
        wrapper.proj = base
        inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=rank, target_modules=["proj"]), wrapper)
        layer = wrapper.proj
    elif provider == "naive_hydra":
        layer = NaiveHydraLinear(base, rank, num_heads, scale)
    else:
        backend = "torch" if provider == "torch_hydra" else "triton"
        layer = HydraFunctional(base, rank, num_heads, scale, mixing, backend)
    return layer.to(device=device, dtype=dtype)


def time_ms(fn, device: str, quick: bool, grad_to_none, cpu_repeats: int | None = None) -> tuple[float, float, float]:
    """(median, 20%, 80%) of fn's run time in ms."""
    if device == "cuda":
        import triton.testing

        rep = 20 if quick else 100
        return tuple(triton.testing.do_bench(fn, quantiles=[0.5, 0.2, 0.8], rep=rep, grad_to_none=grad_to_none))
    fn()  # warm-up (and, under the interpreter, any first-call work)
    times = []
    for _ in range(cpu_repeats or (3 if quick else 10)):
        for tensor in grad_to_none:
            tensor.grad = None
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    return statistics.median(times), times[len(times) // 5], times[(4 * len(times)) // 5]


def memory_mb(layer: nn.Module, x: torch.Tensor, dy: torch.Tensor, device: str) -> tuple[float, float]:
    """(peak above the start during one fwd+bwd, memory a forward keeps beyond its output), in MiB."""
    if device != "cuda":
        return float("nan"), float("nan")
    # The warm-up's gradients would be accumulated into instead of allocated, hiding their memory.
    for tensor in (x, *layer.parameters()):
        tensor.grad = None
    torch.cuda.synchronize()
    start = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    y = layer(x)
    saved = torch.cuda.memory_allocated() - start - y.numel() * y.element_size()
    y.backward(dy)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - start
    del y
    return peak / 2**20, saved / 2**20


def measure(mode: str, layer: nn.Module, x: torch.Tensor, dy: torch.Tensor, device: str,
            quick: bool, cpu_repeats: int | None = None) -> tuple[float, float, float]:
    trainable = [x, *(p for p in layer.parameters() if p.requires_grad)]
    if mode == "fwd":
        return time_ms(lambda: layer(x), device, quick, trainable, cpu_repeats)
    if mode == "bwd":
        y = layer(x)
        return time_ms(lambda: y.backward(dy, retain_graph=True), device, quick, trainable, cpu_repeats)
    return time_ms(lambda: layer(x).backward(dy), device, quick, trainable, cpu_repeats)


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    interpret = os.environ.get("TRITON_INTERPRET", "0")
    return f"cpu ({platform.processor() or platform.machine()}, TRITON_INTERPRET={interpret})"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions; on CPU also tiny shapes")
    parser.add_argument("--cpu-repeats", type=int, default=None,
                        help="CPU: timed runs per mode after one warm-up (default 3 with --quick, else 10)")
    parser.add_argument("--csv", type=Path, default=None, help=f"output CSV (default {RESULTS_CSV}, GPU only)")
    parser.add_argument("--providers", nargs="+", choices=PROVIDERS, default=list(PROVIDERS))
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--shapes", nargs="+", default=None, help="in x out, e.g. 3072x12288")
    parser.add_argument("--tokens", nargs="+", type=int, default=None, help="M, the flattened token count")
    parser.add_argument("--heads", nargs="+", type=int, default=None)
    parser.add_argument("--rank", type=int, default=None)
    parser.add_argument("--mixing", choices=MIXINGS, default="router")
    parser.add_argument("--dtype", choices=("bfloat16", "float16", "float32"), default=None)
    args = parser.parse_args(argv)
    cpu = args.device == "cpu"
    if cpu and args.csv is None:
        parser.error("--device cpu needs an explicit --csv: CPU rows never go to the GPU results file")
    if not cpu and not torch.cuda.is_available():
        parser.error("no CUDA device: the benchmark needs a GPU (use --device cpu --quick --csv PATH for a smoke run)")
    tiny = cpu and args.quick
    args.shapes = args.shapes or (["64x96"] if tiny else list(HUNYUAN_SHAPES))
    args.tokens = args.tokens or ([48] if tiny else [4096, 16384, 65536])
    args.heads = args.heads or ([1, 3] if tiny else [1, 2, 4, 8, 12])
    args.rank = args.rank or (8 if tiny else 32)
    args.dtype = getattr(torch, args.dtype or ("float32" if cpu else "bfloat16"))
    args.csv = args.csv or RESULTS_CSV
    return args


@contextlib.contextmanager
def base_gemm_for(provider: str):
    """The triton providers pin HYDRALORA_BASE_GEMM; whatever the caller had is restored after."""
    previous = os.environ.get("HYDRALORA_BASE_GEMM")
    if provider.startswith("triton"):
        os.environ["HYDRALORA_BASE_GEMM"] = "cublas" if provider == "triton_hydra_cublas" else "triton"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("HYDRALORA_BASE_GEMM", None)
        else:
            os.environ["HYDRALORA_BASE_GEMM"] = previous


def bench_layer(args, env: dict, provider: str, in_features: int, out_features: int, tokens: int,
                heads: int) -> list[dict]:
    torch.manual_seed(0)
    layer = build_layer(provider, in_features, out_features, args.rank, heads, args.mixing, args.dtype, args.device)
    x = torch.randn(tokens, in_features, device=args.device, dtype=args.dtype, requires_grad=True)
    dy = torch.randn(tokens, out_features, device=args.device, dtype=args.dtype)
    rows = []
    with base_gemm_for(provider):
        layer(x).backward(dy)  # compile and autotune before anything is measured
        peak_mb, saved_mb = memory_mb(layer, x, dy, args.device)
        for mode in args.modes:
            median, p20, p80 = measure(mode, layer, x, dy, args.device, args.quick, args.cpu_repeats)
            rows.append({
                **env, "provider": provider, "mode": mode, "tokens": tokens, "in_features": in_features,
                "out_features": out_features, "rank": args.rank, "heads": heads, "mixing": args.mixing,
                "dtype": str(args.dtype).removeprefix("torch."), "ms_median": f"{median:.4f}",
                "ms_p20": f"{p20:.4f}", "ms_p80": f"{p80:.4f}", "peak_mb": f"{peak_mb:.1f}",
                "saved_mb": f"{saved_mb:.1f}",
            })
            print(f"{in_features}x{out_features} M={tokens:<6} N={heads:<3} {provider:<20} {mode:<8} {median:9.3f} ms"
                  f"  peak {peak_mb:9.1f} MiB  saved {saved_mb:8.1f} MiB", flush=True)
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    providers = list(args.providers)
    if args.mixing != "router" and "naive_hydra" in providers:
        providers.remove("naive_hydra")
        print(f"skipping naive_hydra: the official loop has only a router on x, not {args.mixing}", file=sys.stderr)
    if args.device == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        dropped = [p for p in providers if p.startswith("triton")]
        providers = [p for p in providers if not p.startswith("triton")]
        if dropped:
            print(f"skipping {dropped}: Triton on CPU needs TRITON_INTERPRET=1", file=sys.stderr)
    env = environment(device_name(args.device))
    rows = []
    for shape in args.shapes:
        in_features, out_features = (int(n) for n in shape.split("x"))
        for tokens in args.tokens:
            for heads in args.heads:
                for provider in providers:
                    if provider in ("base", "peft_lora") and heads != args.heads[0]:
                        continue  # neither depends on the head count
                    layer_rows = bench_layer(args, env, provider, in_features, out_features, tokens, heads)
                    append_rows(args.csv, COLUMNS, layer_rows)  # as we go: a sweep cut short keeps what it measured
                    rows += layer_rows
    print(f"appended {len(rows)} rows to {args.csv}")
    return rows


if __name__ == "__main__":
    main()
