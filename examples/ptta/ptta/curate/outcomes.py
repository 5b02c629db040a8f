"""What became of each video, and the notes a run ends with: why videos yielded no clip, and how
to caption selected clips that have no caption.

The report's table of videos and the lines `ptta curate` and `ptta curate-merge` print at the end
are both made here, from the per-video records and the folder's stored settings.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ptta.curate.records import is_caption_error

# Kinds of "yielded no clip", counted in the end-of-run note.
SHOTS_TOO_SHORT = "every shot shorter than {minimum}"
ALL_REJECTED = "every candidate clip rejected"


@dataclass(frozen=True)
class VideoOutcome:
    video_id: str
    source: str
    status: str  # "done", "failed" or "no clip" (curated, nothing selected)
    duration: float | None  # seconds, as the header states
    shots: int | None  # None: not recorded (a record written before shots were counted)
    longest_shot: float | None
    candidates: int
    selected: int
    captioned: int
    why: str | None  # the failure, or why no clip was selected
    warnings: tuple[str, ...]


def video_outcomes(records: list[dict], settings: dict) -> list[VideoOutcome]:
    outcomes = []
    for record in records:
        clips = record["clips"]
        selected = sum(clip["selected"] for clip in clips)
        if record["status"] == "failed":
            status, why = "failed", record["error"]
        elif selected == 0:
            status, why = "no clip", no_clip_reason(record, settings)[1]
        else:
            status, why = "done", None
        outcomes.append(VideoOutcome(
            video_id=record["video_id"], source=record["source"], status=status,
            duration=(record.get("info") or {}).get("duration"), shots=record.get("shots"),
            longest_shot=record.get("longest_shot_seconds"), candidates=len(clips), selected=selected,
            captioned=sum(clip["caption"] is not None for clip in clips), why=why,
            warnings=tuple(record.get("warnings", [])),
        ))  # fmt: skip
    return outcomes


def no_clip_reason(record: dict, settings: dict) -> tuple[str, str]:
    """(kind, reason) for a curated video none of whose clips was selected."""
    clips = record["clips"]
    if not clips:
        minimum = f"--min-clip-seconds {settings.get('min_clip_seconds', 3.0):g}"
        kind = SHOTS_TOO_SHORT.format(minimum=minimum)
        shots, longest = record.get("shots"), record.get("longest_shot_seconds")
        if not shots or longest is None:  # a record from before shots were counted
            return kind, kind
        if shots == 1:
            return kind, f"its one shot is {longest:.2f} s, shorter than {minimum}"
        return kind, f"all {shots} shots shorter than {minimum} (longest {longest:.2f} s)"
    if len(clips) == 1:
        return ALL_REJECTED, f"its one candidate clip rejected: {clips[0]['reason'] or 'not selected'}"
    # "S 7.31 < theta 10.0" -> "S < theta 10.0": the clip's own number out, the bar kept.
    kinds = Counter(re.sub(r" -?\d[\d.e+-]* ([<>])", r" \1", clip["reason"] or "not selected", count=1) for clip in clips)
    scores = [clip["score"] for clip in clips if clip["score"] is not None]
    best = f"; best S {max(scores):.2f}" if scores else ""
    what = ", ".join(f"{count} with {kind}" for kind, count in kinds.most_common())
    return ALL_REJECTED, f"all {len(clips)} candidate clips rejected: {what}{best}"


def end_notes(records: list[dict], settings: dict, merged: bool = False) -> list[str]:
    """What a run's last lines say besides the counts: videos that yielded no clip and why, and
    selected clips without a caption (which `ptta cache` refuses) and how to caption them."""
    notes = []
    no_clip = [(record, *no_clip_reason(record, settings)) for record in records
               if record["status"] != "failed" and not any(clip["selected"] for clip in record["clips"])]
    if len(no_clip) == 1:
        ((record, _, reason),) = no_clip
        notes.append(f"{Path(record['source']).name} yielded no clip: {reason}")
    elif no_clip:
        kinds = ", ".join(f"{n} with {kind}" for kind, n in Counter(kind for _, kind, _ in no_clip).most_common())
        record, _, example = no_clip[0]
        notes.append(f"{len(no_clip)} videos yielded no clip: {kinds}; each one's reason is in the report's table "
                     f"of videos (e.g. {Path(record['source']).name}: {example})")
    selected = [clip for record in records for clip in record["clips"] if clip["selected"] and clip["caption"] is None]
    uncaptioned = sum(clip["error"] is None for clip in selected)
    failed = sum(is_caption_error(clip["error"]) for clip in selected)
    rerun = ("rerun each shard's ptta curate (same --out) with" if merged else "rerun the same ptta curate command with")
    again = " and ptta curate-merge again" if merged else ""
    if uncaptioned:
        clips = "1 selected clip has" if uncaptioned == 1 else f"{uncaptioned} selected clips have"
        notes.append(f"{clips} no caption, and ptta cache needs captions: {rerun} --captioner sidecar (a <video>.txt "
                     "beside each video, or --caption-file CSV/JSONL) or --captioner qwen --caption-model DIR"
                     f"{again}; the captions are added to the curated folder, no video is curated again")
    if failed:
        clips = "1 selected clip" if failed == 1 else f"{failed} selected clips"
        notes.append(f"captioning failed on {clips} (reasons in errors.log): {rerun} --retry-failed{again} "
                     "once the captions can be made")
    return notes
