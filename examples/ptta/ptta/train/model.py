"""Finding and loading a HunyuanVideo model: a local diffusers directory or the embedded tiny one.

A model directory is what `HunyuanVideoPipeline.save_pretrained` writes (model_index.json and the
folders transformer/, vae/, text_encoder/, text_encoder_2/, tokenizer/, tokenizer_2/, scheduler/),
e.g. a local copy of hunyuanvideo-community/HunyuanVideo. The spec "tiny" means the embedded tiny
model, created on first use under $PTTA_HOME (default ~/.cache/ptta) and reused afterwards.
Nothing is ever downloaded: every load passes local_files_only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ptta.train.tiny_model import PROMPT_TEMPLATE_FILE, TINY_MODEL_VERSION, save_tiny_model

TINY_SPEC = "tiny"
TINY_DIRNAME = f"tiny-hunyuanvideo-v{TINY_MODEL_VERSION}"


def ptta_home() -> Path:
    return Path(os.environ.get("PTTA_HOME", Path.home() / ".cache" / "ptta")).expanduser()


def resolve_model_dir(spec: str | Path) -> Path:
    """The model directory for `spec` ("tiny" or a path); FileNotFoundError naming it if unusable."""
    if str(spec) == TINY_SPEC:
        return ensure_tiny_model(ptta_home() / TINY_DIRNAME)
    directory = Path(spec).expanduser()
    if not directory.is_dir():
        raise FileNotFoundError(f"model directory {directory} does not exist (give a local diffusers HunyuanVideo "
                                f"directory, or 'tiny' for the embedded tiny model)")
    if not (directory / "model_index.json").is_file():
        raise FileNotFoundError(f"{directory} has no model_index.json: not a diffusers pipeline directory")
    return directory


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


def load_transformer(model_dir: Path, dtype):
    """The HunyuanVideo transformer alone (what training needs once latents and text are cached)."""
    from diffusers import HunyuanVideoTransformer3DModel

    return HunyuanVideoTransformer3DModel.from_pretrained(
        model_dir, subfolder="transformer", torch_dtype=dtype, local_files_only=True
    )


def load_pipeline(model_dir: Path, dtype, **components):
    """HunyuanVideoPipeline from `model_dir`; `components` replace parts (None skips loading one)."""
    from diffusers import HunyuanVideoPipeline

    return HunyuanVideoPipeline.from_pretrained(model_dir, torch_dtype=dtype, local_files_only=True, **components)
