"""Reading the clips a curation manifest selected (`OUT/manifest.jsonl` from `ptta curate`).

A selected clip is either a written file (`clip_path`) or a frame range of its source (`source`,
`first_frame`, `source_frames`, ...: `ptta curate` without --write-clips), which `ptta cache`
decodes from the source (ptta.curate.clip_source); a row with both is read from the file while it
exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ptta.tables import read_table

# field names of a manifest record that training reads
ID_FIELD, CLIP_FIELD, CAPTION_FIELD, SELECTED_FIELD, ERROR_FIELD = "id", "clip_path", "caption", "selected", "error"


class ManifestError(ValueError):
    """The manifest is missing, malformed, or selects nothing usable."""


# the fields of a clip's address in its source (ptta.curate.clip_source.ClipAddress)
ADDRESS_FIELDS = ("source", "first_frame", "source_frames", "start", "end", "frames", "fps", "width", "height",
                  "source_signature", "clip_format_version")


@dataclass(frozen=True)
class SelectedClip:
    id: str
    path: Path | None  # the written clip, if any
    caption: str
    address: dict | None = None  # the manifest row's ADDRESS_FIELDS, if it has them (else None)

    def key(self) -> str:
        """What the clip's frames are read from, for the cache's fingerprint."""
        if self.path is not None:
            return str(self.path)
        a = self.address
        signature = a.get("source_signature") or {}
        return (f"{a['source']}#{a['first_frame']}+{a['source_frames']}@{a['fps']:g}:{a['width']}x{a['height']}:"
                f"{signature.get('head_tail_blake2b') or signature.get('mtime_ns')}")


def read_selected_clips(manifest: str | Path) -> list[SelectedClip]:
    """Every record with selected = true and no error, in file order; clip paths made absolute."""
    manifest = Path(manifest)
    if not manifest.is_file():
        raise ManifestError(f"manifest {manifest} does not exist (run `ptta curate` first)")
    clips, total, errors, uncaptioned = [], 0, 0, []
    for line_number, record in read_table(manifest, ManifestError):
        total += 1
        if record.get(ERROR_FIELD):
            errors += 1
            continue
        if not record.get(SELECTED_FIELD):
            continue
        if not record.get(ID_FIELD):
            raise ManifestError(f"{manifest}:{line_number}: selected record has no {ID_FIELD!r} field")
        address = None
        if all(record.get(name) is not None for name in ("source", "first_frame", "source_frames")):
            address = {name: record.get(name) for name in ADDRESS_FIELDS}
        if not record.get(CLIP_FIELD) and address is None:
            raise ManifestError(f"{manifest}:{line_number}: selected record has no {CLIP_FIELD!r} field and no "
                                "address in its source (first_frame, source_frames)")
        caption = (record.get(CAPTION_FIELD) or "").strip()
        if not caption:
            uncaptioned.append(str(record[ID_FIELD]))
            continue
        path = Path(record[CLIP_FIELD]) if record.get(CLIP_FIELD) else None
        if path is not None and not path.is_absolute():
            path = manifest.parent / path
        clips.append(SelectedClip(str(record[ID_FIELD]), path, caption, address))
    if uncaptioned:
        raise ManifestError(f"{manifest}: {len(uncaptioned)} selected clip(s) have no caption, e.g. {uncaptioned[:5]}; "
                            f"caption them first: rerun the same `ptta curate` into that folder with --captioner sidecar "
                            f"(<video>.txt files or --caption-file) or --captioner qwen --caption-model DIR; it "
                            f"curates nothing again and only adds the captions")
    if not clips:
        raise ManifestError(f"{manifest}: no selected clips to train on ({total} records, {errors} with errors)")
    ids = [c.id for c in clips]
    if len(set(ids)) != len(ids):
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        raise ManifestError(f"{manifest}: duplicate clip ids {duplicates[:5]}")
    return clips
