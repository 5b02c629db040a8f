"""The embedded tiny HunyuanVideo: a random-weight pipeline of the real classes that runs on a CPU.

Every `ptta` command accepts it in place of a real model directory, so the whole chain (cache,
train, sample, demo, tests) runs without a download. It is written as an ordinary diffusers
directory (`model_index.json` + one folder per component) and loaded like a real one. Its
sizes follow diffusers' own HunyuanVideo tests, except patch size 2 (the real model's), so the
"height and width divisible by 16" rule is the same as for the 13B model.

The tokenizers are built here with the `tokenizers` library: a word-level vocabulary trained on
the prompt template and a small caption word list, so no tokenizer file is ever fetched.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

PROMPT_TEMPLATE_FILE = "prompt_template.json"
# bump when the tiny model's definition changes, so a copy saved by an older version is not reused
TINY_MODEL_VERSION = 1
TINY_SEED = 0
LLAMA_MAX_LENGTH = 512
CLIP_MAX_LENGTH = 77

# Words of typical animation captions; anything else maps to [UNK]. The tiny model's weights are
# random, so the vocabulary only has to make different captions give different token ids.
CAPTION_WORDS = """
a an the and or of in on at to with from by over under into while as is are his her their its this
that one two three small large big tall little young old happy sad gentle soft bright dark red blue
green yellow white black orange purple pink brown gray golden colorful anime cartoon animation style
girl boy man woman men women child children person people character hero king queen prince princess
father mother friend cat dog bird fish horse dragon robot monster rabbit bunny butterfly squirrel
tree trees flower flowers grass forest field meadow sky cloud clouds sun moon star stars rain snow
water sea ocean river lake beach mountain mountains hill city street house room window door desk
table chair book books sword ball car train boat ship light fire smoke shadow background scenery
landscape night day morning evening sunset walks walking runs running jumps jumping flies flying
swims dances dancing sits sitting stands standing looks looking smiles smiling reads reading holds
holding falls falling spins rotating moving moves bouncing bounces floats floating waves waving
camera pans zooms slowly quickly close up wide shot full body solo scene frame circle square
triangle shape shapes stripes pattern gradient
""".split()


def make_tiny_pipeline(seed: int = TINY_SEED):
    """A HunyuanVideoPipeline with tiny random weights (deterministic for a given seed)."""
    import torch
    from diffusers import (
        AutoencoderKLHunyuanVideo,
        FlowMatchEulerDiscreteScheduler,
        HunyuanVideoPipeline,
        HunyuanVideoTransformer3DModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, LlamaConfig, LlamaModel

    llama_tokenizer, clip_tokenizer = _make_tokenizers()
    torch.manual_seed(seed)
    transformer = HunyuanVideoTransformer3DModel(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=10,
        num_layers=1,
        num_single_layers=1,
        num_refiner_layers=1,
        patch_size=2,
        patch_size_t=1,
        guidance_embeds=True,
        text_embed_dim=16,
        pooled_projection_dim=8,
        rope_axes_dim=(2, 4, 4),
    )
    vae = AutoencoderKLHunyuanVideo(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        down_block_types=("HunyuanVideoDownBlock3D",) * 4,
        up_block_types=("HunyuanVideoUpBlock3D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        layers_per_block=1,
        act_fn="silu",
        norm_num_groups=4,
        scaling_factor=0.476986,
        spatial_compression_ratio=8,
        temporal_compression_ratio=4,
        mid_block_add_attention=True,
    )
    text_encoder = LlamaModel(
        LlamaConfig(
            vocab_size=max(1000, len(llama_tokenizer)),
            hidden_size=16,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            max_position_embeddings=LLAMA_MAX_LENGTH + 64,
            bos_token_id=llama_tokenizer.bos_token_id,
            eos_token_id=llama_tokenizer.eos_token_id,
            pad_token_id=llama_tokenizer.pad_token_id,
        )
    )
    text_encoder_2 = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=max(1000, len(clip_tokenizer)),
            hidden_size=8,
            intermediate_size=37,
            projection_dim=8,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=CLIP_MAX_LENGTH,
            hidden_act="gelu",
            bos_token_id=clip_tokenizer.bos_token_id,
            eos_token_id=clip_tokenizer.eos_token_id,
            pad_token_id=clip_tokenizer.pad_token_id,
        )
    )
    # Shift 7.0 is HunyuanVideo's inference default, as in the real scheduler config.
    scheduler = FlowMatchEulerDiscreteScheduler(shift=7.0)
    return HunyuanVideoPipeline(
        text_encoder=text_encoder,
        tokenizer=llama_tokenizer,
        transformer=transformer,
        vae=vae,
        scheduler=scheduler,
        text_encoder_2=text_encoder_2,
        tokenizer_2=clip_tokenizer,
    )


def save_tiny_model(directory: str | Path, seed: int = TINY_SEED, overwrite: bool = False) -> Path:
    """Write the tiny pipeline as a diffusers directory; written to a temporary sibling, then renamed.

    The directory also gets `prompt_template.json`: the HunyuanVideo prompt template with the
    `crop_start` of this tokenizer (the real Llama-3 tokenizer's 95 does not apply to it).
    """
    directory = Path(directory)
    if directory.exists():
        if not overwrite:
            raise FileExistsError(f"{directory} already exists; pass overwrite=True (--overwrite) to replace it")
        shutil.rmtree(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    pipe = make_tiny_pipeline(seed)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        pipe.save_pretrained(staging)
        template = tiny_prompt_template(pipe.tokenizer)
        (staging / PROMPT_TEMPLATE_FILE).write_text(json.dumps(template, indent=2))
        os.replace(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


def tiny_prompt_template(tokenizer) -> dict:
    """HunyuanVideo's template with crop_start = the token count of its part before the prompt."""
    from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video import DEFAULT_PROMPT_TEMPLATE

    template = DEFAULT_PROMPT_TEMPLATE["template"]
    prefix = template.split("{}")[0]
    crop_start = len(tokenizer(prefix)["input_ids"])
    return {"template": template, "crop_start": crop_start}


def _make_tokenizers():
    from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video import DEFAULT_PROMPT_TEMPLATE
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [DEFAULT_PROMPT_TEMPLATE["template"].replace("{}", " "), " ".join(CAPTION_WORDS)]

    def build(special: list[str], bos: str, eos: str, add_eos: bool, max_length: int, pad: str):
        tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
        tok.normalizer = normalizers.Lowercase()
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        tok.train_from_iterator(corpus, trainers.WordLevelTrainer(special_tokens=["[UNK]", *special]))
        single = f"{bos} $A {eos}" if add_eos else f"{bos} $A"
        tok.post_processor = processors.TemplateProcessing(
            single=single, special_tokens=[(t, tok.token_to_id(t)) for t in {bos, eos}]
        )
        return PreTrainedTokenizerFast(
            tokenizer_object=tok,
            bos_token=bos,
            eos_token=eos,
            pad_token=pad,
            unk_token="[UNK]",
            additional_special_tokens=[t for t in special if t not in {bos, eos, pad}],
            model_max_length=max_length,
            padding_side="right",
        )

    # Llama-3 style: a BOS token, chat header tokens kept whole, right padding with a mask.
    llama_special = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                     "<|eot_id|>", "<|pad|>"]
    llama = build(llama_special, "<|begin_of_text|>", "<|end_of_text|>", False, LLAMA_MAX_LENGTH, "<|pad|>")
    # CLIP style: BOS ... EOS, padded with EOS; the pooled output is read at the first EOS.
    clip_special = ["<|startoftext|>", "<|endoftext|>"]
    clip = build(clip_special, "<|startoftext|>", "<|endoftext|>", True, CLIP_MAX_LENGTH, "<|endoftext|>")
    return llama, clip
