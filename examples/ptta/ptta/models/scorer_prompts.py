"""The prompt formats the VideoScore and VideoScore2 checkpoints were trained with.

They belong to the checkpoints, not to the evaluation: the scorers (evaluate/scorers) fill them in,
and the tiny scorer checkpoints (models/tiny_scorers.py) build their vocabularies from them.
"""

from __future__ import annotations

from string import Template

# Verbatim from the reference inference code, line by line (note the trailing space of one line).
VIDEOSCORE_PROMPT = "\n".join([
    "",
    "Suppose you are an expert in judging and evaluating the quality of AI-generated videos,",
    "please watch the following frames of a given video and see the text prompt for generating the video,",
    "then give scores from 5 different dimensions:",
    "(1) visual quality: the quality of the video in terms of clearness, resolution, brightness, and color",
    "(2) temporal consistency, both the consistency of objects or humans and the smoothness of motion or movements",
    "(3) dynamic degree, the degree of dynamic changes",
    "(4) text-to-video alignment, the alignment between the text prompt and the video content",
    "(5) factual consistency, the consistency of the video content with the common-sense and factual knowledge",
    "",
    "for each dimension, output a float number from 1.0 to 4.0,",
    "the higher the number is, the better the video performs in that sub-score, ",
    "the lowest 1.0 means Bad, the highest 4.0 means Perfect/Real (the video is like a real video)",
    "Here is an output example:",
    "visual quality: 3.2",
    "temporal consistency: 2.7",
    "dynamic degree: 4.0",
    "text-to-video alignment: 2.3",
    "factual consistency: 1.8",
    "",
    'For this video, the text prompt is "{text_prompt}",',
    "all the frames of video are as follows:",
    "",
])

# Verbatim from the reference inference script, whose template sits indented inside a function:
# text lines keep 4 leading spaces, blank lines are empty, two lines end in a space, and the last
# line is the bare indent before the closing quotes.
VS2_QUERY_TEMPLATE = Template("\n".join([
    "",
    "    You are an expert for evaluating AI-generated videos from three dimensions:",
    "    (1) visual quality – clarity, smoothness, artifacts;",
    "    (2) text-to-video alignment – fidelity to the prompt;",
    "    (3) physical/common-sense consistency – naturalness and physics plausibility.",
    "",
    "    Video prompt: $t2v_prompt",
    "",
    "    Please output in this format:",
    "    visual quality: <v_score>; ",
    "    text-to-video alignment: <t_score>, ",
    "    physical/common-sense consistency: <p_score>",
    "    ",
]))
