"""Prompt embeddings as HunyuanVideo computes them, trimmed to the prompt's own tokens.

`HunyuanVideoPipeline.encode_prompt` applies the chat template, runs Llama and keeps
hidden_states[-3] after `crop_start` (right-padded, with a mask), plus CLIP-L's pooled output.
Trimming the padding makes caches small; `pad_prompt_batch` pads again for a batch.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def encode_prompts(pipe, prompts: list[str], template: dict, max_sequence_length: int, device,
                   batch_size: int = 8) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """[(prompt_embeds (L_i, D), pooled (P,))] per prompt, on the CPU in fp32."""
    out = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start:start + batch_size]
        embeds, pooled, mask = pipe.encode_prompt(
            prompt=chunk, prompt_template=template, device=device, max_sequence_length=max_sequence_length
        )
        lengths = mask.sum(dim=1).tolist()
        for i, length in enumerate(lengths):
            # right padding: the first `length` tokens are the prompt; keep at least one token
            keep = max(1, int(length))
            out.append((embeds[i, :keep].float().cpu(), pooled[i].float().cpu()))
    return out


def pad_prompt_batch(embeds: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad (L_i, D) embeddings to (B, L_max, D) with a (B, L_max) mask, as the pipeline does."""
    longest = max(e.shape[0] for e in embeds)
    batch = embeds[0].new_zeros((len(embeds), longest, embeds[0].shape[1]))
    mask = torch.zeros((len(embeds), longest), dtype=torch.long)
    for i, e in enumerate(embeds):
        batch[i, :e.shape[0]] = e
        mask[i, :e.shape[0]] = 1
    return batch, mask
