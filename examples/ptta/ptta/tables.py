"""Row-oriented files shared by the stages: CSV with a header line, or JSON Lines; atomic writes."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable
from pathlib import Path


def write_text_atomic(path: Path, text: str) -> Path:
    """Write `text` to a hidden temporary sibling, then rename it over `path`.

    A killed process never leaves half a file; the process id in the temporary name keeps
    processes writing the same file from clobbering each other's temporary.
    """
    path = Path(path)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(text)
    partial.replace(path)
    return path


def jsonl_text(rows: Iterable[dict]) -> str:
    """JSON Lines: one object per line, each line ending in a newline."""
    return "".join(json.dumps(row) + "\n" for row in rows)


def read_table(path: Path, error: type[Exception] = ValueError, label: str = "") -> list[tuple[int, dict]]:
    """(line number, row) for every row of a .csv (header first) or .jsonl file; blank lines skipped.

    Problems raise `error` with `label` (default: the path) and the line number in the message.
    """
    where = label or str(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open(newline="") as handle:
            # line 1 is the header, so the first row stands on line 2
            return [(number + 2, row) for number, row in enumerate(csv.DictReader(handle))]
    if suffix == ".jsonl":
        rows = []
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise error(f"{where}:{number}: not valid JSON ({exc})") from exc
            if not isinstance(row, dict):
                raise error(f"{where}:{number}: expected a JSON object, got {type(row).__name__}")
            rows.append((number, row))
        return rows
    raise error(f"{where}: expected a .csv or .jsonl file")
