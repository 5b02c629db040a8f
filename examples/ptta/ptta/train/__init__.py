"""PTTA training stage: cache latents and text embeddings, fine-tune HunyuanVideo with HydraLoRA, sample.

Entry points: `ptta cache`, `ptta train`, `ptta sample`, `ptta demo`, `ptta make-tiny-model`
(see commands/), and `ptta.train.sample.generate_videos` for other code. Guide: docs/ptta-guide.md.
"""
