"""The training config: one YAML file read by `ptta cache` and `ptta train`, validated up front.

Every section is a dataclass; unknown keys, wrong types and impossible values raise ConfigError
naming the file and the key. Relative paths are resolved against the config file's folder, so a
config and its data can move together. Defaults are the paper's (section 4.1).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ptta.models.hunyuan_video import check_frame_count, check_hunyuan_video_dir, check_resolution
from ptta.torch_runtime import DTYPES

# Every nn.Linear of the dual- and single-stream blocks of the HunyuanVideo transformer (the paper:
# "the linear layers of the Transformer backbone"): attention projections, modulation (norm*.linear)
# and MLPs. Embedders, token refiner and output head stay frozen. The regex names Linear modules
# only, because hydralora refuses a pattern that matches their containers.
DEFAULT_TARGET_MODULES = (
    r"(single_)?transformer_blocks\.\d+\."
    r"(attn\.(to_q|to_k|to_v|add_q_proj|add_k_proj|add_v_proj|to_out\.0|to_add_out)"
    r"|(norm1|norm1_context|norm)\.linear|(ff|ff_context)\.net\.(0\.proj|2)|proj_mlp|proj_out)"
)
ADAPTER_TYPES = ("hydralora", "lora", "none")
MIXED_PRECISIONS = ("bf16", "no")
OBJECTIVES = ("flow", "epsilon")
SIGMA_SAMPLINGS = ("logit_normal", "shift", "uniform")
DEFAULT_HEAD_NAMES = ["male", "female", "object", "background"]
# Caption words that point a clip at a sub-task head. Matching is on whole lower-case words.
DEFAULT_HEAD_TAGS = {
    "male": ["boy", "boys", "man", "men", "male", "he", "his", "him", "guy", "father", "king", "prince",
             "gentleman", "husband", "brother", "son", "grandfather"],
    "female": ["girl", "girls", "woman", "women", "female", "she", "her", "hers", "lady", "mother", "queen",
               "princess", "wife", "sister", "daughter", "grandmother"],
    "object": ["object", "objects", "ball", "car", "book", "books", "sword", "robot", "cup", "box", "shape",
               "shapes", "circle", "square", "triangle", "toy", "machine", "vehicle", "train", "boat", "ship"],
    "background": ["background", "scenery", "landscape", "sky", "forest", "city", "street", "room", "field",
                   "mountain", "mountains", "sea", "ocean", "river", "meadow", "clouds", "sunset", "night"],
}


class ConfigError(ValueError):
    """The config file holds a key or value the pipeline cannot use."""


@dataclass
class DataConfig:
    """What to cache and where: a curation manifest, frame-count and resolution buckets."""

    manifest: str = "curated/manifest.jsonl"
    cache_dir: str = "cache"
    frame_buckets: list[int] = field(default_factory=lambda: [33, 65, 97])
    # (height, width); each divisible by 16. 448x800 is the paper's 450x800 made divisible.
    resolution_buckets: list[list[int]] = field(default_factory=lambda: [[448, 800], [480, 848], [800, 448]])
    shard_size: int = 64
    # longest Llama prompt (tokens after the template); HunyuanVideo uses 256
    max_sequence_length: int = 256
    # clips are resampled to this frame rate (nearest source frame), the rate HunyuanVideo was trained at,
    # so motion speed is learnt right whatever the source's rate
    fps: float = 24.0


@dataclass
class AdapterConfig:
    """Which adapter to train. `lora` is the paper's LoRA baseline: one head of the same rank."""

    type: str = "hydralora"
    r: int = 32
    alpha: float = 32.0
    num_heads: int = 4
    mixing: str = "router"
    router_input: str = "x"
    router_temperature: float = 1.0
    balance_loss_weight: float = 0.0
    fixed_weights: list[float] | None = None
    dropout: float = 0.0
    init_b: str = "zero"
    init_b_std: float = 1e-4
    target_modules: str | list[str] = DEFAULT_TARGET_MODULES
    exclude_modules: str | list[str] | None = None


@dataclass
class HeadsConfig:
    """The paper's sub-task heads: each clip's caption words set its head weights during training."""

    from_captions: bool = False
    names: list[str] = field(default_factory=lambda: list(DEFAULT_HEAD_NAMES))
    tags: dict[str, list[str]] = field(default_factory=lambda: {k: list(v) for k, v in DEFAULT_HEAD_TAGS.items()})


@dataclass
class OptimizerConfig:
    """AdamW as in the paper (lr 2e-5, betas 0.9/0.99, weight decay 0.01), constant after warm-up."""

    lr: float = 2e-5
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    weight_decay: float = 0.01
    eps: float = 1e-8
    warmup_steps: int = 0
    max_grad_norm: float = 1.0


