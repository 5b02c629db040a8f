"""Turn the per-video records of one or more run folders into the manifest, errors log and report."""

from __future__ import annotations

import json
from pathlib import Path

from ptta.curate.manifest import Summary, manifest_rows, summarize, write_errors_log, write_manifest
from ptta.curate.pipeline import SETTINGS_FILE
from ptta.curate.records import read_video_records
from ptta.curate.report import write_report


def stored_settings(run_dir: Path) -> dict:
    path = run_dir / SETTINGS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: not a curation output folder (no {SETTINGS_FILE})")
    return json.loads(path.read_text())


def finalize(run_dirs: list[Path], manifest_dir: Path) -> Summary:
    """Write manifest.jsonl/.parquet, errors.log and report.html into manifest_dir.

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
    for run_dir in run_dirs:
        for record in read_video_records(run_dir):
            if record["video_id"] not in seen:
                seen.add(record["video_id"])
                records_by_dir.append((run_dir, record))
    records = [record for _, record in records_by_dir]
    rows = manifest_rows(records_by_dir, manifest_dir)
    write_manifest(rows, manifest_dir)
    write_errors_log(records, manifest_dir)
    summary = summarize(records)
    write_report(rows, summary, manifest_dir, settings[0].get("theta"))
    return summary
