"""OUT/report.html: counts, a table of videos (why one yielded no clip), score histograms, the
selected clips with their captions, and contact sheets of the clips nearest the threshold.

Images go to OUT/report/ as PNG files; the page links them, the clips and the thumbnails by paths
relative to itself, so it opens from disk without a server.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ptta.curate.manifest import Summary
from ptta.curate.outcomes import VideoOutcome

SHEET_COLUMNS = 6
SHEET_MAX_CLIPS = 36
TILE_WIDTH = 160
# Selected clips shown with their captions (the manifest lists them all).
GALLERY_MAX_CLIPS = 48
PREVIEW_WIDTH = 240
# The order of the table of videos: what needs a look first.
STATUS_ORDER = {"failed": 0, "no clip": 1, "done": 2}


def _histogram(rows: list[dict], key: str, title: str, path: Path, threshold: float | None = None) -> bool:
    """Plot `key` of the clips, selected and rejected stacked; False (no file) when no clip has it."""
    selected = [r[key] for r in rows if r[key] is not None and r["selected"]]
    rejected = [r[key] for r in rows if r[key] is not None and not r["selected"]]
    values = selected + rejected
    if not values:
        path.unlink(missing_ok=True)  # an earlier report's plot would show clips that are not there
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    figure, axes = plt.subplots(figsize=(6, 3), dpi=100)
    bins = np.histogram_bin_edges(values, bins=min(30, max(5, len(values))))
    axes.hist([selected, rejected], bins=bins, stacked=True, label=["selected", "rejected"], color=["tab:green", "tab:gray"])
    if threshold is not None:
        axes.axvline(threshold, color="tab:red", linestyle="--", label=f"theta = {threshold:g}")
    axes.set_title(title)
    axes.set_ylabel("clips")
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts: no 0.2 of a clip
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the bars, never on them
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return True


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


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.1f} s"


def _videos_table(videos: list[VideoOutcome]) -> str:
    """One row per video, those that failed or yielded no clip first."""
    cells = []
    for video in sorted(videos, key=lambda v: (STATUS_ORDER[v.status], not v.warnings, v.source)):
        shots = ""  # not counted: a video that failed before its frames were read, or an older record
        if video.shots:
            shots = f"{video.shots} (longest {video.longest_shot:.2f} s)"
        cells.append(
            f'<tr class="{video.status.replace(" ", "-")}"><td title="{html.escape(video.source)}">'
            f"{html.escape(Path(video.source).name)}</td><td>{video.status}</td><td>{_seconds(video.duration)}</td>"
            f"<td>{shots}</td><td>{video.candidates}</td><td>{video.selected}</td><td>{video.captioned}</td>"
            f"<td>{html.escape(video.why or '')}</td><td>{html.escape('; '.join(video.warnings))}</td></tr>"
        )
    return ('<div class="scroll"><table><tr><th>video</th><th>status</th><th>length</th><th>shots</th>'
            "<th>candidate clips</th><th>selected</th><th>captioned</th><th>why no clip / failure</th>"
            f"<th>warnings</th></tr>{''.join(cells)}</table></div>")


def _preview(row: dict, manifest_dir: Path) -> str:
    """The clip with its thumbnail as the poster: it plays while the pointer is on it, and a click
    opens the file in the browser's player; the thumbnail alone when the clip has no file."""
    thumbnail = html.escape(row["thumbnail"] or "", quote=True)
    clip = row["clip_path"]
    if clip and (manifest_dir / clip).is_file():
        source = html.escape(clip, quote=True)
        return (f'<a href="{source}" title="plays while the pointer is on it; click to open"><video src="{source}" '
                f'poster="{thumbnail}" width="{PREVIEW_WIDTH}" muted loop playsinline preload="none" '
                'onmouseenter="this.play()" onmouseleave="this.pause()"></video></a>')
    if row["thumbnail"] and (manifest_dir / row["thumbnail"]).is_file():
        return f'<img src="{thumbnail}" width="{PREVIEW_WIDTH}" alt="thumbnail of {html.escape(row["id"])}">'
    return '<div class="missing">no clip file or thumbnail</div>'


def _gallery(rows: list[dict], manifest_dir: Path) -> str:
    """The selected clips (in manifest order, at most GALLERY_MAX_CLIPS) with their captions beside them."""
    selected = [r for r in rows if r["selected"]]
    if not selected:
        return "<h2>Selected clips</h2><p>none</p>"
    shown = selected[:GALLERY_MAX_CLIPS]
    which = "" if len(shown) == len(selected) else f", the first {len(shown)} shown (all are in manifest.jsonl)"
    cards = []
    for row in shown:
        caption = (f'<p class="caption">{html.escape(row["caption"])}</p>' if row["caption"] is not None
                   else '<p class="caption none">no caption</p>')
        scores = f"flow {row['flow']:.1f}, aesthetic {row['aesthetic']:.1f}, S {row['score']:.1f}"
        cards.append(
            f'<div class="clip">{_preview(row, manifest_dir)}<div>{caption}<p class="meta">{html.escape(row["id"])}'
            f"<br>{html.escape(Path(row['source']).name)}, {row['start']:.2f}-{row['end']:.2f} s<br>{scores}</p>"
            "</div></div>"
        )
    return (f"<h2>Selected clips ({len(selected)}{which})</h2><p class=\"meta\">A clip plays while the pointer is on "
            f"it; a click opens its file.</p><div class=\"clips\">{''.join(cards)}</div>")


