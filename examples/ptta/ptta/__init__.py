"""PTTA: pure text-to-animation with HunyuanVideo and HydraLoRA."""

__version__ = "0.1.0"
