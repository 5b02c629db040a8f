"""Reading the clips a curation manifest selected (`OUT/manifest.jsonl` from `ptta curate`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ptta.tables import read_table

# field names of a manifest record that training reads
ID_FIELD, CLIP_FIELD, CAPTION_FIELD, SELECTED_FIELD, ERROR_FIELD = "id", "clip_path", "caption", "selected", "error"


class ManifestError(ValueError):
    """The manifest is missing, malformed, or selects nothing usable."""


@dataclass(frozen=True)
class SelectedClip:
    id: str
    path: Path
    caption: str


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
        for name in (ID_FIELD, CLIP_FIELD):
            if not record.get(name):
                raise ManifestError(f"{manifest}:{line_number}: selected record has no {name!r} field")
        caption = (record.get(CAPTION_FIELD) or "").strip()
        if not caption:
            uncaptioned.append(str(record[ID_FIELD]))
            continue
        path = Path(record[CLIP_FIELD])
        clips.append(SelectedClip(str(record[ID_FIELD]), path if path.is_absolute() else manifest.parent / path, caption))
    if uncaptioned:
        raise ManifestError(f"{manifest}: {len(uncaptioned)} selected clip(s) have no caption, e.g. {uncaptioned[:5]}; "
                            f"caption them (ptta curate) before caching")
    if not clips:
        raise ManifestError(f"{manifest}: no selected clips to train on ({total} records, {errors} with errors)")
    ids = [c.id for c in clips]
    if len(set(ids)) != len(ids):
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        raise ManifestError(f"{manifest}: duplicate clip ids {duplicates[:5]}")
    return clips
