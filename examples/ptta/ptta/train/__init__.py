"""PTTA stage 3, `ptta train`: fine-tune HunyuanVideo with HydraLoRA (or LoRA) on the cache.

Reads the cache folder that `ptta cache` wrote (ptta.cache); writes checkpoints, the adapter,
metrics and validation videos into the run folder. Guide: docs/ptta-guide.md.
"""
