"""Tiny random-weight scorer checkpoints, written in the same layouts as the real ones.

`save_tiny_videoscore` writes an Idefics2 backbone plus a 5-output "score" head exactly as the
VideoScore checkpoints store them ("model.*" + "score.weight"/"score.bias"), `save_tiny_videoscore2`
a Qwen2.5-VL with a chat template, `save_tiny_clip` a CLIP. Tokenizers are word-level vocabularies
built here, so nothing is downloaded. The scores they give are meaningless; they exist so that the
whole evaluation chain (loading, prompting, parsing, reporting) runs on a CPU in seconds.
"""

from __future__ import annotations

import re
from pathlib import Path

from ptta.models.scorer_prompts import VIDEOSCORE_PROMPT, VS2_QUERY_TEMPLATE
from ptta.paper_prompts import PTTA_PROMPTS

QWEN_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                       "<|image_pad|>", "<|video_pad|>"]
# Qwen2-VL's chat template reduced to what a video + text turn needs (no default system turn).
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _word_level_tokenizer(text: str, specials: list[str], **special_roles):
    """A fast tokenizer over the words and digits of `text`; anything else maps to <unk>."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = sorted(set(re.findall(r"\w+|[^\w\s]", text.lower())) | {str(d) for d in range(10)})
    vocab = {token: i for i, token in enumerate(["<unk>", *specials, *words])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.normalizer = None
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", **special_roles)


def _corpus() -> str:
    return " ".join([VIDEOSCORE_PROMPT, VS2_QUERY_TEMPLATE.template, *(p.text for p in PTTA_PROMPTS)])


def save_tiny_videoscore(directory: str | Path, seed: int = 0) -> Path:
    """A VideoScore-layout checkpoint: tiny Idefics2 backbone + linear head, 4 latents per image."""
    import torch
    from safetensors.torch import save_file
    from transformers import Idefics2Config, Idefics2Model, Idefics2Processor
    from transformers.models.idefics2.image_processing_pil_idefics2 import Idefics2ImageProcessorPil

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = _word_level_tokenizer(_corpus(), ["<s>", "</s>"], bos_token="<s>", eos_token="</s>",
                                      pad_token="<unk>")
    image_processor = Idefics2ImageProcessorPil(do_image_splitting=False,
                                                size={"longest_edge": 56, "shortest_edge": 28})
    processor = Idefics2Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_len=4)
    config = Idefics2Config(
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=56, patch_size=14),
        perceiver_config=dict(hidden_size=16, resampler_n_latents=4, resampler_depth=1, resampler_n_heads=2,
                              resampler_head_dim=8, num_key_value_heads=1),
        # Mistral-7B's RMSNorm epsilon, unlike the perceiver's 1e-6, as in the real checkpoints.
        text_config=dict(model_type="mistral", hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, vocab_size=len(tokenizer),
                         max_position_embeddings=4096, pad_token_id=0, rms_norm_eps=1e-5),
        image_token_id=processor.image_token_id, pad_token_id=0,
    )
    config.architectures = ["Idefics2ForSequenceClassification"]
    config.num_labels = 5
    torch.manual_seed(seed)
    backbone = Idefics2Model(config)
    tensors = {f"model.{name}": value.contiguous() for name, value in backbone.state_dict().items()}
    head = torch.nn.Linear(config.text_config.hidden_size, 5)
    tensors.update({"score.weight": head.weight.detach(), "score.bias": head.bias.detach()})
    save_file(tensors, str(directory / "model.safetensors"))
    config.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def save_tiny_videoscore2(directory: str | Path, seed: int = 0) -> Path:
    """A VideoScore2-layout checkpoint: tiny Qwen2.5-VL, word-level tokenizer, chat template."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = _word_level_tokenizer(_corpus(), QWEN_SPECIAL_TOKENS, pad_token="<|endoftext|>",
                                      eos_token="<|im_end|>", additional_special_tokens=QWEN_SPECIAL_TOKENS)
    tokenizer.chat_template = QWEN_CHAT_TEMPLATE
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in QWEN_SPECIAL_TOKENS}
    special = dict(eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"], bos_token_id=None)
    config = Qwen2_5_VLConfig(
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=len(tokenizer), max_position_embeddings=4096,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [1, 1, 2]},
                         **special),
        vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                           fullatt_block_indexes=[0]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"], **special,
    )
    torch.manual_seed(seed)
    Qwen2_5_VLForConditionalGeneration(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def save_tiny_clip(directory: str | Path, seed: int = 0) -> Path:
    """A tiny CLIP (32-pixel images) with a word-level tokenizer and a PIL image processor."""
    import torch
    from tokenizers import processors
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = _word_level_tokenizer(_corpus(), ["<|startoftext|>", "<|endoftext|>"], bos_token="<|startoftext|>",
                                      eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    # CLIP pools the text at its end-of-text token, so every encoding must end with one.
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>", special_tokens=[("<|startoftext|>", bos), ("<|endoftext|>", eos)])
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=77, bos_token_id=bos, eos_token_id=eos,
                         pad_token_id=eos),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=8,
    )
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(directory)
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(directory)
    return directory
