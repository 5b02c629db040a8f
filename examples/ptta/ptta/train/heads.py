"""The paper's sub-task heads: head weights for a clip from the words of its caption.

With `heads.from_captions`, each training clip's omega is set from its caption instead of being
mixed by the adapter: a head gets weight in proportion to how many of its tag words the caption
holds (e.g. "a girl reads books at a desk" -> female 1, object 1 -> [0, 0.5, 0.5, 0]). A caption
with no tag word trains every head equally (1/N). At sampling, `--heads 0,1,0,0` picks heads.
"""

from __future__ import annotations

import re

_WORD = re.compile(r"[a-z]+")


def caption_head_weights(caption: str, names: list[str], tags: dict[str, list[str]]) -> list[float]:
    """Per-head weights summing to 1: tag-word counts per head, normalised; uniform if none match."""
    words = _WORD.findall(caption.lower())
    counts = [sum(words.count(tag.lower()) for tag in tags.get(name, [])) for name in names]
    total = sum(counts)
    if total == 0:
        return [1.0 / len(names)] * len(names)
    return [c / total for c in counts]


def parse_head_weights(text: str, num_heads: int | None = None, source: str = "--heads") -> list[float]:
    """"0.7,0.3,0,0" -> [0.7, 0.3, 0.0, 0.0]; ValueError naming `source` if malformed."""
    try:
        weights = [float(part) for part in text.split(",")]
    except ValueError as exc:
        raise ValueError(f"{source}: expected comma-separated numbers like 0.7,0.3,0,0, got {text!r}") from exc
    if num_heads is not None and len(weights) != num_heads:
        raise ValueError(f"{source}: got {len(weights)} weights but the adapter has {num_heads} heads")
    return weights
