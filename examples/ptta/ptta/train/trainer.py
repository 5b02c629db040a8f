"""`ptta train`: HydraLoRA (or LoRA) fine-tuning of the HunyuanVideo transformer on cached clips.

One process or many (accelerate / torchrun: DDP, or with `training.fsdp` the frozen base sharded
by FSDP2, see ptta.train.fsdp). The base transformer is frozen (bf16 with
`mixed_precision: bf16`, adapter weights fp32), gradient checkpointing optional, AdamW with a
linear warm-up then a constant learning rate (the paper names no schedule). Each optimiser step
draws its noise and noise levels from a generator seeded by (seed, step, rank), so a resumed run
repeats an uninterrupted one exactly.

Output folder: config.yaml (the resolved config), metrics.jsonl, loss_curve.png, checkpoints/,
adapter/ (the final adapter), lora_diffusers.safetensors (per-layer mixing only: the adapter
collapsed to a plain LoRA for diffusers; `ptta export` writes the formats ComfyUI and others
load), heads.jsonl (the head report per checkpoint), validation/step-N/ (optional samples) and
train_summary.json. Every adapter (and the LoRA) gets a text_encoding.json beside it recording
the cache's prompt length limit and frame rate, which `ptta sample` then encodes prompts with and
writes videos at.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch

from ptta.cache.build import CACHE_INFO_FILE, read_cache
from ptta.config import ConfigError, TrainConfig, save_config
from ptta.models.hunyuan_video import load_transformer, resolve_model_dir
from ptta.train.checkpoint import STATE_FILE, latest_checkpoint, list_checkpoints, load_checkpoint
from ptta.train.heads import caption_head_weights, head_summary, write_caption_heads
from ptta.train.metrics import LOSS_CURVE_FILE, METRICS_FILE, MetricsLog, plot_loss_curve
from ptta.train.validation import encode_validation_prompts, render_validation

ADAPTER_DIR = "adapter"
LORA_EXPORT_FILE = "lora_diffusers.safetensors"
SUMMARY_FILE = "train_summary.json"


class TrainingDivergedError(RuntimeError):
    """The loss or gradient became NaN or infinite."""


@dataclass
class TrainResult:
    output_dir: Path
    adapter_dir: Path
    lora_path: Path | None
    steps: int
    last_loss: float
    model: torch.nn.Module  # the trained transformer (unwrapped), e.g. to compare ranks in tests


def resume_settings(config: TrainConfig) -> dict:
    """The settings a resumed run must share with the checkpoint (not its length, logging or validation)."""
    t = config.training
    return {
        "model": config.model_spec(),
        "seed": config.seed,
        "cache_dir": str(config.cache_path),
        "adapter": config.to_dict()["adapter"],
        "heads": config.to_dict()["heads"],
        "optimizer": config.to_dict()["optimizer"],
        # fsdp too: the optimiser file of a sharded run is keyed by parameter name, not position
        "training": {k: getattr(t, k) for k in ("batch_size", "gradient_accumulation_steps", "mixed_precision",
                                                  "objective", "sigma_sampling", "logit_mean", "logit_std", "shift",
                                                  "guidance", "fsdp")},
    }


def train(config: TrainConfig, resume: str | None = None, progress: bool = True) -> TrainResult:
    """Run (or with `resume` = "latest" or a checkpoint folder, continue) the training in `config`."""
    import hydralora
    from accelerate import DistributedType

    from ptta.train.data import CachedClipReader, epoch_plan, steps_per_epoch
    from ptta.train.fsdp import shard_transformer

    if config.adapter.type == "none":
        raise ConfigError(f"{config.source}: adapter.type: 'none' is the untuned base model, there is nothing to "
                          f"train; sample it with `ptta sample` without --adapter")
    accelerator = make_accelerator(config)
    if accelerator.distributed_type not in (DistributedType.NO, DistributedType.MULTI_CPU, DistributedType.MULTI_GPU):
        # accelerate's FSDP / DeepSpeed wrappers would bypass ptta's sharding and checkpoint code
        raise ConfigError(f"ptta train runs one process, DDP or its own FSDP (training.fsdp: true under a plain "
                          f"multi-process launch), not accelerate's {accelerator.distributed_type.value}; "
                          f"see docs/ptta-guide.md (Several GPUs)")
    if config.training.fsdp and accelerator.num_processes < 2:
        raise ConfigError(f"{config.source}: training.fsdp shards the model over processes, but this run has one; "
                          f"launch several (torchrun / accelerate launch) or set training.fsdp: false")
    output_dir = config.output_path
    checkpoint = _checkpoint_to_resume(output_dir, resume)
    if checkpoint is not None:
        _check_resume_settings(checkpoint, config)
    with accelerator.main_process_first():
        model_dir = resolve_model_dir(config.model_spec())
    clips = read_cache(config.cache_path)
    _check_cache_matches(config, model_dir)

    torch.manual_seed(config.seed)
    base_dtype = torch.bfloat16 if config.training.mixed_precision == "bf16" else torch.float32
    transformer = load_transformer(model_dir, base_dtype)
    transformer.requires_grad_(False)
    if config.training.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    hydralora.inject(transformer, config.hydra_config())
    transformer.train()
    if config.training.fsdp:
        # sharded before the optimiser is built, so it holds the sharded parameters; fully_shard moves
        # each block to the device as it shards it, so the whole base never sits on one GPU
        shard_transformer(transformer)
    params = [p for p in transformer.parameters() if p.requires_grad]
    opt = config.optimizer
    optimizer = torch.optim.AdamW(params, lr=opt.lr, betas=tuple(opt.betas), weight_decay=opt.weight_decay, eps=opt.eps)
    warmup = opt.warmup_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)
    # the scheduler stays outside prepare(): accelerate would step it once per process per step
    if config.training.fsdp:
        # a sharded model must not be wrapped in DDP as well
        model, optimizer = transformer, accelerator.prepare(optimizer)
    else:
        model, optimizer = accelerator.prepare(transformer, optimizer)
    unwrapped = accelerator.unwrap_model(model)

    world = accelerator.num_processes
    t = config.training
    per_epoch = steps_per_epoch(epoch_plan(clips, t.batch_size, config.seed, 0, world), world,
                                t.gradient_accumulation_steps)
    if per_epoch == 0:
        raise ConfigError(f"{config.source}: {len(clips)} cached clips make fewer batches of "
                          f"training.batch_size={t.batch_size} than there are processes ({world})")
    total_steps = min(t.epochs * per_epoch, t.max_steps or math.inf)
    state = {"step": 0, "epoch": 0, "step_in_epoch": 0}
    if checkpoint is not None:
        state = load_checkpoint(checkpoint, accelerator, unwrapped, optimizer, scheduler)
    elif accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, output_dir / "config.yaml")

    loop = _TrainingLoop(config, accelerator, model, unwrapped, optimizer, scheduler, params,
                         CachedClipReader(clips), clips, model_dir, total_steps, progress)
    last_loss = loop.run(state, resumed=checkpoint is not None, last_checkpoint=checkpoint)
    return _finish(config, accelerator, unwrapped, output_dir, state["step"], last_loss)


def make_accelerator(config: TrainConfig):
    """The Accelerator of a run, its process group waiting `training.process_group_timeout_minutes`."""
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs

    # Without cpu=True accelerate ignores torchrun's WORLD_SIZE on a machine without GPUs and runs
    # every process alone; with it, CPU processes form a gloo group (DDP on the CPU). Mixed
    # precision is an autocast in the step rather than an Accelerator setting, because accelerate
    # keeps that setting process-wide and would refuse a second run with another precision.
    # The timeout: while the main process samples validation videos (loading Llama, rendering with
    # the 13B transformer) the others wait at a barrier far longer than NCCL's default 10 minutes.
    timeout = InitProcessGroupKwargs(timeout=timedelta(minutes=config.training.process_group_timeout_minutes))
    return Accelerator(cpu=not torch.cuda.is_available(), kwargs_handlers=[timeout])


def end_distributed() -> None:
    """Destroy the process group a distributed run created; a no-op in a single process.

    Called where a command's run ends (`ptta train`, `ptta ablate`), not inside `train()`, which one
    process may call several times. A gloo group left to interpreter exit can abort a rank with
    "terminate called without an active exception" (exit -6), turning a finished run red.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class _TrainingLoop:
    """The step loop: batches, loss, optimiser, logs, checkpoints, validation."""
    def __init__(self, config, accelerator, model, unwrapped, optimizer, scheduler, params, reader, clips,
                 model_dir, total_steps, progress):
        self.config, self.accelerator, self.model, self.unwrapped = config, accelerator, model, unwrapped
        self.optimizer, self.scheduler, self.params = optimizer, scheduler, params
        self.reader, self.clips, self.model_dir = reader, clips, model_dir
        self.total_steps, self.progress = total_steps, progress
        self.output_dir = config.output_path
        self.validation_embeddings = None

    def run(self, state: dict, resumed: bool, last_checkpoint: Path | None) -> float:
        from tqdm import tqdm

        from ptta.train.checkpoint import save_checkpoint
        from ptta.train.data import epoch_plan, rank_step_groups

        config, acc, t = self.config, self.accelerator, self.config.training
        world, rank = acc.num_processes, acc.process_index
        log = MetricsLog(self.output_dir / METRICS_FILE, state["step"] if resumed else None) if acc.is_main_process else None
        bar = tqdm(total=self.total_steps, initial=state["step"], desc="train", unit="step",
                   disable=not (self.progress and acc.is_main_process))
        last_loss = float("nan")
        while state["step"] < self.total_steps:
            plan = epoch_plan(self.clips, t.batch_size, config.seed, state["epoch"], world)
            groups = rank_step_groups(plan, rank, world, t.gradient_accumulation_steps)
            while state["step_in_epoch"] < len(groups) and state["step"] < self.total_steps:
                started = time.perf_counter()
                loss, balance, tokens, grad_norm, lr = self._step(groups[state["step_in_epoch"]], state["step"])
                if not (math.isfinite(loss) and math.isfinite(grad_norm)):
                    bar.close()
                    kept = f"the last good checkpoint is {last_checkpoint}" if last_checkpoint else "no checkpoint was written yet"
                    raise TrainingDivergedError(
                        f"loss {loss} / grad norm {grad_norm} at step {state['step'] + 1} (epoch {state['epoch']}): "
                        f"training stopped before the update; {kept}. Lower optimizer.lr, check the cached data, "
                        f"then continue with --resume")
                state["step"] += 1
                state["step_in_epoch"] += 1
                last_loss = loss
                elapsed = time.perf_counter() - started
                record = {"step": state["step"], "epoch": state["epoch"], "loss": loss, "balance_loss": balance,
                          "lr": lr, "grad_norm": grad_norm, "step_time": elapsed, "tokens_per_s": tokens / elapsed}
                if log is not None and (state["step"] % t.log_every == 0 or state["step"] == self.total_steps):
                    log.write(record)
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", gnorm=f"{grad_norm:.3f}",
                                s_step=f"{elapsed:.2f}", tok_s=f"{tokens / elapsed:.0f}")
                bar.update()
                if state["step"] % t.checkpoint_every == 0 or state["step"] == self.total_steps:
                    snapshot = {**state, "world_size": world, "settings": resume_settings(config)}
                    last_checkpoint = save_checkpoint(acc, self.unwrapped, self.optimizer, self.scheduler, snapshot,
                                                      self.output_dir, t.keep_checkpoints,
                                                      config.data.max_sequence_length, config.data.fps,
                                                      config.heads if config.heads.from_captions else None)
                if config.validation.every and state["step"] % config.validation.every == 0:
                    self._validate(state["step"])
            if state["step_in_epoch"] >= len(groups):
                state["epoch"] += 1
                state["step_in_epoch"] = 0
        bar.close()
        return last_loss

    def _step(self, micro_batches: list[list[int]], step: int) -> tuple[float, float, float, float, float]:
        """One optimiser step over `micro_batches`; returns (loss, balance loss, tokens, grad norm, lr),
        loss and tokens gathered over all processes."""
        import hydralora
        import torch.nn.functional as F

        from ptta.train.objective import make_noisy_batch

        acc, config, t = self.accelerator, self.config, self.config.training
        generator = torch.Generator().manual_seed(_step_seed(config.seed, step, acc.process_index))
        patch, patch_t = self.unwrapped.config.patch_size, self.unwrapped.config.patch_size_t
        loss_sum = torch.zeros((), device=acc.device)
        balance_sum = torch.zeros((), device=acc.device)
        tokens = 0
        for i, indices in enumerate(micro_batches):
            batch = self.reader.batch(indices, acc.device)
            noisy = make_noisy_batch(batch.latents, t, generator)
            guidance = torch.full((len(indices),), t.guidance * 1000.0, device=acc.device)
            last = i == len(micro_batches) - 1
            with self._gradient_sync(last), self._head_weights(batch.captions):
                with torch.autocast(acc.device.type, dtype=torch.bfloat16, enabled=t.mixed_precision == "bf16"):
                    prediction = self.model(hidden_states=noisy.noisy, timestep=noisy.timestep,
                                            encoder_hidden_states=batch.prompt_embeds,
                                            encoder_attention_mask=batch.prompt_mask,
                                            pooled_projections=batch.pooled, guidance=guidance,
                                            return_dict=False)[0]
                mse = F.mse_loss(prediction.float(), noisy.target)
                balance = hydralora.balance_loss(self.unwrapped).float()
                acc.backward((mse + balance) / len(micro_batches))
            loss_sum += mse.detach() / len(micro_batches)
            balance_sum += balance.detach() / len(micro_batches)
            _, _, frames, height, width = batch.latents.shape
            tokens += len(indices) * (frames // patch_t) * (height // patch) * (width // patch)
        max_norm = config.optimizer.max_grad_norm
        grad_norm = acc.clip_grad_norm_(self.params, max_norm if max_norm > 0 else float("inf"))
        # loss and balance averaged over processes, tokens summed
        totals = acc.reduce(torch.stack([loss_sum, balance_sum, torch.tensor(float(tokens), device=acc.device)]),
                            reduction="sum").tolist()
        loss, balance, tokens = totals[0] / acc.num_processes, totals[1] / acc.num_processes, totals[2]
        grad_norm = float(grad_norm)
        lr = self.scheduler.get_last_lr()[0]
        if math.isfinite(loss) and math.isfinite(grad_norm):
            self.optimizer.step()
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss, balance, tokens, grad_norm, lr

    def _gradient_sync(self, enabled: bool):
        """Gradients are reduced over processes only on the last micro-batch of a step."""
        from ptta.train.fsdp import gradient_sync

        if self.config.training.fsdp:
            return gradient_sync(self.model, enabled)
        return nullcontext() if enabled else self.accelerator.no_sync(self.model)

    def _head_weights(self, captions: list[str]):
        """Per-sample head weights from the captions (`heads.from_captions`), else nothing."""
        import hydralora

        heads = self.config.heads
        if not heads.from_captions:
            return nullcontext()
        weights = torch.tensor([caption_head_weights(c, heads.names, heads.tags) for c in captions],
                               dtype=torch.float32, device=self.accelerator.device)
        return hydralora.head_weights(self.unwrapped, weights)

    def _validate(self, step: int) -> None:

        acc = self.accelerator
        if acc.is_main_process:
            if self.validation_embeddings is None:
                self.validation_embeddings = encode_validation_prompts(self.config, self.model_dir, acc.device)
            self.unwrapped.eval()
            render_validation(self.config, self.model_dir, self.unwrapped, self.validation_embeddings, step, acc.device)
            self.unwrapped.train()
        acc.wait_for_everyone()


def _finish(config: TrainConfig, accelerator, unwrapped, output_dir: Path, steps: int, last_loss: float) -> TrainResult:
    """Final adapter, diffusers LoRA export (per-layer mixing only), loss curve and summary."""
    import hydralora

    from ptta.models.text_encoders import write_text_encoding
    from ptta.train.fsdp import full_adapter

    adapter_dir = output_dir / ADAPTER_DIR
    lora_path = output_dir / LORA_EXPORT_FILE if hydralora.adapter_config(unwrapped).per_layer_mixing else None
    with full_adapter(unwrapped):
        if accelerator.is_main_process:
            hydralora.save_adapter(unwrapped, adapter_dir)
            write_text_encoding(adapter_dir, config.data.max_sequence_length, config.data.fps)
            if config.heads.from_captions:
                write_caption_heads(adapter_dir, config.heads.names, config.heads.tags)
            heads = head_summary(unwrapped)
            if lora_path is not None:
                hydralora.export_lora(unwrapped, lora_path, format="diffusers", prefix="transformer")
                write_text_encoding(lora_path.parent, config.data.max_sequence_length, config.data.fps)
    if accelerator.is_main_process:
        plot_loss_curve(output_dir / METRICS_FILE, output_dir / LOSS_CURVE_FILE,
                        title=f"{config.adapter.type} training loss")
        summary = {"steps": steps, "last_loss": last_loss, "adapter": str(adapter_dir),
                   "lora_diffusers": str(lora_path) if lora_path else None,
                   "parameters": hydralora.count_parameters(unwrapped), "processes": accelerator.num_processes,
                   "heads": heads}
        (output_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
    accelerator.wait_for_everyone()
    return TrainResult(output_dir, adapter_dir, lora_path, steps, last_loss, unwrapped)


def _checkpoint_to_resume(output_dir: Path, resume: str | None) -> Path | None:
    if resume is None:
        if list_checkpoints(output_dir):
            raise ConfigError(f"{output_dir} already holds checkpoints of a run; pass --resume to continue it or set "
                              f"another output_dir (nothing was overwritten)")
        return None
    if resume == "latest":
        found = latest_checkpoint(output_dir)
        if found is None:
            raise ConfigError(f"--resume: {output_dir} holds no checkpoint to resume from")
        return found
    path = Path(resume)
    if not path.is_dir():
        raise ConfigError(f"--resume {path}: no such checkpoint folder")
    return path


def _check_cache_matches(config: TrainConfig, model_dir: Path) -> None:
    """The cache must come from this model, prompt length limit and frame rate (which the adapter
    records for sampling, so they have to be the ones the cached embeddings and latents were made
    with)."""

    info = json.loads((config.cache_path / CACHE_INFO_FILE).read_text())
    if info["model"] != str(model_dir.resolve()):
        raise ConfigError(f"{config.source}: the cache in {config.cache_path} was made with model {info['model']}, "
                          f"but model is {model_dir}; latents and embeddings of one model do not fit another")
    if info["max_sequence_length"] != config.data.max_sequence_length:
        raise ConfigError(f"{config.source}: data.max_sequence_length is {config.data.max_sequence_length}, but the "
                          f"cache in {config.cache_path} was made with {info['max_sequence_length']}; set it back or "
                          f"rebuild the cache (ptta cache --overwrite)")
    # format-1 caches record no fps: they were not resampled, so there is nothing to compare
    if "fps" in info and info["fps"] != config.data.fps:
        raise ConfigError(f"{config.source}: data.fps is {config.data.fps:g}, but the cache in {config.cache_path} "
                          f"was resampled to {info['fps']:g} fps; set it back or rebuild the cache "
                          f"(ptta cache --overwrite)")


def _check_resume_settings(checkpoint: Path, config: TrainConfig) -> None:
    """Refuse, before loading anything, a checkpoint written with settings that must not change."""
    state_path = checkpoint / STATE_FILE
    if not state_path.is_file():
        raise ConfigError(f"--resume {checkpoint}: not a finished checkpoint (no {STATE_FILE})")
    saved, current = json.loads(state_path.read_text()).get("settings", {}), resume_settings(config)
    changed = sorted(k for k in current if saved.get(k) != current[k])
    if changed:
        raise ConfigError(f"{config.source}: cannot resume from {checkpoint}: the config changed {changed} since it "
                          f"was written (only length, logging, checkpointing and validation may change)")


def _step_seed(seed: int, step: int, rank: int) -> int:
    """A distinct, reproducible generator seed per (run seed, optimiser step, process)."""
    return ((seed * 1_000_003 + step) * 1_009 + rank) % (2 ** 63)
