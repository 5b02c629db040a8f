"""Seconds per training step and peak memory of HunyuanVideo fine-tuning: HydraLoRA against PEFT LoRA.

One step = forward, rectified-flow MSE, backward, AdamW update, exactly as `ptta train` runs it:
frozen base transformer, adapters on every Linear of the dual- and single-stream blocks
(ptta.config.DEFAULT_TARGET_MODULES), gradient checkpointing, bf16 autocast on the GPU.
Providers:
    hydralora   hydralora.inject, N heads of rank r, per-token router (the paper's setting)
    peft_lora   peft.inject_adapter_in_model(LoraConfig(r, alpha=r)) on the same modules
The full-size model is HunyuanVideo's 13B transformer config with random weights (nothing can be
downloaded; timing and memory do not depend on the values). Text is 256 tokens of 4096 dims.
Rows are appended to benchmarks/results/train_step.csv; `peak` is torch.cuda.max_memory_allocated
on a GPU, and the peak resident set size of the whole process on a CPU (a different measure:
the `memory_kind` column says which).

GPU (targets: hydralora s/step <= 1.05 x peft_lora, peak <= peft_lora + 2%):
    python benchmarks/bench_train_step.py                  # 33 frames at 448x800, or the largest that fits
    python benchmarks/bench_train_step.py --time-budget 200   # 9 frames, then the most frames predicted to
                                                              # fit in the rest of 200 s (benchmarks/device_check.sh)
CPU, tiny model (checks the harness; figures say nothing about the GPU):
    python benchmarks/bench_train_step.py --tiny --device cpu
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from results_csv import append_rows, environment

RESULTS_CSV = Path(__file__).parent / "results" / "train_step.csv"
PROVIDERS = ("hydralora", "peft_lora")
COLUMNS = ("date", "commit", "device", "torch", "triton", "cuda", "model", "provider", "frames", "height", "width",
           "latent_tokens", "text_tokens", "rank", "heads", "mixing", "dtype", "grad_ckpt", "steps",
           "s_per_step_median", "s_per_step_min", "peak_gib", "memory_kind", "trainable_params", "note")
# (frames, height, width) tried in order on the GPU until one fits for every provider
FULL_SIZES = ((33, 448, 800), (17, 448, 800), (9, 448, 800), (9, 256, 448))
TINY_SIZE = (9, 32, 48)
# --time-budget: the first is always measured, then the largest predicted to fit in the time left
BUDGET_SIZES = ((9, 448, 800), (17, 448, 800), (33, 448, 800))
TINY_BUDGET_SIZES = ((5, 32, 48), (9, 32, 48))


def build_transformer(tiny: bool, device: torch.device, dtype: torch.dtype):
    from diffusers import HunyuanVideoTransformer3DModel

    if tiny:
        from ptta.models.tiny_hunyuan_video import make_tiny_pipeline

        return make_tiny_pipeline().transformer.to(device=device, dtype=dtype)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # 13B parameters are made directly in bf16 on the device
    try:
        with torch.device(device):
            return HunyuanVideoTransformer3DModel()  # the defaults are HunyuanVideo's 13B config
    finally:
        torch.set_default_dtype(previous)


def add_adapter(model, provider: str, rank: int, heads: int, mixing: str) -> None:
    from ptta.config import DEFAULT_TARGET_MODULES

    if provider == "hydralora":
        import hydralora

        hydralora.inject(model, hydralora.HydraConfig(r=rank, alpha=rank, num_heads=heads, mixing=mixing,
                                                      target_modules=DEFAULT_TARGET_MODULES))
    else:
        from peft import LoraConfig, inject_adapter_in_model

        model.requires_grad_(False)
        inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=rank, target_modules=DEFAULT_TARGET_MODULES), model)
        # PEFT keeps half-precision adapters as they are; hydralora keeps them in fp32 so that
        # lr 2e-5 updates are not rounded away: compare like with like
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.data = parameter.data.float()


def make_inputs(model, frames: int, height: int, width: int, text_tokens: int, device, generator) -> dict:
    config = model.config
    latent_shape = (1, config.in_channels, (frames - 1) // 4 + 1, height // 8, width // 8)

    def randn(*shape):
        return torch.randn(*shape, generator=generator).to(device)

    return {
        "hidden_states": randn(*latent_shape),
        "timestep": torch.tensor([500.0], device=device),
        "encoder_hidden_states": randn(1, text_tokens, config.text_embed_dim),
        "encoder_attention_mask": torch.ones(1, text_tokens, dtype=torch.long, device=device),
        "pooled_projections": randn(1, config.pooled_projection_dim),
        "guidance": torch.tensor([1000.0], device=device),
        "return_dict": False,
    }


def time_steps(model, inputs: dict, steps: int, warmup: int, device: torch.device, dtype: torch.dtype) -> list[float]:
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=2e-5, betas=(0.9, 0.99), weight_decay=0.01)
    target = torch.randn_like(inputs["hidden_states"])
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    times = []
    for step in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
            if step == warmup:
                # the peak of training steps only: autotuning in the warm-up allocates benchmark buffers
                torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        with autocast:
            prediction = model(**inputs)[0]
        loss = F.mse_loss(prediction.float(), target)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= warmup:
            times.append(time.perf_counter() - started)
    return times


def measure(provider: str, args, size: tuple[int, int, int], device: torch.device, dtype: torch.dtype) -> dict:
    frames, height, width = size
    model = build_transformer(args.tiny, device, dtype)
    add_adapter(model, provider, args.rank, args.heads, args.mixing)
    model.train()
    if args.grad_ckpt:
        model.enable_gradient_checkpointing()
    inputs = make_inputs(model, frames, height, width, args.text_tokens, device, torch.Generator().manual_seed(0))
    times = time_steps(model, inputs, args.steps, args.warmup, device, dtype)
    if device.type == "cuda":
        peak, kind = torch.cuda.max_memory_allocated() / 2**30, "cuda_max_allocated"
    else:
        peak, kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "process_peak_rss"
    patch = model.config.patch_size
    tokens = ((frames - 1) // 4 + 1) * (height // 8 // patch) * (width // 8 // patch)
    return {
        "provider": provider, "frames": frames, "height": height, "width": width, "latent_tokens": tokens,
        "text_tokens": args.text_tokens, "rank": args.rank, "heads": args.heads if provider == "hydralora" else 1,
        "mixing": args.mixing if provider == "hydralora" else "", "dtype": str(dtype).replace("torch.", ""),
        "grad_ckpt": args.grad_ckpt, "steps": args.steps, "s_per_step_median": statistics.median(times),
        "s_per_step_min": min(times), "peak_gib": peak, "memory_kind": kind,
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }


def run_provider_isolated(provider: str, args, size) -> dict | None:
    """Measure in a fresh process, so one provider's allocations never count in the other's peak."""
    command = [sys.executable, __file__, "--child", provider, "--size", "x".join(map(str, size)),
               *_forwarded_arguments(args)]
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        if "OutOfMemoryError" in completed.stderr or "out of memory" in completed.stderr:
            return None
        raise RuntimeError(f"{provider} at {size} failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def latent_positions(size: tuple[int, int, int]) -> int:
    frames, height, width = size
    return ((frames - 1) // 4 + 1) * (height // 8) * (width // 8)


def predicted_seconds(measured: list[tuple[dict, float]], size: tuple[int, int, int], args) -> float:
    """Wall time of measuring every provider at `size`, from (row, wall seconds) measured at a smaller
    size: the timed steps scale with the latent length to the power 1.3 (attention grows faster than
    the linears), the rest (start, model build, autotuning) stays; 20% margin."""
    total = 0.0
    for row, wall in measured:
        steps = (args.warmup + args.steps) * float(row["s_per_step_median"])
        ratio = latent_positions(size) / latent_positions((row["frames"], row["height"], row["width"]))
        total += max(wall - steps, 0.0) + steps * ratio**1.3
    return 1.2 * total


def run_within_budget(args, providers: list[str], device: torch.device) -> None:
    """Measure the smallest budget size, then the largest one predicted to fit in the time left
    (falling back to smaller ones on out-of-memory); the note of each row says how it was chosen."""
    deadline = time.monotonic() + args.time_budget
    first, *larger = TINY_BUDGET_SIZES if args.tiny else BUDGET_SIZES
    measured = []
    for provider in providers:
        started = time.monotonic()
        row = run_provider_isolated(provider, args, first)
        if row is None:
            raise SystemExit(f"out of memory at the smallest budget size {first}")
        measured.append((row, time.monotonic() - started))
    budget_note = f"time budget {args.time_budget:.0f} s"
    write_rows([row for row, _ in measured], args, device, f"{budget_note}: smallest size")
    left = deadline - time.monotonic()
    predictions = {size: predicted_seconds(measured, size, args) for size in larger}
    for size, seconds in predictions.items():
        print(f"{'x'.join(map(str, size))}: predicted {seconds:.0f} s, {left:.0f} s left", file=sys.stderr)
    for size in sorted((s for s in larger if predictions[s] <= left), key=latent_positions, reverse=True):
        rows = [run_provider_isolated(p, args, size) for p in providers]
        if all(rows):
            write_rows(rows, args, device, f"{budget_note}: largest predicted to fit "
                                           f"({predictions[size]:.0f} s of {left:.0f} s left)")
            return
        print(f"out of memory at {size}; trying a smaller size", file=sys.stderr)
    print(f"no larger size fits in the {left:.0f} s left", file=sys.stderr)


def _forwarded_arguments(args) -> list[str]:
    forwarded = ["--device", args.device, "--rank", str(args.rank), "--heads", str(args.heads), "--mixing", args.mixing,
                 "--steps", str(args.steps), "--warmup", str(args.warmup), "--text-tokens", str(args.text_tokens),
                 "--dtype", args.dtype]
    if args.tiny:
        forwarded.append("--tiny")
    if not args.grad_ckpt:
        forwarded.append("--no-grad-ckpt")
    return forwarded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="the embedded tiny model instead of the 13B config")
    parser.add_argument("--size", help="FRAMESxHEIGHTxWIDTH (default: 33x448x800 falling back on OOM; tiny: 9x32x48)")
    parser.add_argument("--providers", default=",".join(PROVIDERS))
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--mixing", default="router", choices=("router", "learned", "fixed"))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--text-tokens", type=int, default=256)
    parser.add_argument("--dtype", default=None, choices=("bfloat16", "float32"),
                        help="default: bfloat16 on cuda, float32 on cpu")
    parser.add_argument("--no-grad-ckpt", dest="grad_ckpt", action="store_false")
    parser.add_argument("--csv", default=str(RESULTS_CSV))
    parser.add_argument("--note", default="")
    parser.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                        help="measure the smallest of " + ", ".join("x".join(map(str, s)) for s in BUDGET_SIZES)
                        + " (tiny: " + ", ".join("x".join(map(str, s)) for s in TINY_BUDGET_SIZES) + "), then the"
                        " largest predicted to fit in the rest of SECONDS; rows for both")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.time_budget is not None and args.size:
        parser.error("--time-budget chooses the sizes itself: give it or --size, not both")
    args.dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)

    if args.child:
        size = tuple(int(v) for v in args.size.split("x"))
        print(json.dumps(measure(args.child, args, size, device, dtype)))
        return

    providers = args.providers.split(",")
    if args.time_budget is not None:
        run_within_budget(args, providers, device)
        return
    sizes = [tuple(int(v) for v in args.size.split("x"))] if args.size else ([TINY_SIZE] if args.tiny else FULL_SIZES)
    for size in sizes:
        rows = [run_provider_isolated(p, args, size) for p in providers]
        if all(rows):
            break
        print(f"out of memory at {size}; trying a smaller size", file=sys.stderr)
    else:
        raise SystemExit("no size fitted for every provider")
    write_rows(rows, args, device)


def write_rows(rows: list[dict], args, device: torch.device, note: str = "") -> None:
    if device.type == "cuda":
        device_name = torch.cuda.get_device_name(device)
    else:
        device_name = f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"
    common = {**environment(device_name), "model": "tiny" if args.tiny else "hunyuanvideo-13b-random",
              "note": "; ".join(n for n in (args.note, note) if n)}
    formatted = []
    for row in rows:
        row = {**row, **common}
        for key in ("s_per_step_median", "s_per_step_min", "peak_gib"):
            row[key] = f"{row[key]:.4f}"
        formatted.append(row)
        print(f"{row['provider']:>10}: {row['s_per_step_median']} s/step, peak {row['peak_gib']} GiB "
              f"({row['memory_kind']}), {row['trainable_params']:,} trainable")
    append_rows(Path(args.csv), COLUMNS, formatted)


if __name__ == "__main__":
    main()
