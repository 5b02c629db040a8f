"""Helpers of the curation tests (imported by tests/ptta/test_curate_*.py).

Tiny random-config models are built here, saved to a folder and loaded back by the code under
test, as a user's real checkpoints would be; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path

import av

MODEL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                "<|image_pad|>", "<|video_pad|>"]  # fmt: skip
TAG_WORDS = ["anime", "girl", "boy", "running", "walking", "field", "city", "sky", "solo", "full", "body",
             "style", "close-up", "gentle", "action", "fast", "camera", "pan", "user", "assistant"]  # fmt: skip


def run_command(module_name: str, argv: list[str]) -> int:
    """Parse argv with a stage module's own arguments and run it, as `ptta <stage>` would."""
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return module.run(parser.parse_args(argv))


def read_manifest(out_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "manifest.jsonl").read_text().splitlines()]


def video_stream_facts(path: Path) -> tuple[int, float, int, int]:
    """(decoded frames, average rate, width, height) of a written clip."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        return frames, float(stream.average_rate), stream.width, stream.height


def save_tiny_qwen(folder: Path) -> Path:
    """A random Qwen2.5-VL with a word-level tokenizer, chat template and image processor."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (PreTrainedTokenizerFast, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration,
                              Qwen2VLImageProcessorPil)

    from ptta.curate.caption import QWEN_VL_CHAT_TEMPLATE

    vocab = {token: i for i, token in enumerate(MODEL_TOKENS + TAG_WORDS + [","])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|endoftext|>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.add_special_tokens(MODEL_TOKENS)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                        unk_token="<|endoftext|>")
    tokenizer.chat_template = QWEN_VL_CHAT_TEMPLATE  # the released checkpoints' template
    tokenizer.save_pretrained(folder)
    Qwen2VLImageProcessorPil(patch_size=14, merge_size=2, temporal_patch_size=2).save_pretrained(folder)
    config = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [1, 1, 2]}),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                           fullatt_block_indexes=[1]),
        image_token_id=vocab["<|image_pad|>"], video_token_id=vocab["<|video_pad|>"],
        vision_start_token_id=vocab["<|vision_start|>"], vision_end_token_id=vocab["<|vision_end|>"],
        eos_token_id=vocab["<|im_end|>"], pad_token_id=vocab["<|endoftext|>"],
    )  # fmt: skip
    torch.manual_seed(0)
    Qwen2_5_VLForConditionalGeneration(config).save_pretrained(folder)
    return folder


def save_tiny_clip(folder: Path, projection_dim: int = 16) -> Path:
    """A random CLIPModel (text + vision) and its image processor, as a real ViT-L/14 folder holds."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                         vocab_size=64, projection_dim=projection_dim),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8, projection_dim=projection_dim),
        projection_dim=projection_dim,
    )  # fmt: skip
    CLIPModel(config).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def save_random_aesthetic_head(path: Path, input_dim: int) -> Path:
    """A random MLP in the LAION improved-aesthetic-predictor layout, as .pth or .safetensors."""
    import torch

    from ptta.curate.aesthetic import build_aesthetic_head

    torch.manual_seed(1)
    state = build_aesthetic_head(input_dim).state_dict()
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path
