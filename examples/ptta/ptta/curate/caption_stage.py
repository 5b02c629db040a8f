"""Caption the selected clips after curation, resumably.

Runs in the main process (one captioning model, batched across clips of many videos). After each
batch the affected video records are rewritten, so a killed run keeps the captions it made. A
clip the captioner failed on keeps the reason in its `error`; `--retry-failed` captions it again
(say, once the missing sidecar files are there).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ptta.curate.caption import Captioner, ClipToCaption
from ptta.curate.clip_source import ClipAddress
from ptta.curate.records import CAPTION_ERROR_PREFIX, is_caption_error, write_video_record


def clips_needing_captions(records: list[dict], retry_failed: bool = False) -> list[tuple[dict, dict]]:
    """(record, clip) for selected clips (written, or with their address in the source) with no
    caption and no error (or, with `retry_failed`, a captioning error)."""
    return [(record, clip) for record in records for clip in record["clips"]
            if clip["selected"] and (clip["clip_path"] or clip.get("first_frame") is not None) and clip["caption"] is None
            and (clip["error"] is None or retry_failed and is_caption_error(clip["error"]))]


def caption_request(record: dict, clip: dict, out_dir: Path) -> ClipToCaption:
    """What a captioner reads of a clip: its file if written, else its frame range in the source."""
    if clip["clip_path"]:
        return ClipToCaption(clip["id"], Path(clip["source"]), out_dir / clip["clip_path"])
    address = ClipAddress.from_row({**clip, "source_signature": record.get("signature")})
    return ClipToCaption(clip["id"], Path(clip["source"]), None, address)


def caption_selected(records: list[dict], out_dir: Path, captioner: Captioner, batch_size: int,
                     on_batch: Callable[[int], None] = lambda n: None, retry_failed: bool = False) -> int:
    """Caption what `clips_needing_captions` finds; return how many got a caption."""
    todo = clips_needing_captions(records, retry_failed)
    for _, clip in todo:
        clip["error"] = None
    made = 0
    for begin in range(0, len(todo), batch_size):
        batch = todo[begin : begin + batch_size]
        requests = [caption_request(record, clip, out_dir) for record, clip in batch]
        try:
            captions = captioner.caption(requests)
        except (OSError, ValueError) as error:  # an unreadable clip: mark the batch, carry on
            captions = [None] * len(batch)
            for _, clip in batch:
                clip["error"] = f"{CAPTION_ERROR_PREFIX}{error}"
        for (_, clip), caption in zip(batch, captions):
            if caption:
                clip["caption"] = caption
                made += 1
            elif clip["error"] is None:
                clip["error"] = f"{CAPTION_ERROR_PREFIX}captioner {captioner.name} gave no caption"
        for record in {id(record): record for record, _ in batch}.values():
            write_video_record(out_dir, record)
        on_batch(len(batch))
    return made
