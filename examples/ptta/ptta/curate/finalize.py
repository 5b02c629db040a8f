"""Turn the per-video records of one or more run folders into the manifest, errors log and report."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from ptta.curate.manifest import Summary, manifest_rows, summarize, write_errors_log, write_manifest
from ptta.curate.outcomes import end_notes, video_outcomes
from ptta.curate.pipeline import SETTINGS_FILE
from ptta.curate.records import OUTPUT_FOLDERS, read_video_records, video_id_of_output
from ptta.curate.report import write_report


def stored_settings(run_dir: Path) -> dict:
    path = run_dir / SETTINGS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: not a curation output folder (no {SETTINGS_FILE})")
    return json.loads(path.read_text())


def orphaned_outputs(run_dir: Path, video_ids: set[str]) -> list[Path]:
    """Files in run_dir's clips/ and thumbs/ that no record there accounts for: those of videos
    without a record, and any file not named as curation names its outputs.

    A video killed in flight leaves its finished clips behind; rerunning it deletes them, but a
    video dropped from the inputs is never rerun. They are reported, not deleted: a run still
    going in the same folder (another shard) would have the same kind of files.
    """
    files = [path for folder in OUTPUT_FOLDERS for path in sorted((run_dir / folder).glob("*"))]
    return [path for path in files if video_id_of_output(path.name) not in video_ids]


def finalize(run_dirs: list[Path], manifest_dir: Path, merged: bool = False) -> Summary:
    """Write manifest.jsonl/.parquet, errors.log and report.html into manifest_dir; the summary's
    notes say what to do next (`merged`: for `ptta curate-merge`, whose advice names it).

    All run folders must have been made with the same settings; a video curated in several of
    them (say, by overlapping shard runs) is counted once, from the first folder that has it.
    """
    settings = [stored_settings(d) for d in run_dirs]
    for run_dir, other in zip(run_dirs[1:], settings[1:]):
        changed = sorted(k for k in set(settings[0]) | set(other) if settings[0].get(k) != other.get(k))
        if changed:
            raise ValueError(f"{run_dir} was curated with other settings than {run_dirs[0]} ({', '.join(changed)})")
    seen: set[str] = set()
    records_by_dir = []
    orphans = 0
    for run_dir in run_dirs:
        run_records = read_video_records(run_dir)
        orphans += len(orphaned_outputs(run_dir, {record["video_id"] for record in run_records}))
        for record in run_records:
            if record["video_id"] not in seen:
                seen.add(record["video_id"])
                records_by_dir.append((run_dir, record))
    records = [record for _, record in records_by_dir]
    rows = manifest_rows(records_by_dir, manifest_dir)
    write_manifest(rows, manifest_dir)
    write_errors_log(records, manifest_dir)
    summary = dataclasses.replace(summarize(records), orphaned_files=orphans,
                                  notes=tuple(end_notes(records, settings[0], merged)))
    write_report(rows, summary, video_outcomes(records, settings[0]), manifest_dir, settings[0].get("theta"))
    return summary


def end_of_run_lines(summary: Summary, manifest_dir: Path) -> list[str]:
    """What `ptta curate` and `ptta curate-merge` print last: the counts and where the manifest
    and report are, the notes (no clip, no captions), where failures are listed."""
    lines = [f"{summary.line()}; manifest: {manifest_dir / 'manifest.jsonl'}; report: {manifest_dir / 'report.html'}",
             *summary.notes]
    if summary.failed:
        lines.append(f"failures are listed in {manifest_dir / 'errors.log'}")
    return lines
