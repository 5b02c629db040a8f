"""The HTML page: the summary tables, the chart, and a grid of sample GIFs (rows: prompts,
columns: methods) with each cell's mean scores. GIFs are small previews made from the videos once
and reused while the video is unchanged."""

from __future__ import annotations

import html
import math
from pathlib import Path

import numpy as np

from ptta.evaluate.errors import describe_error
from ptta.evaluate.protocol import ordered_unique
from ptta.evaluate.report import (
    CHART_PNG, PER_VIDEO_CSV, PER_VIDEO_JSONL, SUMMARY_CSV, TABLE_MD, SummaryCell, cell_text,
)
from ptta.evaluate.scorers.base import METRICS
from ptta.video_io import read_video, write_gif

PAGE_NAME = "index.html"
GIF_DIR = "gifs"
GIF_MAX_FRAMES = 32
GIF_MAX_WIDTH = 192

STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; vertical-align: top; font-size: 13px; }
th { background: #f3f3f3; }
td.prompt { max-width: 22em; }
.scores { font-size: 11px; color: #444; }
.error { color: #b00; font-size: 11px; max-width: 16em; }
img { max-width: 100%; height: auto; }
img.sample { display: block; margin-bottom: 2px; }
"""


def make_preview(video: Path, gif: Path) -> None:
    """A looping GIF of at most 32 frames and 192 pixels wide, lasting as long as the video."""
    import cv2

    frames, fps = read_video(video)
    keep = np.linspace(0, len(frames) - 1, min(GIF_MAX_FRAMES, len(frames))).round().astype(int)
    height, width = frames.shape[1:3]
    scale = min(1.0, GIF_MAX_WIDTH / width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = [cv2.resize(frames[i], size, interpolation=cv2.INTER_AREA) for i in keep]
    write_gif(gif, small, fps=fps * len(keep) / len(frames))


def previews(rows: list[dict], out_dir: Path, per_cell: int) -> dict[str, str]:
    """GIFs for the first `per_cell` samples of every (prompt, method): video -> GIF path or error."""
    made: dict[str, str] = {}
    chosen = {}
    for row in sorted(rows, key=lambda r: r["sample"]):
        cell = chosen.setdefault((row["prompt_id"], row["method"]), [])
        if len(cell) < per_cell:
            cell.append(row)
    for cell in chosen.values():
        for row in cell:
            video = Path(row["video"]) if Path(row["video"]).is_absolute() else out_dir / row["video"]
            gif = out_dir / GIF_DIR / row["method"] / f"{row['prompt_id']}_s{row['sample']:02d}.gif"
            try:
                if not gif.is_file() or gif.stat().st_mtime < video.stat().st_mtime:
                    make_preview(video, gif)
                made[row["video"]] = gif.relative_to(out_dir).as_posix()
            except Exception as error:  # noqa: BLE001 - a broken video gets an error note instead of a GIF
                made[row["video"]] = f"error: {describe_error(error)}"
    return made


def failed_videos(rows: list[dict], gifs: dict[str, str]) -> list[str]:
    """The videos the page shows an error for: a scorer failed on them, or their preview did."""
    return [row["video"] for row in rows if row["errors"] or gifs.get(row["video"], "").startswith("error:")]


def _summary_table(cells: list[SummaryCell], methods: list[str], metrics: list[str], labels: dict[str, str]) -> str:
    lookup = {(c.method, c.metric): c for c in cells}
    head = "".join(f"<th title='{html.escape(METRICS[m].label)}'>{html.escape(METRICS[m].short)}</th>" for m in metrics)
    body = []
    for method in methods:
        tds = [f"<td>{cell_text(lookup[(method, metric)])}</td>" for metric in metrics]
        n = min((lookup[(method, metric)].n for metric in metrics), default=0)
        body.append(f"<tr><th>{html.escape(labels.get(method, method))}</th>{''.join(tds)}<td>{n}</td></tr>")
    return f"<table><tr><th></th>{head}<th title='videos scored'>n</th></tr>{''.join(body)}</table>"


def _cell_scores(rows: list[dict], metrics: list[str]) -> str:
    parts = []
    for metric in metrics:
        values = [r[metric] for r in rows if math.isfinite(r[metric])]
        if values:
            parts.append(f"{METRICS[metric].short} {np.mean(values):.2f}")
    return " · ".join(parts)


def write_page(out_dir: Path, title: str, rows: list[dict], cells: list[SummaryCell], methods: list[str],
               metrics: list[str], per_cell: int = 1, labels: dict[str, str] | None = None) -> tuple[Path, list[str]]:
    """Write index.html; returns its path and the videos it shows an error for (`failed_videos`)."""
    labels = labels or {}
    scored = [m for m in metrics if any(c.metric == m and c.n for c in cells)]
    gifs = previews(rows, out_dir, per_cell)
    files = (TABLE_MD, SUMMARY_CSV, PER_VIDEO_CSV, PER_VIDEO_JSONL)
    links = " · ".join(f"<a href='{name}'>{name}</a>" for name in files)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1><p>{links}</p>",
             "<h2>Summary (mean ± 95% interval; [low, high] where the metric's range cuts it)</h2>",
             _summary_table(cells, methods, scored, labels)]
    if (out_dir / CHART_PNG).is_file():
        parts.append(f"<img src='{CHART_PNG}' alt='bar chart of the summary'>")
    parts.append("<h2>Samples</h2><table><tr><th>prompt</th>")
    parts += [f"<th>{html.escape(labels.get(m, m))}</th>" for m in methods]
    parts.append("</tr>")
    for prompt_id in ordered_unique(r["prompt_id"] for r in rows):
        prompt_rows = [r for r in rows if r["prompt_id"] == prompt_id]
        prompt_text = html.escape(prompt_rows[0]["prompt"])
        parts.append(f"<tr><td class='prompt'><b>{html.escape(prompt_id)}</b><br>{prompt_text}</td>")
        for method in methods:
            cell = sorted((r for r in prompt_rows if r["method"] == method), key=lambda r: r["sample"])
            content = []
            for row in cell[:per_cell]:
                target = gifs.get(row["video"], "")
                if target.startswith("error:"):
                    content.append(f"<div class='error'>{html.escape(row['video'])}: {html.escape(target)}</div>")
                elif target:
                    source, title = html.escape(target), html.escape(row["video"])
                    content.append(f"<img class='sample' src='{source}' title='{title}'>")
                if row["errors"]:
                    content.append(f"<div class='error'>{html.escape(row['errors'])}</div>")
            if cell:
                content.append(f"<div class='scores'>{html.escape(_cell_scores(cell, scored))} (n={len(cell)})</div>")
            parts.append(f"<td>{''.join(content)}</td>")
        parts.append("</tr>")
    parts.append("</table></body></html>")
    page = out_dir / PAGE_NAME
    page.write_text("\n".join(parts))
    return page, failed_videos(rows, gifs)
