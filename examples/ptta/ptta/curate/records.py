"""Per-video result records: the unit of resumption.

Each finished video (curated or failed) gets OUT/videos/<video_id>.json, written atomically. A
rerun skips videos whose record exists and whose file is unchanged, so a killed run loses only
the videos in flight. The manifest is rebuilt from these records.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from ptta.curate.clips import ClipSpan
from ptta.curate.probe import VideoInfo
from ptta.curate.settings import CLIP_FORMAT_VERSION
from ptta.tables import write_text_atomic

RECORDS_DIR = "videos"
# Where a video's files go besides its record: clips/<video id>-<number>.mp4 (.partial.mp4 while
# written) and thumbs/<video id>-<number>.jpg.
OUTPUT_FOLDERS = ("clips", "thumbs")
# A video id ends in 8 hex digits (probe.video_id) and a clip number has 4 or more digits, so a
# name has exactly one reading even when one input's id begins with another's (a.mp4 and
# a-bd87e788-0000.mp4: a-bd87e788-0000.mp4 is a clip of the first, a-bd87e788-0000-<hash>-0000.mp4
# one of the second).
_OUTPUT_NAME = re.compile(r"^(?P<video_id>.+-[0-9a-f]{8})-\d{4,}(\.partial)?\.(mp4|jpg)$")

# A clip's `error` that the captioner set (the clip itself is fine): --retry-failed captions it again.
CAPTION_ERROR_PREFIX = "captioning failed: "


def is_caption_error(error: str | None) -> bool:
    return error is not None and error.startswith(CAPTION_ERROR_PREFIX)


def video_id_of_output(file_name: str) -> str | None:
    """The id of the video a file in clips/ or thumbs/ belongs to; None for a name curation does not write."""
    match = _OUTPUT_NAME.match(file_name)
    return None if match is None else match["video_id"]


# What is_finished compares: a file whose size or modification time changed is curated again.
RESUME_SIGNATURE_KEYS = ("size", "mtime_ns")
# The bytes hashed at each end of a source for its signature.
SIGNATURE_END_BYTES = 1 << 20


def file_signature(path: str | Path) -> dict:
    """Size and modification time: a changed file is curated again."""
    stat = Path(path).stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def source_signature(path: str | Path) -> dict:
    """file_signature plus a BLAKE2b hash of the first and last MiB: cheap (2 MiB read whatever the
    file's size), and a re-encoded, cut or replaced file differs in it. Clips that are frame ranges
    of their source are read back only from a source with the same size and hash."""
    path = Path(path)
    signature = file_signature(path)
    digest = hashlib.blake2b(digest_size=16)
    with path.open("rb") as handle:
        digest.update(handle.read(SIGNATURE_END_BYTES))
        if signature["size"] > SIGNATURE_END_BYTES:
            handle.seek(max(SIGNATURE_END_BYTES, signature["size"] - SIGNATURE_END_BYTES))
            digest.update(handle.read(SIGNATURE_END_BYTES))
    return {**signature, "head_tail_blake2b": digest.hexdigest()}


def clip_record(clip_id: str, vid: str, source: Path, span: ClipSpan, frames: int, fps: float,
                size: tuple[int, int], flow: float | None, aesthetic: float, score: float | None,
                selected: bool, reason: str | None, clip_path: str | None, thumbnail: str) -> dict:
    return {
        "id": clip_id,
        "video_id": vid,
        "source": str(source),
        "shot": span.shot,
        "start": round(span.start, 6),
        "end": round(span.end, 6),
        # The clip's exact address in its source: `source_frames` frames from the `first_frame`-th
        # (0-based, in the order and with the frames the curation's decode gives: source.py),
        # resampled and resized as written clips are (clip_writer.output_frames). It holds for
        # this clip format only: another one turns or times frames differently.
        "first_frame": span.first,
        "source_frames": span.last - span.first + 1,
        "clip_format_version": CLIP_FORMAT_VERSION,
        "frames": frames,
        "fps": fps,
        "width": size[0],
        "height": size[1],
        "flow": flow,
        "aesthetic": aesthetic,
        "score": score,
        "selected": selected,
        "reason": reason,
        "clip_path": clip_path,
        "thumbnail": thumbnail,
        "caption": None,
        "error": None,
    }


def video_record(path: Path, vid: str, info: VideoInfo | None, clips: list[dict], error: str | None,
                 warnings: list[str], frames_decoded: int, seconds: float) -> dict:
    return {
        "video_id": vid,
        "source": str(path),
        "signature": source_signature(path),
        "status": "failed" if error else "done",
        "error": error,
        "warnings": warnings,
        "info": info.to_dict() if info else None,
        "frames_decoded": frames_decoded,
        "processing_seconds": round(seconds, 3),
        "clips": clips,
    }


def record_path(out_dir: Path, vid: str) -> Path:
    return out_dir / RECORDS_DIR / f"{vid}.json"


def write_video_record(out_dir: Path, record: dict) -> None:
    """Write atomically (temporary file + rename), so a killed run never leaves half a record."""
    path = record_path(out_dir, record["video_id"])
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(record, indent=1))


def read_video_records(out_dir: Path) -> list[dict]:
    """All records under out_dir/videos, sorted by video id."""
    records = []
    for path in sorted((Path(out_dir) / RECORDS_DIR).glob("*.json")):
        try:
            records.append(json.loads(path.read_text()))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{path}: unreadable video record ({error}); delete it to curate that video again") from None
    return records


def is_finished(out_dir: Path, source: Path, vid: str, retry_failed: bool) -> bool:
    """Whether a rerun can skip `source`: a record exists for this very file (and it did not fail,
    when failures are to be retried)."""
    path = record_path(out_dir, vid)
    if not path.is_file():
        return False
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    stored, current = record.get("signature") or {}, file_signature(source)
    if any(stored.get(key) != current[key] for key in RESUME_SIGNATURE_KEYS):
        return False
    return not (retry_failed and record.get("status") == "failed")
