"""Reports from the score store: per-video CSV/JSONL, a mean +- 95% interval summary per method and
metric, Markdown tables in the paper's layouts, and a bar chart.

The interval is Student's t: mean +- t(0.975, n - 1) * sd / sqrt(n), over the videos of a method
taken as independent samples (the paper reports means only), clipped to the values the metric can
take (motion magnitude is never negative, a 0-1 metric never above 1), so with few videos it can
be lopsided. Videos whose scoring failed are left out of the means and counted in `missing`.
"""

from __future__ import annotations

import csv
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ptta.evaluate.errors import spell_out
from ptta.evaluate.protocol import VideoRecord
from ptta.evaluate.scorers.base import METRICS, PAPER_METRICS, Scorer
from ptta.evaluate.store import ScoreStore
from ptta.tables import jsonl_text

PER_VIDEO_CSV = "per_video.csv"
PER_VIDEO_JSONL = "per_video.jsonl"
SUMMARY_CSV = "summary.csv"
TABLE_MD = "table.md"
CHART_PNG = "scores.png"
ROW_COLUMNS = ("video", "method", "prompt_id", "sample", "seed", "prompt")


@dataclass(frozen=True)
class SummaryCell:
    method: str
    metric: str
    n: int
    mean: float
    sd: float
    ci95: float  # half-width of the 95% interval; nan below 2 videos
    missing: int
    low: float = math.nan  # the interval's ends, clipped to the metric's range; nan below 2 videos
    high: float = math.nan

    @property
    def clipped(self) -> bool:
        """True when the metric's range cut the interval (its ends are then not mean -+ ci95)."""
        return not math.isnan(self.ci95) and (self.low > self.mean - self.ci95 or self.high < self.mean + self.ci95)


def display_path(path: Path, base: Path) -> str:
    return path.relative_to(base).as_posix() if path.is_relative_to(base) else str(path)


def display_order(metrics: list[str]) -> list[str]:
    """The paper's four VideoScore aspects first (in its column order), then the rest as given."""
    paper = [m for m in PAPER_METRICS if m in metrics]
    return paper + [m for m in metrics if m not in paper]


def per_video_rows(records: list[VideoRecord], scorers: list[Scorer], store: ScoreStore, keys: dict[Path, str],
                   base: Path) -> list[dict]:
    """One row per video: its metadata, every metric (nan where scoring failed), its errors, and the
    scorers' details (raw answers, frame indices) under "details"."""
    rows = []
    for record in records:
        row = {"video": display_path(record.video, base), "method": record.method, "prompt_id": record.prompt_id,
               "sample": record.sample, "seed": record.seed, "prompt": record.prompt}
        errors, details = [], {}
        for scorer in scorers:
            entry = store.get(keys[record.video], scorer.signature)
            ok = entry is not None and entry["status"] == "ok"
            for metric in scorer.metrics:
                row[metric] = float(entry["values"][metric]) if ok else math.nan
            if ok:
                details[scorer.name] = entry["details"]
            else:
                errors.append(f"{scorer.name}: {spell_out(entry['error']) if entry else 'not scored'}")
        row["errors"] = "; ".join(errors)
        row["details"] = details
        rows.append(row)
    return rows


def write_per_video(rows: list[dict], metrics: list[str], out_dir: Path) -> None:
    """per_video.csv (an empty cell where a metric failed or a seed is unknown) and per_video.jsonl
    (null there)."""
    clean = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()} for row in rows]
    with (out_dir / PER_VIDEO_CSV).open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*ROW_COLUMNS, *metrics, "errors"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(clean)  # csv writes None as an empty cell
    (out_dir / PER_VIDEO_JSONL).write_text(jsonl_text(clean))


def confidence_half_width(values: np.ndarray) -> float:
    from scipy import stats

    if len(values) < 2:
        return math.nan
    return float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values)))


def clipped_interval(metric: str, mean: float, half_width: float) -> tuple[float, float]:
    """mean -+ half_width, each end clipped to the metric's range (`MetricInfo.bounds`)."""
    low, high = mean - half_width, mean + half_width
    lower, upper = METRICS[metric].bounds
    if lower is not None:
        low, high = max(low, float(lower)), max(high, float(lower))
    if upper is not None:
        low, high = min(low, float(upper)), min(high, float(upper))
    return low, high


def summarize(rows: list[dict], methods: list[str], metrics: list[str]) -> list[SummaryCell]:
    cells = []
    for method in methods:
        method_rows = [row for row in rows if row["method"] == method]
        for metric in metrics:
            values = np.array([row[metric] for row in method_rows if math.isfinite(row[metric])], dtype=float)
            mean = float(values.mean()) if len(values) else math.nan
            half_width = confidence_half_width(values)
            low, high = clipped_interval(metric, mean, half_width) if len(values) > 1 else (math.nan, math.nan)
            cells.append(SummaryCell(
                method, metric, len(values), mean,
                float(values.std(ddof=1)) if len(values) > 1 else math.nan,
                half_width, len(method_rows) - len(values), low, high))
    return cells


