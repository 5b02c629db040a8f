"""VideoScore2 (He et al., arXiv 2509.22799): a generative Qwen2.5-VL judge, from a local directory.

The model thinks aloud, then writes "visual quality: <1-5>; text-to-video alignment: <1-5>,
physical/common-sense consistency: <1-5>". The query, the 2 fps frame rate and the answer format
follow the reference inference script (TIGER-AI-Lab/VideoScore2 `vs2_inference.py`). Two choices
differ: decoding is greedy (the reference samples at temperature 0.7), so a rerun gives the same
scores; and reading the answer is made robust:

1. each aspect is parsed on its own, tolerant of markdown, "=", "4/5", decimals and the short names
   ("physical consistency", "t2v alignment"); the last mention wins, since the reasoning may quote
   the scale before the verdict;
2. an aspect that cannot be parsed (truncated output, an unusual format) is *forced*: the canonical
   answer line is appended to what the model wrote and the score is the expected value of the
   model's next-token distribution over the digits 1-5. Which aspects were forced is recorded.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ptta.evaluate.scorers.base import DecodedVideo, Scorer, ScorerError, ScoreResult, check_checkpoint_dir
from ptta.models.qwen_vl import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    VIDEO_MAX_PIXELS,
    VIDEO_MIN_PIXELS,
    QwenVisionLayout,
    qwen_video_input,
    saved_chat_template,
    video_modality_ids,
)
from ptta.models.scorer_prompts import VS2_QUERY_TEMPLATE
from ptta.torch_runtime import resolve_device, resolve_dtype

# metric -> (name in the canonical answer, separator after its score, pattern for its name)
ASPECTS = {
    "vs2_visual_quality": ("visual quality", ";", r"visual[\s_-]*quality"),
    "vs2_text_alignment": ("text-to-video alignment", ",",
                           r"(?:text[\s_-]*(?:to|2)[\s_-]*video|t2v)[\s_-]*alignment"),
    "vs2_physical_consistency": ("physical/common-sense consistency", "",
                                 r"(?:physical(?:[\s/_-]*(?:and[\s_-]*)?common[\s_-]*sense)?|common[\s_-]*sense)"
                                 r"[\s_-]*consistency"),
}
SCORE_RANGE = (1, 5)
# name, then markdown / punctuation, then the number, optionally "/5"
_VALUE = r"[\s*_`'\"]*(?:score)?[\s*_`'\"]*[:=：-]?[\s*_`'\"]*(\d+(?:\.\d+)?)(?:\s*/\s*5(?![\d.]))?"


def vs2_query(prompt: str) -> str:
    return VS2_QUERY_TEMPLATE.substitute(t2v_prompt=prompt)


def parse_vs2_answer(text: str) -> dict[str, float | None]:
    """Each aspect's score in [1, 5] from free text, or None where none is found."""
    scores: dict[str, float | None] = {}
    for metric, (_, _, name_pattern) in ASPECTS.items():
        value = None
        for match in re.finditer(name_pattern + _VALUE, text, flags=re.IGNORECASE):
            number = float(match.group(1))
            if SCORE_RANGE[0] <= number <= SCORE_RANGE[1]:
                value = number
        scores[metric] = value
    return scores


def _chat_template(model_dir: Path, tokenizer) -> str:
    """The chat template saved with the model. The reference formats the query with the processor's
    template (chat_template.jinja, else chat_template.json), so that comes before the tokenizer's."""
    template = saved_chat_template(model_dir) or getattr(tokenizer, "chat_template", None)
    if not template:
        raise ScorerError(f"{model_dir}: no chat template (chat_template.jinja, chat_template.json or "
                          "tokenizer_config.json)")
    return template


