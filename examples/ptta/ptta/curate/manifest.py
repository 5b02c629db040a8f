"""Build OUT/manifest.jsonl, OUT/manifest.parquet and OUT/errors.log from the per-video records.

One manifest row per candidate clip, plus one row per failed video (clip fields empty, `error`
set), so every input is accounted for. Clip and thumbnail paths are relative to the manifest.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ptta.curate.records import is_caption_error
from ptta.tables import jsonl_text, write_text_atomic

MANIFEST_COLUMNS = (
    "id", "video_id", "source", "shot", "start", "end", "first_frame", "source_frames", "frames", "fps", "width",
    "height", "flow", "aesthetic", "score", "selected", "reason", "clip_path", "thumbnail", "caption", "error",
    "warnings", "source_signature", "clip_format_version",
)  # fmt: skip


@dataclass(frozen=True)
class Summary:
    videos: int
    failed: int
    warned: int
    candidates: int
    selected: int
    captioned: int
    caption_failed: int = 0
    orphaned_files: int = 0  # in clips/ and thumbs/, of videos with no record
    no_clip: int = 0  # videos curated without a failure of which no clip was selected
    notes: tuple[str, ...] = ()  # printed after the line (outcomes.end_notes): why no clip, captions missing

    def line(self) -> str:
        failed_captions = f" ({self.caption_failed} failed: see errors.log)" if self.caption_failed else ""
        orphans = (f"; {self.orphaned_files} files in clips/ or thumbs/ belong to videos a killed run left "
                   "unfinished and no run curated again (not in the manifest)") if self.orphaned_files else ""
        return (
            f"{_count(self.videos, 'video')} ({self.failed} failed, {self.no_clip} yielded no clip, {self.warned} with "
            f"warnings), {_count(self.candidates, 'candidate clip')}, {self.selected} selected, {self.captioned} "
            f"captioned{failed_captions}"
            f"{orphans}"
        )


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def rebase(relative: str | None, record_dir: Path, manifest_dir: Path) -> str | None:
    """A path stored relative to the run that made it, made relative to the manifest's folder."""
    if relative is None:
        return None
    return Path(os.path.relpath(Path(record_dir) / relative, manifest_dir)).as_posix()


def manifest_rows(records_by_dir: list[tuple[Path, dict]], manifest_dir: Path) -> list[dict]:
    rows = []
    for record_dir, record in records_by_dir:
        # The video's warnings (variable frame rate, damaged stretches, ...) on each of its rows.
        warnings = "; ".join(record.get("warnings", [])) or None
        for clip in record["clips"]:
            row = {key: clip.get(key) for key in MANIFEST_COLUMNS}
            row["clip_path"] = rebase(clip["clip_path"], record_dir, manifest_dir)
            row["thumbnail"] = rebase(clip["thumbnail"], record_dir, manifest_dir)
            row["warnings"] = warnings
            row["source_signature"] = record.get("signature")  # a clip not written is read from this very file
            rows.append(row)
        if record["status"] == "failed":
            row = dict.fromkeys(MANIFEST_COLUMNS)
            row.update(id=record["video_id"], video_id=record["video_id"], source=record["source"], selected=False,
                       error=record["error"], warnings=warnings)
            rows.append(row)
    return rows


def write_manifest(rows: list[dict], manifest_dir: Path) -> None:
    """manifest.jsonl (the reference) and manifest.parquet (the same rows), each written atomically."""
    import pandas as pd

    manifest_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(manifest_dir / "manifest.jsonl", jsonl_text(rows))
    frame = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))
    for column in ("flow", "aesthetic", "score", "start", "end", "fps"):
        frame[column] = frame[column].astype("float64")
    for column in ("shot", "first_frame", "source_frames", "frames", "width", "height", "clip_format_version"):
        frame[column] = frame[column].astype("Int64")
    frame["selected"] = frame["selected"].astype("boolean")
    parquet = manifest_dir / "manifest.parquet"
    partial = parquet.with_name(".manifest.parquet.partial")
    frame.to_parquet(partial, index=False)
    partial.replace(parquet)


def write_errors_log(records: list[dict], manifest_dir: Path) -> None:
    """One line per failure or warning: source path, TAB, FAILED/WARNING/CAPTION FAILED: reason."""
    lines = []
    for record in records:
        if record["status"] == "failed":
            lines.append(f"{record['source']}\tFAILED: {record['error']}")
        lines += [f"{record['source']}\tWARNING: {warning}" for warning in record.get("warnings", [])]
        lines += [f"{record['source']}\tCAPTION FAILED: {clip['id']}: {clip['error']}" for clip in record["clips"]
                  if is_caption_error(clip["error"])]
    (manifest_dir / "errors.log").write_text("".join(line + "\n" for line in lines))


def summarize(records: list[dict]) -> Summary:
    clips = [clip for record in records for clip in record["clips"]]
    return Summary(
        videos=len(records),
        failed=sum(record["status"] == "failed" for record in records),
        no_clip=sum(record["status"] != "failed" and not any(clip["selected"] for clip in record["clips"])
                    for record in records),
        warned=sum(bool(record.get("warnings")) for record in records),
        candidates=len(clips),
        selected=sum(clip["selected"] for clip in clips),
        captioned=sum(clip["caption"] is not None for clip in clips),
        caption_failed=sum(is_caption_error(clip["error"]) for clip in clips),
    )
