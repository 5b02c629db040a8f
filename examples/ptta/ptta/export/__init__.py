"""PTTA stage 5, `ptta export`: a trained adapter as a LoRA file for other tools.

Formats: `diffusers` and `peft` (diffusers module names), `original` (HunyuanVideo's original
checkpoint layout as diffusion-pipe saves it, which ComfyUI maps) and `kohya` (musubi-tuner's
`lora_unet_*` keys). The collapse needs only the adapter's files, never the 13B model; the name
mapping is `ptta.models.hunyuan_video_lora`, shared with `ptta sample --lora`, which reads every
format back. `ptta.export.lora.export_adapter` is the entry point for other code.
"""
