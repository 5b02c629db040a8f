"""Everything that finds and loads a model, real or tiny: HunyuanVideo (a local diffusers directory
or the embedded tiny pipeline), its text encoders and prompt template, Qwen2.5-VL's video input
(the captioner and VideoScore2), the scorer checkpoints' prompt formats and their tiny versions.

The stages import models; models import no stage.
"""
