"""Finding and loading a HunyuanVideo model: a local diffusers directory or the embedded tiny one.

A model directory is what `HunyuanVideoPipeline.save_pretrained` writes (model_index.json and the
folders transformer/, vae/, text_encoder/, text_encoder_2/, tokenizer/, tokenizer_2/, scheduler/),
e.g. a local copy of hunyuanvideo-community/HunyuanVideo. The spec "tiny" means the embedded tiny
model, created on first use under $PTTA_HOME (default ~/.cache/ptta) and reused afterwards.
Nothing is ever downloaded: every load passes local_files_only.

Component dtypes on a GPU follow HunyuanVideo's reference setup: transformer bf16, VAE fp16, and
the text encoders bf16 wherever prompts are encoded (cache, validation, sampling), so training and
sampling condition the transformer on the same embeddings. On a CPU everything runs in fp32.

Loading is quiet: diffusers' and transformers' own "Loading pipeline components" / "Loading
weights" bars are switched off (the commands keep their own progress bars), and the dtype goes
by the keyword the installed diffusers reads (`dtype`; `torch_dtype` before it was renamed).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ptta.models.tiny_hunyuan_video import PROMPT_TEMPLATE_FILE, TINY_MODEL_VERSION, save_tiny_model
from ptta.torch_runtime import resolve_dtype

TINY_SPEC = "tiny"
TINY_DIRNAME = f"tiny-hunyuanvideo-v{TINY_MODEL_VERSION}"
# the text-to-video pipeline; image-to-video variants (HunyuanVideo-I2V, SkyReels-I2V) feed the
# transformer extra image-latent channels, which cached text-to-video latents cannot supply
TEXT_TO_VIDEO_PIPELINE = "HunyuanVideoPipeline"


# the VAE compresses space by 8 and the transformer patches by 2; time by 4, keeping the first frame
SPATIAL_MULTIPLE = 16
TEMPORAL_MULTIPLE = 4


def check_frame_count(frames: int) -> None:
    """ValueError unless frames = 4k + 1 (1, 5, 9, ..., 33, 65, 97, 129)."""
    if not isinstance(frames, int) or frames < 1 or (frames - 1) % TEMPORAL_MULTIPLE:
        raise ValueError(f"frame count {frames!r} is not of the form 4k+1 (e.g. 33, 65, 97): the VAE keeps "
                         f"the first frame and compresses the rest by 4")


def check_resolution(height: int, width: int) -> None:
    """ValueError unless both sides are positive multiples of 16."""
    for name, side in (("height", height), ("width", width)):
        if not isinstance(side, int) or side < SPATIAL_MULTIPLE or side % SPATIAL_MULTIPLE:
            raise ValueError(f"{name} {side!r} is not a positive multiple of {SPATIAL_MULTIPLE} "
                             f"(e.g. 448x800 instead of 450x800)")


def ptta_home() -> Path:
    return Path(os.environ.get("PTTA_HOME", Path.home() / ".cache" / "ptta")).expanduser()


def resolve_model_dir(spec: str | Path) -> Path:
    """The model directory for `spec` ("tiny" or a path); FileNotFoundError or ValueError naming the
    directory or file if it is not a text-to-video HunyuanVideo pipeline."""
    if str(spec) == TINY_SPEC:
        return ensure_tiny_model(ptta_home() / TINY_DIRNAME)
    directory = Path(spec).expanduser()
    if not directory.is_dir():
        raise FileNotFoundError(f"model directory {directory} does not exist (give a local diffusers HunyuanVideo "
                                f"directory, or 'tiny' for the embedded tiny model)")
    check_hunyuan_video_dir(directory)
    return directory


def check_hunyuan_video_dir(directory: Path) -> None:
    """FileNotFoundError or ValueError, naming the file, unless `directory` holds a text-to-video
    HunyuanVideoPipeline whose transformer takes exactly the VAE's latent channels (16 for the
    13B model; an image-to-video transformer takes 32 or 33)."""
    index = _read_json(directory / "model_index.json", "not a diffusers pipeline directory")
    if index.get("_class_name") != TEXT_TO_VIDEO_PIPELINE:
        raise ValueError(f"{directory / 'model_index.json'}: _class_name is {index.get('_class_name')!r}, but ptta "
                         f"trains the text-to-video {TEXT_TO_VIDEO_PIPELINE} (image-to-video models such as "
                         f"HunyuanVideo-I2V or SkyReels-I2V are not supported)")
    transformer = _read_json(directory / "transformer" / "config.json", "the pipeline has no transformer")
    vae = _read_json(directory / "vae" / "config.json", "the pipeline has no VAE")
    if transformer.get("in_channels") != vae.get("latent_channels"):
        raise ValueError(f"{directory / 'transformer' / 'config.json'}: in_channels is "
                         f"{transformer.get('in_channels')}, not the VAE's {vae.get('latent_channels')} latent "
                         f"channels: an image-to-video transformer (e.g. HunyuanVideo-I2V, SkyReels-I2V), which ptta "
                         f"does not support")


def _read_json(path: Path, missing_means: str) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path.parent} has no {path.name} ({missing_means})")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def ensure_tiny_model(directory: Path) -> Path:
    """Create the tiny model at `directory` unless it is there; safe when several processes race."""
    if (directory / "model_index.json").is_file():
        return directory
    try:
        save_tiny_model(directory)
    except (FileExistsError, OSError):
        # another process finished first (its rename won); theirs is identical (fixed seed)
        if not (directory / "model_index.json").is_file():
            raise
    return directory


def prompt_template(model_dir: Path) -> dict:
    """The Llama prompt template and crop_start for this model's tokenizer.

    A real HunyuanVideo directory uses diffusers' DEFAULT_PROMPT_TEMPLATE (crop_start 95, the
    token length of the template's system part for the Llama-3 tokenizer); the tiny model ships
    its own `prompt_template.json` because its tokenizer counts differently.
    """
    from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video import DEFAULT_PROMPT_TEMPLATE

    path = Path(model_dir) / PROMPT_TEMPLATE_FILE
    if path.is_file():
        template = json.loads(path.read_text())
        if "template" not in template or "{}" not in template["template"]:
            raise ValueError(f"{path}: needs a 'template' string with a {{}} placeholder for the prompt")
        return template
    return dict(DEFAULT_PROMPT_TEMPLATE)


def quiet_library_progress() -> None:
    """Switch off diffusers' and transformers' loading bars ("Loading pipeline components",
    "Loading weights"): drawn with cursor escapes they fill logs with kilobytes of noise, and say
    nothing our own progress bars and log lines do not."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()


