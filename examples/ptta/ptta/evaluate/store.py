"""The score store: one JSON line per (video, scorer) result, appended and flushed as it is made.

A result is keyed by the video file's content digest and the scorer's signature, so a rerun
reuses every stored success (even after the folder moved or was renamed) and recomputes only
what is missing, failed, or was made with other settings. Later lines win over earlier ones.
A line cut short by a crash is skipped on reading; nothing before it is lost.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

STORE_NAME = "scores.jsonl"


def file_digest(path: Path) -> str | None:
    """SHA-1 of the file's bytes, or None when it cannot be read."""
    digest = hashlib.sha1()
    try:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


class ScoreStore:
    """Stored scores of one evaluation folder."""

    def __init__(self, path: Path):
        self.path = path
        self.entries: dict[tuple[str, str], dict] = {}
        self.skipped_lines = 0
        if path.is_file():
            for line in path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                    self.entries[(entry["file"], entry["signature"])] = entry
                except (json.JSONDecodeError, KeyError, TypeError):
                    self.skipped_lines += 1

    @staticmethod
    def file_key(video: Path, digest: str | None) -> str:
        # An unreadable file has no digest; its errors are keyed by path and never reused.
        return digest if digest is not None else f"unreadable:{video}"

    def get(self, file_key: str, signature: str) -> dict | None:
        """The latest entry (success or error) for this file and scorer signature."""
        return self.entries.get((file_key, signature))

    def has_success(self, file_key: str, signature: str) -> bool:
        entry = self.get(file_key, signature)
        return entry is not None and entry["status"] == "ok"

    def add(self, video: Path, file_key: str, scorer: str, signature: str, *, values: dict | None = None,
            details: dict | None = None, error: str | None = None, seconds: float = 0.0) -> dict:
        entry = {
            "video": str(video), "file": file_key, "scorer": scorer, "signature": signature,
            "status": "error" if error is not None else "ok", "values": values or {}, "details": details or {},
            "error": error, "seconds": round(seconds, 3), "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as handle:
            handle.write(json.dumps(entry) + "\n")
            handle.flush()
        self.entries[(file_key, signature)] = entry
        return entry