def write_summary(cells: list[SummaryCell], path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*SummaryCell.__dataclass_fields__, "short"])
        writer.writeheader()
        for cell in cells:
            writer.writerow({**asdict(cell), "short": METRICS[cell.metric].short})


def cell_text(cell: SummaryCell) -> str:
    """"mean ± half-width"; "mean [low, high]" when the metric's range clipped the interval; the mean
    alone below 2 videos; "n/a" when nothing was scored."""
    if cell.n == 0:
        return "n/a"
    if math.isnan(cell.ci95):
        return f"{cell.mean:.3f}"
    if cell.clipped:
        return f"{cell.mean:.3f} [{cell.low:.3f}, {cell.high:.3f}]"
    return f"{cell.mean:.3f} ± {cell.ci95:.3f}"


def _table(cells: list[SummaryCell], methods: list[str], metrics: list[str], row_header: str,
           row_labels: dict[str, str]) -> list[str]:
    lookup = {(c.method, c.metric): c for c in cells}
    arrows = {True: "↑", False: "↓"}
    header = [row_header, *(f"{METRICS[m].short} {arrows[METRICS[m].higher_is_better]}" for m in metrics), "n"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method in methods:
        n = min(lookup[(method, m)].n for m in metrics)
        cells_text = [cell_text(lookup[(method, m)]) for m in metrics]
        lines.append("| " + " | ".join([row_labels.get(method, method), *cells_text, str(n)]) + " |")
    return lines


def markdown_report(cells: list[SummaryCell], methods: list[str], metrics: list[str], title: str,
                    row_header: str = "Methods", row_labels: dict[str, str] | None = None) -> str:
    """The paper-layout VideoScore table (VSVQ, VSTC, VSDD, VSTVA) and a second table for every
    other metric, each cell mean ± 95% half-width; `n` is the fewest videos scored in the row."""
    row_labels = row_labels or {}
    scored = [m for m in metrics if any(c.metric == m and c.n for c in cells)]
    paper = [m for m in PAPER_METRICS if m in scored]
    other = [m for m in scored if m not in paper]
    lines = [f"# {title}", ""]
    if paper:
        lines += ["## VideoScore (the paper's metrics)", "", *_table(cells, methods, paper, row_header, row_labels), ""]
    if other:
        lines += ["## Other metrics (not VideoScore; see docs/ptta-evaluation.md)", "",
                  *_table(cells, methods, other, row_header, row_labels), ""]
    if not scored:
        lines += ["No video was scored successfully; see the errors column of per_video.csv.", ""]
    lines += ["Cells: mean ± half-width of the 95% Student-t interval over the videos of each row; "
              "mean [low, high] where the metric's range cuts the interval; n: videos scored.",
              "Legend: " + "; ".join(f"{METRICS[m].short} = {METRICS[m].label} ({METRICS[m].scale})" for m in scored),
              ""]
    return "\n".join(lines)


def bar_chart(cells: list[SummaryCell], methods: list[str], metrics: list[str], path: Path,
              row_labels: dict[str, str] | None = None) -> Path | None:
    """One panel per metric, one bar per method labelled with its n, the 95% intervals (clipped to
    the metric's range) as error bars; at most 4 panels a row, 960 pixels wide. None if nothing scored."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    row_labels = row_labels or {}
    lookup = {(c.method, c.metric): c for c in cells}
    shown = [m for m in metrics if any(lookup[(method, m)].n for method in methods)]
    if not shown:
        return None
    columns = min(4, len(shown))
    rows = math.ceil(len(shown) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(2.4 * columns, 2.4 * rows + 0.3), squeeze=False)
    colours = plt.get_cmap("tab10").colors
    for axis, metric in zip(axes.flat, shown, strict=False):  # spare panels stay empty
        panel = [lookup[(method, metric)] for method in methods]
        means = [cell.mean for cell in panel]
        below = [0.0 if math.isnan(cell.low) else cell.mean - cell.low for cell in panel]
        above = [0.0 if math.isnan(cell.high) else cell.high - cell.mean for cell in panel]
        axis.bar(range(len(methods)), means, yerr=[below, above], capsize=3,
                 color=[colours[i % len(colours)] for i in range(len(methods))])
        labels = [f"{row_labels.get(m, m)}\nn={cell.n}" for m, cell in zip(methods, panel, strict=True)]
        axis.set_xticks(range(len(methods)), labels, rotation=30 if len(methods) > 3 else 0,
                        ha="right" if len(methods) > 3 else "center", fontsize=7)
        axis.set_title(METRICS[metric].short, fontsize=9)
        axis.tick_params(axis="y", labelsize=7)
        axis.grid(axis="y", alpha=0.3)
    for axis in list(axes.flat)[len(shown):]:
        axis.set_visible(False)
    figure.suptitle("mean and 95% interval per method (clipped to each metric's range)", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
