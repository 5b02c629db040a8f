"""Tiny models the core tests inject into: a custom nested module, a Llama, a HunyuanVideo transformer.

Every builder takes a seed so two calls give identical base weights: the save/load and export
tests rebuild a fresh base model and compare it with the adapted one. Nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn

import hydralora

# Linear leaf names of the HunyuanVideo blocks; a container such as `attn` must not match,
# because a target that is not nn.Linear is an injection error by design.
HUNYUAN_TARGETS = (
    r"(transformer_blocks|single_transformer_blocks)\..*"
    r"(to_q|to_k|to_v|to_out\.0|add_q_proj|add_k_proj|add_v_proj|to_add_out|proj_mlp|proj_out|net\.0\.proj|net\.2|linear)"
)


class Block(nn.Module):
    def __init__(self, width: int, shared: nn.Linear) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))
        self.norm = nn.LayerNorm(width)
        self.shared = shared

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.shared(self.norm(x + self.mlp(x)))


class NestedNet(nn.Module):
    """ModuleList of blocks with Sequential MLPs and one Linear that both blocks hold (`shared`)."""

    def __init__(self, width: int = 12, vocab: int = 7) -> None:
        super().__init__()
        self.embed = nn.Linear(vocab, width)
        shared = nn.Linear(width, width)
        self.blocks = nn.ModuleList([Block(width, shared), Block(width, shared)])
        self.head = nn.Linear(width, vocab, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        for block in self.blocks:
            h = block(h)
        return self.head(h)


def build_nested(seed: int = 0) -> NestedNet:
    torch.manual_seed(seed)
    return NestedNet().eval()


def nested_inputs(seed: int = 1) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {"x": torch.randn(2, 5, 7, generator=generator)}


def build_llama(seed: int = 0) -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=1000,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(config).eval()


def llama_inputs(seed: int = 1) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {"input_ids": torch.randint(0, 1000, (2, 6), generator=generator)}


def build_hunyuan(seed: int = 0) -> nn.Module:
    from diffusers import HunyuanVideoTransformer3DModel

    torch.manual_seed(seed)
    model = HunyuanVideoTransformer3DModel(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=10,
        num_layers=1,
        num_single_layers=1,
        num_refiner_layers=1,
        patch_size=1,
        patch_size_t=1,
        text_embed_dim=16,
        pooled_projection_dim=8,
        rope_axes_dim=(2, 4, 4),
        guidance_embeds=True,
    )
    return model.eval()


def hunyuan_inputs(seed: int = 1) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "hidden_states": torch.randn(1, 4, 3, 8, 8, generator=generator),
        "timestep": torch.tensor([500]),
        "encoder_hidden_states": torch.randn(1, 5, 16, generator=generator),
        "encoder_attention_mask": torch.ones(1, 5),
        "pooled_projections": torch.randn(1, 8, generator=generator),
        "guidance": torch.tensor([6000.0]),
    }


def forward_output(model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The model's main output tensor, with autograd: logits for Llama, the sample for HunyuanVideo."""
    out = model(**inputs)
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "logits"):
        return out.logits
    return out.sample


def model_output(model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """`forward_output` without autograd, for comparing outputs."""
    with torch.no_grad():
        return forward_output(model, inputs)


@dataclass(frozen=True)
class ModelCase:
    name: str
    build: Callable[[int], nn.Module]
    inputs: Callable[[], dict[str, torch.Tensor]]
    target_modules: list[str] | str

    def config(self, **overrides) -> hydralora.HydraConfig:
        settings = {"r": 4, "alpha": 8.0, "num_heads": 3, "mixing": "fixed", "target_modules": self.target_modules}
        settings.update(overrides)
        return hydralora.HydraConfig(**settings)


MODEL_CASES = [
    ModelCase("nested", build_nested, nested_inputs, "all-linear"),
    ModelCase("llama", build_llama, llama_inputs, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
    ModelCase("hunyuan", build_hunyuan, hunyuan_inputs, HUNYUAN_TARGETS),
]


def randomize_adapters(model: nn.Module, seed: int = 2, std: float = 0.5) -> None:
    """Give every adapter random B (and router / learned omega) so the model leaves its base."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in hydralora.hydra_layers(model):
            noise = torch.randn(layer.lora_B.shape, generator=generator, dtype=torch.float64)
            layer.lora_B.copy_(std * noise)
            if layer.router is not None:
                layer.router.weight.copy_(torch.randn(layer.router.weight.shape, generator=generator, dtype=torch.float64))
            if layer.config.mixing == "learned":
                layer.head_weights.copy_(torch.rand(layer.num_heads, generator=generator, dtype=torch.float64) + 0.5)


def build_hunyuan_pipeline(transformer: nn.Module):
    """A HunyuanVideoPipeline of tiny random parts, tokenizers built locally from a word list."""
    from diffusers import AutoencoderKLHunyuanVideo, FlowMatchEulerDiscreteScheduler, HunyuanVideoPipeline
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import CLIPTextConfig, CLIPTextModel, LlamaConfig, LlamaModel, PreTrainedTokenizerFast

    torch.manual_seed(3)
    vocab = {"[PAD]": 0, "[UNK]": 1, "a": 2, "cat": 3, "walks": 4}
    word_level = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    word_level.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=word_level, pad_token="[PAD]", unk_token="[UNK]")
    text_encoder = LlamaModel(
        LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4, vocab_size=1000)
    )
    text_encoder_2 = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2, vocab_size=1000,
            projection_dim=8, bos_token_id=0, eos_token_id=2,
        )
    )
    vae = AutoencoderKLHunyuanVideo(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=4
    )
    return HunyuanVideoPipeline(
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer,
    )