def write_report(rows: list[dict], summary: Summary, videos: list[VideoOutcome], manifest_dir: Path,
                 theta: float | None) -> Path:
    """Write report.html and its images next to the manifest; return the page's path."""
    images = manifest_dir / "report"
    images.mkdir(parents=True, exist_ok=True)
    scored = [r for r in rows if r["score"] is not None]
    plots = []
    for key, title, threshold in (("flow", "optical flow (px/s at 480p)", None), ("aesthetic", "aesthetic (0-10)", None),
                                  ("score", "S = alpha*flow + (1-alpha)*aesthetic", theta)):
        if _histogram(scored, key, title, images / f"{key}.png", threshold):
            plots.append(f'<img src="report/{key}.png" alt="{key} histogram">')
    if not plots:
        plots.append('<p class="empty">no clips: no video yielded a candidate clip, so there is nothing to plot '
                     "(the table of videos says why)</p>")
    # Show the clips nearest the threshold first: those say most about where the line falls.
    by_margin = sorted(scored, key=lambda r: abs(r["score"] - (theta or 0)))
    picked = _contact_sheet([r for r in by_margin if r["selected"]], manifest_dir, images / "selected.png")
    dropped = _contact_sheet([r for r in by_margin if not r["selected"]], manifest_dir, images / "rejected.png")
    failures = [r for r in rows if r["error"] is not None]

    def sheet(name: str, count: int, title: str) -> str:
        if not count:
            (images / f"{name}.png").unlink(missing_ok=True)
            return f"<h3>{title}</h3><p>none</p>"
        return f'<h3>{title} ({count} nearest the threshold)</h3><img src="report/{name}.png" alt="{title}">'

    nearest = (f'<h2>Nearest the threshold</h2>{sheet("selected", picked, "Selected clips")}'
               f'{sheet("rejected", dropped, "Rejected clips")}') if scored else ""
    failure_rows = "".join(
        f"<tr><td>{html.escape(str(r['source']))}</td><td>{html.escape(str(r['id']))}</td>"
        f"<td>{html.escape(str(r['error']))}</td></tr>"
        for r in failures
    )
    failure_table = (f"<table><tr><th>source</th><th>video / clip</th><th>reason</th></tr>{failure_rows}</table>"
                     if failures else "<p>none</p>")
    notes = "".join(f"<li>{html.escape(note)}</li>" for note in summary.notes)
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>PTTA curation report</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1400px}} td,th{{border:1px solid #ccc;padding:2px 6px}}
table{{border-collapse:collapse}} th{{background:#f3f3f3;position:sticky;top:0}} img,video{{max-width:100%}}
.notes li{{background:#fff4ce;padding:4px 8px;margin:4px 0;list-style:none}} .notes{{padding:0}}
tr.failed td{{background:#fde2e1}} tr.no-clip td{{background:#fff4ce}}
.scroll{{max-height:32em;overflow:auto;display:inline-block}} .empty{{color:#666;font-style:italic}}
.clips{{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:12px}}
.clip{{display:flex;gap:10px;border:1px solid #ddd;padding:6px}} .clip p{{margin:0 0 6px 0}}
.caption{{font-size:15px}} .caption.none{{color:#b00;font-style:italic}} .meta{{color:#666;font-size:12px}}
.missing{{width:{PREVIEW_WIDTH}px;color:#b00}}</style></head><body>
<h1>PTTA curation report</h1>
<p>{html.escape(summary.line())}</p>
<ul class="notes">{notes}</ul>
<table><tr><th>videos</th><th>failed</th><th>yielded no clip</th><th>candidate clips</th><th>selected</th>
<th>captioned</th></tr><tr><td>{summary.videos}</td><td>{summary.failed}</td><td>{summary.no_clip}</td>
<td>{summary.candidates}</td><td>{summary.selected}</td><td>{summary.captioned}</td></tr></table>
<h2 id="videos">Videos ({len(videos)})</h2>
{_videos_table(videos)}
<h2>Scores</h2>
{"".join(plots)}
{_gallery(rows, manifest_dir)}
{nearest}
<h2>Failures ({len(failures)})</h2>
{failure_table}
</body></html>
"""
    path = manifest_dir / "report.html"
    path.write_text(page)
    return path
