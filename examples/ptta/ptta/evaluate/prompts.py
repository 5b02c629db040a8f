"""Prompt sets for the evaluation: the paper's 20 prompts (`ptta.paper_prompts`) or a file.

A different set can be given as a text file (one prompt per line) or a CSV/JSONL with `prompt` and
optional `id` / `focus` columns: see `load_prompts`.
"""

from __future__ import annotations

from pathlib import Path

from ptta.paper_prompts import EvalPrompt
from ptta.tables import read_table

SAMPLES_PER_PROMPT = 10  # the paper: 10 samples per prompt, 200 videos per method


def load_prompts(path: str | Path) -> list[EvalPrompt]:
    """Prompts from a .txt (one per line, blank lines skipped), .csv or .jsonl (`prompt`, optional
    `id` and `focus`). Ids default to p01, p02, ...; they must be unique."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: is a directory; expected a prompt file (.txt, .csv or .jsonl)")
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
