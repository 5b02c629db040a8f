"""The PTTA test prompts: 20 animation prompts in the comma-separated tag style of the paper's Fig. 2
("anime girl, reading books, desk, gentle action, soft gaze, solo, full body, anime style").

The paper does not publish its 20 prompts, only that they cover diverse animation style elements;
this set covers the four elements its HydraLoRA heads were meant for (male characters, female
characters, objects, backgrounds), five prompts each, every one with a subject, an action, a
setting, motion and framing tags, and a style tag. Each prompt names a clear motion so that
dynamic degree has something to measure.

Shared: the evaluation scores videos of these prompts, and the tiny scorer checkpoints
(models/tiny_scorers.py) cover their words. Other sets are read by `ptta.evaluate.prompts.load_prompts`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EvalPrompt:
    id: str  # short stable name, used in file names
    text: str
    focus: str  # which style element the prompt stresses


def _prompts(focus: str, prefix: str, texts: list[str]) -> list[EvalPrompt]:
    return [EvalPrompt(f"{prefix}{i + 1:02d}", text, focus) for i, text in enumerate(texts)]


PTTA_PROMPTS: tuple[EvalPrompt, ...] = tuple(
    _prompts("female", "f", [
        "anime girl, reading books, desk, gentle action, soft gaze, solo, full body, anime style",
        "anime girl, long silver hair, running through a flower field, wind blowing hair, smiling, solo, "
        "tracking shot, anime style",
        "anime girl, school uniform, waving goodbye at a train station, evening light, solo, medium shot, "
        "anime style",
        "anime girl, witch hat, flying on a broom over a town, cape fluttering, night sky, solo, wide shot, "
        "anime style",
        "anime girl, dancing in the rain, spinning with an umbrella, city street, puddles splashing, solo, "
        "full body, anime style",
    ])
    + _prompts("male", "m", [
        "anime boy, swinging a sword, dojo, fast action, determined eyes, solo, full body, anime style",
        "anime boy, riding a bicycle down a hill, summer, hair blowing, smiling, solo, side view, anime style",
        "old man, wizard robe, casting a glowing spell, dark forest, sparks flying, solo, medium shot, "
        "anime style",
        "anime boy, playing guitar on a rooftop, sunset, head nodding, solo, close up, anime style",
        "young man, chef, tossing vegetables in a pan, busy kitchen, flames rising, solo, medium shot, "
        "anime style",
    ])
    + _prompts("object", "o", [
        "red paper airplane, gliding over a classroom, sunlight through windows, slow motion, no humans, "
        "anime style",
        "steaming cup of tea, on a wooden table, steam rising, rain on the window, still life, close up, "
        "anime style",
        "giant robot, walking through a city, buildings shaking, dust clouds, low angle, anime style",
        "old steam train, crossing a bridge over a valley, smoke trailing, wide shot, no humans, anime style",
        "magic book, pages turning by themselves, glowing letters floating, dark library, close up, anime style",
    ])
    + _prompts("background", "b", [
        "cherry blossom avenue, petals falling, gentle breeze, spring morning, camera panning, no humans, "
        "scenery, anime style",
        "ocean waves, crashing on rocks, sunset sky, seagulls flying, wide shot, no humans, scenery, anime style",
        "night city skyline, neon lights flickering, cars moving below, rain, camera slowly rising, scenery, "
        "anime style",
        "mountain lake, clouds drifting over peaks, reflections rippling, calm morning, wide shot, no humans, "
        "scenery, anime style",
        "cozy room interior, curtains swaying, sunlight moving across the floor, cat sleeping, afternoon, "
        "scenery, anime style",
    ])
)
