"""OUT/report.html: counts, score histograms and contact sheets of selected and rejected clips.

Images go to OUT/report/ as PNG files; the page links them, so it opens from disk without a server.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ptta.curate.manifest import Summary

SHEET_COLUMNS = 6
SHEET_MAX_CLIPS = 36
TILE_WIDTH = 160


def _histogram(rows: list[dict], key: str, title: str, path: Path, threshold: float | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    selected = [r[key] for r in rows if r[key] is not None and r["selected"]]
    rejected = [r[key] for r in rows if r[key] is not None and not r["selected"]]
    figure, axes = plt.subplots(figsize=(5, 3), dpi=100)
    values = selected + rejected
    bins = np.histogram_bin_edges(values, bins=30) if values else 10
    axes.hist([selected, rejected], bins=bins, stacked=True, label=["selected", "rejected"], color=["tab:green", "tab:gray"])
    if threshold is not None:
        axes.axvline(threshold, color="tab:red", linestyle="--", label=f"theta = {threshold:g}")
    axes.set_title(title)
    axes.set_ylabel("clips")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def _contact_sheet(rows: list[dict], manifest_dir: Path, path: Path) -> int:
    """A grid of thumbnails labelled with flow / aesthetic / S; returns how many tiles it holds."""
    tiles = []
    for row in rows[:SHEET_MAX_CLIPS]:
        thumbnail = manifest_dir / row["thumbnail"] if row["thumbnail"] else None
        if thumbnail is None or not thumbnail.is_file():
            continue
        image = Image.open(thumbnail).convert("RGB")
        image = image.resize((TILE_WIDTH, max(1, round(image.height * TILE_WIDTH / image.width))))
        tile = Image.new("RGB", (TILE_WIDTH, image.height + 14), "white")
        tile.paste(image, (0, 0))
        label = f"F {row['flow']:.1f}  A {row['aesthetic']:.1f}  S {row['score']:.1f}" if row["score"] is not None else "no score"
        ImageDraw.Draw(tile).text((2, image.height + 1), label, fill="black")
        tiles.append(tile)
    if not tiles:
        return 0
    height = max(t.height for t in tiles)
    rows_needed = -(-len(tiles) // SHEET_COLUMNS)
    sheet = Image.new("RGB", (SHEET_COLUMNS * (TILE_WIDTH + 4), rows_needed * (height + 4)), "white")
    for i, tile in enumerate(tiles):
        sheet.paste(tile, ((i % SHEET_COLUMNS) * (TILE_WIDTH + 4), (i // SHEET_COLUMNS) * (height + 4)))
    sheet.save(path)
    return len(tiles)


def write_report(rows: list[dict], summary: Summary, manifest_dir: Path, theta: float | None) -> Path:
    """Write report.html and its images next to the manifest; return the page's path."""
    images = manifest_dir / "report"
    images.mkdir(parents=True, exist_ok=True)
    scored = [r for r in rows if r["score"] is not None]
    _histogram(scored, "flow", "optical flow (px/s at 480p)", images / "flow.png")
    _histogram(scored, "aesthetic", "aesthetic (0-10)", images / "aesthetic.png")
    _histogram(scored, "score", "S = alpha*flow + (1-alpha)*aesthetic", images / "score.png", theta)
    # Show the clips nearest the threshold first: those say most about where the line falls.
    by_margin = sorted(scored, key=lambda r: abs(r["score"] - (theta or 0)))
    picked = _contact_sheet([r for r in by_margin if r["selected"]], manifest_dir, images / "selected.png")
    dropped = _contact_sheet([r for r in by_margin if not r["selected"]], manifest_dir, images / "rejected.png")
    failures = [r for r in rows if r["error"] is not None]

    def sheet(name: str, count: int, title: str) -> str:
        if not count:
            return f"<h2>{title}</h2><p>none</p>"
        return f'<h2>{title} ({count} nearest the threshold)</h2><img src="report/{name}.png" alt="{title}">'

    failure_rows = "".join(
        f"<tr><td>{html.escape(str(r['source']))}</td><td>{html.escape(str(r['id']))}</td>"
        f"<td>{html.escape(str(r['error']))}</td></tr>"
        for r in failures
    )
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>PTTA curation report</title>
<style>body{{font-family:sans-serif;margin:2em}} td,th{{border:1px solid #ccc;padding:2px 6px}}
table{{border-collapse:collapse}} img{{max-width:100%}}</style></head><body>
<h1>PTTA curation report</h1>
<p>{html.escape(summary.line())}</p>
<table><tr><th>videos</th><th>failed</th><th>candidate clips</th><th>selected</th><th>captioned</th></tr>
<tr><td>{summary.videos}</td><td>{summary.failed}</td><td>{summary.candidates}</td><td>{summary.selected}</td>
<td>{summary.captioned}</td></tr></table>
<h2>Scores</h2>
<img src="report/flow.png" alt="flow histogram"><img src="report/aesthetic.png" alt="aesthetic histogram">
<img src="report/score.png" alt="S histogram">
{sheet("selected", picked, "Selected clips")}
{sheet("rejected", dropped, "Rejected clips")}
<h2>Failures ({len(failures)})</h2>
<table><tr><th>source</th><th>video / clip</th><th>reason</th></tr>{failure_rows}</table>
</body></html>
"""
    path = manifest_dir / "report.html"
    path.write_text(page)
    return path