class VideoScore2Scorer(Scorer):
    """VideoScore2: visual quality, text-to-video alignment, physical/common-sense consistency (1-5)."""

    name = "videoscore2"
    revision = 2  # 2: timed at fps = 2 as the reference, its chat template first, 3-D video positions
    metrics = tuple(ASPECTS)

    def __init__(self, model_dir: str | Path, device: str = "auto", dtype: str = "auto", fps: float = 2.0,
                 max_new_tokens: int = 1024, min_pixels: int = VIDEO_MIN_PIXELS, max_pixels: int = VIDEO_MAX_PIXELS):
        self.model_dir = Path(model_dir)
        check_checkpoint_dir(self.model_dir, "VideoScore2")
        if fps <= 0 or max_new_tokens < 1 or not 0 < min_pixels <= max_pixels:
            raise ScorerError(f"videoscore2: need fps > 0, max_new_tokens >= 1 and 0 < min_pixels <= max_pixels "
                              f"(got {fps}, {max_new_tokens}, {min_pixels}, {max_pixels})")
        self.fps, self.max_new_tokens = fps, max_new_tokens
        self.min_pixels, self.max_pixels = min_pixels, max_pixels
        self.device_name, self.dtype_name = device, dtype
        self.model = self.tokenizer = self.template = self.layout = self.digit_ids = None

    @property
    def signature(self) -> str:
        return (f"{self.versioned_name}:{self.fps:g}fps:{self.max_new_tokens}tok:{self.min_pixels}-{self.max_pixels}px:"
                f"{self.model_dir.resolve()}")

    def load(self) -> None:
        from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

        device = resolve_device(self.device_name)
        dtype = resolve_dtype(self.dtype_name, device)
        config = json.loads((self.model_dir / "config.json").read_text())
        if config.get("model_type") != "qwen2_5_vl":
            raise ScorerError(f"{self.model_dir}/config.json: model_type {config.get('model_type')!r}, "
                              "VideoScore2 is 'qwen2_5_vl'")
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        self.template = _chat_template(self.model_dir, self.tokenizer)
        model, info = Qwen2_5_VLForConditionalGeneration.from_pretrained(self.model_dir, dtype=dtype,
                                                                         output_loading_info=True)
        # transformers fills missing weights with random ones and only warns; scores would be noise.
        if info["missing_keys"]:
            missing = sorted(info["missing_keys"])
            raise ScorerError(f"{self.model_dir}: weights missing from the checkpoint: "
                              f"{missing[:5]}{' ...' if len(missing) > 5 else ''}")
        self.model = model.to(device).eval()
        vision = self.model.config.vision_config
        preprocessor = self.model_dir / "preprocessor_config.json"
        norm = json.loads(preprocessor.read_text()) if preprocessor.is_file() else {}
        self.layout = QwenVisionLayout(vision.patch_size, vision.temporal_patch_size, vision.spatial_merge_size,
                                       tuple(norm.get("image_mean", OPENAI_CLIP_MEAN)),
                                       tuple(norm.get("image_std", OPENAI_CLIP_STD)))
        digit_ids = []
        for digit in range(SCORE_RANGE[0], SCORE_RANGE[1] + 1):
            ids = self.tokenizer.encode(str(digit), add_special_tokens=False)
            if len(ids) != 1:
                raise ScorerError(f"{self.model_dir}: the tokenizer splits the digit {digit} into {ids}")
            digit_ids.append(ids[0])
        self.digit_ids = digit_ids

    def close(self) -> None:
        self.model = self.tokenizer = None

    def _inputs(self, video: DecodedVideo, prompt: str) -> tuple[dict, list[int]]:
        import torch

        clip = qwen_video_input(video.frames, video.fps, self.layout, self.fps, self.min_pixels, self.max_pixels)
        messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": vs2_query(prompt)}]}]
        text = self.tokenizer.apply_chat_template(messages, chat_template=self.template, tokenize=False,
                                                  add_generation_prompt=True)
        pad = self.tokenizer.convert_ids_to_tokens(self.model.config.video_token_id)
        if text.count(pad) != 1:
            raise ScorerError(f"{self.model_dir}: the chat template wrote {text.count(pad)} {pad} tokens for one video")
        text = text.replace(pad, pad * clip.num_tokens(self.layout))
        input_ids = self.tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
        device = self.model.device
        vision = {
            "pixel_values_videos": torch.from_numpy(clip.pixel_values).to(device, self.model.dtype),
            "video_grid_thw": torch.tensor([clip.grid_thw], device=device),
            # The reference passes fps=2 to a transformers 4.53 processor, which times each temporal
            # patch as temporal_patch_size / fps: the requested rate, not the sampled frames' rate
            # (they differ when duration * fps is not an even count).
            "second_per_grid_ts": torch.tensor([self.layout.temporal_patch_size / self.fps], device=device),
        }
        input_ids = input_ids.to(device)
        return {"input_ids": input_ids, **vision, **video_modality_ids(self.model, input_ids)}, clip.frame_indices

    def _forced_scores(self, inputs: dict, generated, parsed: dict[str, float | None]) -> dict[str, float]:
        """Score the unparsed aspects from the digit distribution after the canonical answer prefix."""
        import torch

        sequence = torch.cat([inputs["input_ids"], generated], dim=1)
        # the modality ids follow the sequence, which grows here: made again for each longer one
        vision = {k: v for k, v in inputs.items() if k not in ("input_ids", "mm_token_type_ids")}
        digits = torch.arange(SCORE_RANGE[0], SCORE_RANGE[1] + 1, dtype=torch.float32)
        forced, suffix = {}, "\n"
        for metric, (label, separator, _) in ASPECTS.items():
            suffix += f"{label}: "
            value = parsed[metric]
            if value is None:
                suffix_ids = self.tokenizer(suffix, add_special_tokens=False, return_tensors="pt").input_ids
                ids = torch.cat([sequence, suffix_ids.to(sequence.device)], dim=1)
                with torch.no_grad():
                    logits = self.model(input_ids=ids, attention_mask=torch.ones_like(ids), **vision,
                                        **video_modality_ids(self.model, ids)).logits
                probs = logits[0, -1, self.digit_ids].float().softmax(-1).cpu()
                value = forced[metric] = float((probs * digits).sum())
            suffix += f"{round(value)}{separator}\n"
        return forced

    def score(self, video: DecodedVideo, prompt: str) -> ScoreResult:
        import torch

        if self.model is None:
            raise ScorerError("VideoScore2Scorer.score called before load()")
        inputs, frame_indices = self._inputs(video, prompt)
        with torch.no_grad():
            output = self.model.generate(**inputs, attention_mask=torch.ones_like(inputs["input_ids"]),
                                         max_new_tokens=self.max_new_tokens, do_sample=False)
        generated = output[:, inputs["input_ids"].shape[1]:]
        # The forced continuation follows the model's words, not its end-of-turn token.
        special = set(self.tokenizer.all_special_ids)
        keep = generated.shape[1]
        while keep and int(generated[0, keep - 1]) in special:
            keep -= 1
        generated = generated[:, :keep]
        text = self.tokenizer.decode(generated[0], skip_special_tokens=True)
        parsed = parse_vs2_answer(text)
        forced = self._forced_scores(inputs, generated, parsed) if None in parsed.values() else {}
        values = {metric: parsed[metric] if parsed[metric] is not None else forced[metric] for metric in self.metrics}
        details = {"answer": text, "forced": sorted(forced), "frame_indices": frame_indices}
        return ScoreResult(values, details)
