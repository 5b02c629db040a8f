"""`ptta curate --write-clips` over a folder curated without it: write the selected clips still missing.

Each clip is read from its source as its manifest address says (clip_source.SourceClipReader: the
frames the curation would have handed the encoder, the decoder's own frames where nothing is
resized) and encoded by the same function and encoder settings as during curation, so the file is
the one a run with --write-clips from the start would have written. A clip that cannot be written
(its source changed, the encoder failed) is marked as a clip whose writing failed and its video as
failed, as during curation, so `--retry-failed` curates that video again.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ptta.curate.clip_source import ClipAddress, ClipSourceError, SourceClipReader
from ptta.curate.clip_writer import write_clip
from ptta.curate.records import is_caption_error, write_video_record
from ptta.curate.settings import CurateSettings


def clips_to_write(records: list[dict]) -> list[tuple[dict, dict]]:
    """(record, clip) for selected clips with an address and no file, and no error but a caption's."""
    return [(record, clip) for record in records for clip in record["clips"]
            if clip["selected"] and not clip["clip_path"] and clip.get("first_frame") is not None
            and (clip["error"] is None or is_caption_error(clip["error"]))]


def write_missing_clips(records: list[dict], out_dir: Path, settings: CurateSettings,
                        on_clip: Callable[[], None] = lambda: None) -> int:
    """Write what clips_to_write finds; return how many could not be written."""
    failed = 0
    todo = clips_to_write(records)
    by_record: dict[int, tuple[dict, list[dict]]] = {}
    for record, clip in todo:
        by_record.setdefault(id(record), (record, []))[1].append(clip)
    with SourceClipReader() as reader:
        for record, clips in by_record.values():
            for clip in clips:
                address = ClipAddress.from_row({**clip, "source_signature": record.get("signature")})
                try:
                    frames = reader.read(address, out_size=settings.out_size)
                    clip["clip_path"] = write_clip(out_dir, clip["id"], frames, clip["fps"], settings.encoder,
                                                   settings.encoder_open_options())
                except Exception as error:  # noqa: BLE001 - recorded like a failed write during curation
                    detail = str(error) if isinstance(error, ClipSourceError) else f"{type(error).__name__}: {error}"
                    reason = f"writing the clip failed: {detail}"
                    clip["error"] = reason
                    record["status"], record["error"] = "failed", f"{clip['id']}: {reason}"
                    failed += 1
                on_clip()
            write_video_record(out_dir, record)
    return failed
