"""The PTTA test prompts: 20 animation prompts in the comma-separated tag style of the paper's Fig. 2
("anime girl, reading books, desk, gentle action, soft gaze, solo, full body, anime style").

The paper does not publish its 20 prompts, only that they cover diverse animation style elements;
this set covers the four elements its HydraLoRA heads were meant for (male characters, female
characters, objects, backgrounds), five prompts each, every one with a subject, an action, a
setting, motion and framing tags, and a style tag. Each prompt names a clear motion so that
dynamic degree has something to measure.

A different set can be given as a text file (one prompt per line) or a CSV/JSONL with `prompt` and
optional `id` / `focus` columns: see `load_prompts`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ptta.tables import read_table


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

SAMPLES_PER_PROMPT = 10  # the paper: 10 samples per prompt, 200 videos per method


def load_prompts(path: str | Path) -> list[EvalPrompt]:
    """Prompts from a .txt (one per line, blank lines skipped), .csv or .jsonl (`prompt`, optional
    `id` and `focus`). Ids default to p01, p02, ...; they must be unique."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: prompt file not found")
    suffix = path.suffix.lower()
    if suffix == ".txt":
        rows = [{"prompt": line.strip()} for line in path.read_text().splitlines() if line.strip()]
    elif suffix in (".csv", ".jsonl"):
        rows = [row for _, row in read_table(path)]
    else:
        raise ValueError(f"{path}: prompt files are .txt, .csv or .jsonl")
    prompts = []
    for number, row in enumerate(rows, 1):
        text = str(row.get("prompt") or "").strip()
        if not text:
            raise ValueError(f"{path}: entry {number} has no 'prompt'")
        prompts.append(EvalPrompt(str(row.get("id") or f"p{number:02d}"), text, str(row.get("focus") or "")))
    if not prompts:
        raise ValueError(f"{path}: no prompts")
    ids = [p.id for p in prompts]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"{path}: duplicate prompt ids {duplicates}")
    return prompts
