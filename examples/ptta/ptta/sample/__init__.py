"""PTTA stage 4, `ptta sample`: videos from prompts with a trained adapter, an exported LoRA or neither.

`ptta.sample.generate.generate_videos` is the entry point for other code (the evaluation, the demo).
The denoising loop itself is shared with training's validation in `ptta.rendering`.
"""
