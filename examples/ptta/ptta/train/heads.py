"""The paper's sub-task heads: head weights for a clip from the words of its caption.

With `heads.from_captions`, each training clip's omega is set from its caption instead of being
mixed by the adapter: a head gets weight in proportion to how many of its tag words the caption
holds (e.g. "a girl reads books at a desk" -> female 1, object 1 -> [0, 0.5, 0.5, 0]). A caption
with no tag word trains every head equally (1/N). The names and tags are recorded beside the adapter
(caption_heads.json), so sampling sets omega from each prompt by the same rule; `--heads 0,1,0,0`
overrides it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ptta.tables import write_text_atomic

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


# Beside an adapter trained with caption heads: the names and tag words, so sampling can set omega
# from a prompt by the rule that set it from captions in training.
CAPTION_HEADS_FILE = "caption_heads.json"
# In the run folder: one line per checkpoint and one at the end, how far apart the heads are.
HEADS_LOG_FILE = "heads.jsonl"


def write_caption_heads(directory: Path, names: list[str], tags: dict[str, list[str]]) -> None:
    payload = {"rule": "caption tag words per head, normalised to sum 1; uniform if none match",
               "names": list(names), "tags": {name: list(tags.get(name, [])) for name in names}}
    write_text_atomic(directory / CAPTION_HEADS_FILE, json.dumps(payload, indent=2))


def read_caption_heads(directory: Path) -> tuple[list[str], dict[str, list[str]]] | None:
    """(names, tags) recorded beside an adapter trained with caption heads, else None."""
    path = directory / CAPTION_HEADS_FILE
    if not path.is_file():
        return None
    try:
        payload = json.loads(path.read_text())
        return list(payload["names"]), dict(payload["tags"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a caption-heads file ({exc})") from exc


def head_summary(model) -> dict:
    """The summary of hydralora.head_report, plus the mean usage per head over router layers.

    A run whose heads collapsed shows `collapsed: true`, distance 0, effective rank 1.
    """
    import hydralora

    report = hydralora.head_report(model)
    summary = dict(report["summary"])
    usages = [layer["head_usage"] for layer in report["layers"].values() if layer.get("head_usage") is not None]
    if usages:
        summary["mean_head_usage"] = [sum(column) / len(usages) for column in zip(*usages)]
    return summary


def log_head_report(model, output_dir: Path, step: int) -> None:
    """Append the step's `head_summary` to output_dir/heads.jsonl (at every checkpoint)."""
    with open(output_dir / HEADS_LOG_FILE, "a") as handle:
        handle.write(json.dumps({"step": step, **head_summary(model)}) + "\n")