def dtype_keyword(dtype) -> dict:
    """{"dtype": dtype} for a diffusers that reads it, {"torch_dtype": dtype} for one from before the
    rename (which would ignore `dtype`); passing torch_dtype to a newer one warns on every load."""
    from diffusers import utils

    # _resolve_dtype is the helper that came with the `dtype` keyword and maps torch_dtype onto it
    return {"dtype": dtype} if hasattr(utils, "_resolve_dtype") else {"torch_dtype": dtype}


def load_transformer(model_dir: Path, dtype):
    """The HunyuanVideo transformer alone (what training needs once latents and text are cached)."""
    from diffusers import HunyuanVideoTransformer3DModel

    quiet_library_progress()
    return HunyuanVideoTransformer3DModel.from_pretrained(
        model_dir, subfolder="transformer", local_files_only=True, **dtype_keyword(dtype)
    )


def load_pipeline(model_dir: Path, dtype, vae_dtype=None, **components):
    """HunyuanVideoPipeline from `model_dir` in `dtype`, its VAE in `vae_dtype` (default: `dtype`);
    `components` replace parts (None skips loading one)."""
    from diffusers import AutoencoderKLHunyuanVideo, HunyuanVideoPipeline

    quiet_library_progress()
    if vae_dtype is not None and "vae" not in components:
        # loaded on its own, so its weights are cast once from the checkpoint, not via `dtype`
        components["vae"] = AutoencoderKLHunyuanVideo.from_pretrained(model_dir, subfolder="vae", local_files_only=True,
                                                                      **dtype_keyword(vae_dtype))
    return HunyuanVideoPipeline.from_pretrained(model_dir, local_files_only=True, **dtype_keyword(dtype), **components)


def text_encoder_dtype(device):
    """bf16 on a GPU, fp32 on a CPU: one choice for caching, validation and sampling alike."""
    import torch

    return torch.bfloat16 if device.type == "cuda" else torch.float32


def resolve_vae_dtype(name: str, device):
    """The VAE's dtype for a `vae_dtype` setting: "auto" is fp16 on a GPU (as HunyuanVideo's reference
    code and diffusers' example run it) and fp32 on a CPU (half-precision 3D convolutions are slow
    or missing there); an explicit "float16", "bfloat16" or "float32" is used as given."""
    import torch

    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return resolve_dtype(name, device)