@dataclass
class TrainingConfig:
    """The loop: length, batching, precision, objective, checkpoints and logs."""

    epochs: int = 2
    max_steps: int | None = None
    batch_size: int = 1
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "bf16"
    gradient_checkpointing: bool = True
    # shard the frozen base over the processes (FSDP2) instead of a whole copy per process (DDP)
    fsdp: bool = False
    objective: str = "flow"
    sigma_sampling: str = "logit_normal"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    shift: float = 5.0
    # embedded guidance the transformer is conditioned on while training (x1000 inside)
    guidance: float = 1.0
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 1
    # how long a process waits for the others (e.g. while the main process samples validation videos)
    # before the distributed run is aborted; torch's NCCL default of 10 minutes is too short for that
    process_group_timeout_minutes: float = 120.0


@dataclass
class ValidationConfig:
    """Sample videos every `every` optimiser steps (0 = never) with these prompts."""

    every: int = 0
    prompts: list[str] = field(default_factory=list)
    steps: int = 30
    guidance: float = 6.0
    flow_shift: float = 7.0
    height: int = 448
    width: int = 800
    frames: int = 33
    seed: int = 0


@dataclass
class TrainConfig:
    """A whole `ptta train` run. `model` is a diffusers HunyuanVideo directory or "tiny"."""

    model: str = "tiny"
    # "auto": float16 on a GPU, float32 on a CPU (see ptta.models.hunyuan_video.resolve_vae_dtype)
    vae_dtype: str = "auto"
    output_dir: str = "runs/ptta"
    seed: int = 42
    data: DataConfig = field(default_factory=DataConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    heads: HeadsConfig = field(default_factory=HeadsConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    # where the file came from, for error messages and relative paths (not a YAML key)
    source: str = field(default="<dict>", repr=False, compare=False)
    base_dir: str = field(default=".", repr=False, compare=False)

    def resolve(self, path: str) -> Path:
        """A config path made absolute against the config file's folder."""
        candidate = Path(path).expanduser()
        return candidate if candidate.is_absolute() else (Path(self.base_dir) / candidate).resolve()

    @property
    def output_path(self) -> Path:
        return self.resolve(self.output_dir)

    @property
    def cache_path(self) -> Path:
        return self.resolve(self.data.cache_dir)

    @property
    def manifest_path(self) -> Path:
        return self.resolve(self.data.manifest)

    def model_spec(self) -> str:
        """"tiny", or the model directory as an absolute path."""
        return self.model if self.model == "tiny" else str(self.resolve(self.model))

    def hydra_config(self):
        """The hydralora.HydraConfig of the adapter (None for `type: none`)."""
        import hydralora

        a = self.adapter
        if a.type == "none":
            return None
        # every adapter field but `type` is a HydraConfig field of the same name and meaning
        fields = {f.name: getattr(a, f.name) for f in dataclasses.fields(a) if f.name != "type"}
        if a.type == "lora":
            fields.update(num_heads=1, mixing="fixed", balance_loss_weight=0.0, fixed_weights=None)
        return hydralora.HydraConfig(**fields)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("source")
        data.pop("base_dir")
        return data


def load_config(path: str | Path) -> TrainConfig:
    """Read and validate a YAML config file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    return config_from_dict(data or {}, source=str(path), base_dir=str(path.resolve().parent))


def config_from_dict(data: dict[str, Any], source: str = "<dict>", base_dir: str = ".") -> TrainConfig:
    """Build and validate a TrainConfig from plain data (as YAML gives it)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections, got {type(data).__name__}")
    config = _build(TrainConfig, data, source, prefix="")
    config.source, config.base_dir = source, base_dir
    validate(config)
    return config


def save_config(config: TrainConfig, path: str | Path) -> Path:
    """Write the config as YAML with every path made absolute (so the copy works from anywhere)."""
    import yaml

    data = config.to_dict()
    data["model"] = config.model_spec()
    data["output_dir"] = str(config.output_path)
    data["data"]["manifest"] = str(config.manifest_path)
    data["data"]["cache_dir"] = str(config.cache_path)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def check_model_dir(config: TrainConfig) -> None:
    """ConfigError unless `model` is "tiny" or a text-to-video HunyuanVideo pipeline directory."""

    if config.model == "tiny":
        return
    directory = config.resolve(config.model)
    if not directory.is_dir():
        raise ConfigError(
            f"{config.source}: model: {directory} does not exist; give a local diffusers HunyuanVideo "
            f"directory or 'tiny' for the embedded tiny model"
        )
    try:
        check_hunyuan_video_dir(directory)
    except (FileNotFoundError, ValueError) as exc:
        raise ConfigError(f"{config.source}: model: {exc}") from exc


def validate(config: TrainConfig) -> None:
    """Check values the types alone do not rule out."""

    def fail(key: str, message: str) -> None:
        raise ConfigError(f"{config.source}: {key}: {message}")

    def choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
        if value not in allowed:
            fail(key, f"must be one of {list(allowed)}, got {value!r}")

    def positive(key: str, value: float, allow_zero: bool = False) -> None:
        if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
            fail(key, f"must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")

    check_model_dir(config)
    choice("vae_dtype", config.vae_dtype, DTYPES)
    data, adapter, heads, opt, train, val = (config.data, config.adapter, config.heads, config.optimizer,
                                             config.training, config.validation)
    if not data.frame_buckets:
        fail("data.frame_buckets", "must list at least one frame count")
    for frames in data.frame_buckets:
        try:
            check_frame_count(frames)
        except ValueError as exc:
            fail("data.frame_buckets", str(exc))
    if not data.resolution_buckets:
        fail("data.resolution_buckets", "must list at least one [height, width]")
    for size in data.resolution_buckets:
        if len(size) != 2:
            fail("data.resolution_buckets", f"each entry is [height, width], got {size!r}")
        try:
            check_resolution(*size)
        except ValueError as exc:
            fail("data.resolution_buckets", str(exc))
    positive("data.shard_size", data.shard_size)
    positive("data.max_sequence_length", data.max_sequence_length)
    positive("data.fps", data.fps)

    choice("adapter.type", adapter.type, ADAPTER_TYPES)
    if adapter.type != "none":
        try:
            config.hydra_config()
        except ValueError as exc:
            fail("adapter", str(exc))
    if heads.from_captions:
        if adapter.type != "hydralora":
            fail("heads.from_captions", f"needs adapter.type: hydralora (got {adapter.type!r})")
        if adapter.mixing != "fixed":
            fail("heads.from_captions", "the caption weights replace omega in every training forward, so a router "
                 "or learned weights would never be trained; set adapter.mixing: fixed")
        if len(heads.names) != adapter.num_heads:
            fail("heads.names", f"lists {len(heads.names)} heads but adapter.num_heads is {adapter.num_heads}")
        unknown = sorted(set(heads.tags) - set(heads.names))
        if unknown:
            fail("heads.tags", f"has tags for heads {unknown} that are not in heads.names {heads.names}")

    positive("optimizer.lr", opt.lr)
    if len(opt.betas) != 2 or not all(0 <= b < 1 for b in opt.betas):
        fail("optimizer.betas", f"must be two numbers in [0, 1), got {opt.betas!r}")
    positive("optimizer.weight_decay", opt.weight_decay, allow_zero=True)
    positive("optimizer.eps", opt.eps)
    positive("optimizer.warmup_steps", opt.warmup_steps, allow_zero=True)
    positive("optimizer.max_grad_norm", opt.max_grad_norm, allow_zero=True)

    positive("training.epochs", train.epochs)
    if train.max_steps is not None:
        positive("training.max_steps", train.max_steps)
    positive("training.batch_size", train.batch_size)
    positive("training.gradient_accumulation_steps", train.gradient_accumulation_steps)
    choice("training.mixed_precision", train.mixed_precision, MIXED_PRECISIONS)
    choice("training.objective", train.objective, OBJECTIVES)
    choice("training.sigma_sampling", train.sigma_sampling, SIGMA_SAMPLINGS)
    positive("training.logit_std", train.logit_std)
    positive("training.shift", train.shift)
    positive("training.guidance", train.guidance, allow_zero=True)
    positive("training.checkpoint_every", train.checkpoint_every)
    positive("training.keep_checkpoints", train.keep_checkpoints)
    positive("training.log_every", train.log_every)
    positive("training.process_group_timeout_minutes", train.process_group_timeout_minutes)

    positive("validation.every", val.every, allow_zero=True)
    if val.every and not val.prompts:
        fail("validation.prompts", "validation.every is set but no prompts are given")
    if val.every and train.fsdp:
        fail("validation.every", "validation samples on the main process alone, which a transformer sharded by "
             "training.fsdp cannot do; sample the checkpoints with `ptta sample --adapter` instead")
    positive("validation.steps", val.steps)
    try:
        check_resolution(val.height, val.width)
        check_frame_count(val.frames)
    except ValueError as exc:
        fail("validation", str(exc))


def _build(cls: type, data: Any, source: str, prefix: str):
    """Instantiate dataclass `cls` from a mapping, checking keys and value types recursively."""
    where = prefix.rstrip(".") or "the top level"
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {where}: expected a mapping, got {type(data).__name__} {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.repr}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {[prefix + k for k in unknown]}; known keys in {where}: "
                          f"{sorted(known)}")
    values = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            values[key] = _build(hint, value or {}, source, f"{prefix}{key}.")
        else:
            values[key] = _coerce(value, hint, source, prefix + key)
    return cls(**values)


def _coerce(value: Any, hint: Any, source: str, key: str) -> Any:
    """`value` checked against a type hint (int is accepted for float; bool is not an int)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        for option in args:
            if option is type(None):
                if value is None:
                    return None
                continue
            try:
                return _coerce(value, option, source, key)
            except ConfigError:
                pass
        raise ConfigError(f"{source}: {key}: expected {_type_name(hint)}, got {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{source}: {key}: expected a list ({_type_name(hint)}), got {value!r}")
        return [_coerce(v, args[0], source, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key}: expected a mapping ({_type_name(hint)}), got {value!r}")
        return {_coerce(k, args[0], source, key): _coerce(v, args[1], source, f"{key}.{k}") for k, v in value.items()}
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        # YAML 1.1 reads `2e-5` (no dot) as a string; accept it as the number it obviously is
        try:
            return float(value)
        except ValueError:
            pass
    if hint in (int, str, bool) and isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    raise ConfigError(f"{source}: {key}: expected {_type_name(hint)}, got {value!r}")


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
