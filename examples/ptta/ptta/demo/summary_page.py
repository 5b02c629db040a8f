"""The demo's summary.html: stage timings, the curation report, the loss curve and the samples."""

from __future__ import annotations

import html
import json
from pathlib import Path

from ptta.cache.build import read_cache, skipped_clips
from ptta.tables import read_table
from ptta.train.heads import HEADS_LOG_FILE
from ptta.train.metrics import METRICS_FILE, read_metrics


def write_summary_page(out: Path, config, result, samples: dict[str, list[Path]], timings: dict[str, float],
                       settings) -> Path:
    """Write out/summary.html (paths inside it are relative, so the folder can be moved or served)."""
    from ptta.train.trainer import SUMMARY_FILE

    def rel(path: Path) -> str:
        return html.escape(Path(path).resolve().relative_to(out).as_posix())

    curated = out / "curated"
    manifest_rows = [row for _, row in read_table(curated / "manifest.jsonl")]
    cached = read_cache(config.cache_path)
    skipped = skipped_clips(config.cache_path)
    train_summary = json.loads((result.output_dir / SUMMARY_FILE).read_text())
    losses = [r["loss"] for r in read_metrics(result.output_dir / METRICS_FILE)]
    head = losses[: max(1, len(losses) // 10)]
    tail = losses[-max(1, len(losses) // 10):]

    timing_rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.1f} s</td></tr>" for k, v in timings.items())
    clip_rows = "".join(
        f"<tr><td>{html.escape(str(r['id']))}</td><td>{'yes' if r.get('selected') else 'no'}</td>"
        f"<td>{_number(r.get('flow'))}</td><td>{_number(r.get('aesthetic'))}</td><td>{_number(r.get('score'))}</td>"
        f"<td>{html.escape(str(r.get('caption') or r.get('reason') or r.get('error') or ''))}</td></tr>"
        for r in manifest_rows
    )
    sample_rows = ""
    for i, prompt in enumerate(settings.prompts):
        cells = ""
        for kind in ("adapter", "base"):
            gifs = [p.with_suffix(".gif") for p in samples[kind] if p.name.startswith(f"{i:03d}-")]
            cells += "<td>" + "".join(f'<img src="{rel(g)}" alt="{kind} sample">' for g in gifs) + "</td>"
        sample_rows += f"<tr><td>{html.escape(prompt)}</td>{cells}</tr>"
    heads_section = _heads_section(out, config, train_summary, samples, rel)
    params = train_summary["parameters"]
    sheet = curated / "report" / "selected.png"
    selected_sheet = f'<p>Selected clips:</p><img src="{rel(sheet)}" alt="selected clips">' if sheet.is_file() else ""
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>PTTA demo</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:70em}} td,th{{border:1px solid #ccc;padding:3px 8px}}
table{{border-collapse:collapse;margin-bottom:1em}} img{{max-width:100%;image-rendering:pixelated}}
td img{{width:240px}}</style></head><body>
<h1>PTTA demo</h1>
<p>Curate, cache, train and sample on the {html.escape(config.model)} model. The tiny model has random weights,
so its videos are not meant to look like anything: the page shows the chain working end to end.</p>
<h2>Stages</h2>
<table><tr><th>stage</th><th>time</th></tr>{timing_rows}
<tr><th>total</th><th>{sum(timings.values()):.1f} s</th></tr></table>
<h2>Curation</h2>
<p>Full report: <a href="{rel(curated / 'report.html')}">curated/report.html</a>.
{len(manifest_rows)} manifest rows, {sum(bool(r.get('selected')) for r in manifest_rows)} selected,
{len(cached)} cached for training{f', {len(skipped)} skipped by the cache' if skipped else ''}.</p>
<img src="{rel(curated / 'report' / 'score.png')}" alt="score histogram">
{selected_sheet}
<table><tr><th>clip</th><th>selected</th><th>flow</th><th>aesthetic</th><th>S</th><th>caption / reason</th></tr>
{clip_rows}</table>
<h2>Training</h2>
<p>{train_summary['steps']} steps of {html.escape(config.adapter.type)} (r={config.adapter.r},
N={config.adapter.num_heads}, mixing={html.escape(config.adapter.mixing)}), lr {config.optimizer.lr:g};
{params['trainable']:,} trainable of {params['total']:,} parameters.
Mean loss of the first tenth of steps {sum(head) / len(head):.4f}, of the last tenth {sum(tail) / len(tail):.4f}.
Config: <a href="train.yaml">train.yaml</a>; logs: <a href="{rel(result.output_dir / METRICS_FILE)}">metrics.jsonl</a>;
adapter: <a href="{rel(result.adapter_dir)}">{rel(result.adapter_dir)}</a>.</p>
<img src="{rel(result.output_dir / 'loss_curve.png')}" alt="loss curve">
<h2>Samples</h2>
<table><tr><th>prompt</th><th>with the adapter</th><th>base model</th></tr>{sample_rows}</table>
{heads_section}
</body></html>
"""
    path = out / "summary.html"
    path.write_text(page)
    return path


def _heads_section(out: Path, config, train_summary: dict, samples: dict[str, list[Path]], rel) -> str:
    """Each head alone on the first prompt, how far apart their videos are, and the head report."""
    from ptta.video_io import read_video

    names = [name for name in config.heads.names if samples.get(f"head-{name}")]
    if not names:
        return ""
    videos = {name: read_video(samples[f"head-{name}"][0])[0].astype("float32") for name in names}
    heads = "".join(f"<th>{html.escape(name)}</th>" for name in names)
    gifs = "".join(f"<td><img src=\"{rel(samples[f'head-{name}'][0].with_suffix('.gif'))}\" "
                   f"alt=\"head {html.escape(name)}\"></td>" for name in names)
    differences = ""
    for name in names:
        others = [abs(videos[name] - videos[other]).mean() for other in names if other != name]
        differences += f"<td>{sum(others) / len(others):.2f}</td>"
    index = [json.loads(line) for line in (out / "samples" / "adapter" / "samples.jsonl").read_text().splitlines()]
    used = "".join(f"<li>{html.escape(entry['prompt'])}: {html.escape(str(entry.get('heads_from') or 'the adapter'))}"
                   f" {html.escape(str(entry.get('head_weights') or ''))}</li>" for entry in index)
    report = train_summary.get("heads") or {}
    verdict = ("<b>collapsed</b>: the heads are equal, steering them does nothing" if report.get("collapsed")
               else "the heads differ")
    return f"""<h2>Heads</h2>
<p>Sub-task heads {html.escape(", ".join(config.heads.names))}, trained with head weights from each clip's
caption ({'heads.from_captions' if config.heads.from_captions else html.escape(config.adapter.mixing) + ' mixing'}).
Head report after training: {verdict}; mean relative distance between heads {_number(report.get('mean_distance'))},
mean effective rank of the head stack {_number(report.get('mean_effective_rank'))} (1 = one head N times),
{report.get('collapsed_layers', '?')} of {report.get('num_layers', '?')} layers collapsed
(per checkpoint: <a href="{rel(config.output_path / HEADS_LOG_FILE)}">{HEADS_LOG_FILE}</a>).</p>
<p>Head weights of the adapter samples above:</p><ul>{used}</ul>
<p>The first prompt, same seed, each head alone (weight 1 on it, 0 on the others), side by side; the last
row is the mean absolute pixel difference (0-255) of each head's video to the other heads' videos.</p>
<table><tr><th></th>{heads}</tr><tr><th>sample</th>{gifs}</tr><tr><th>mean |difference|</th>{differences}</tr></table>"""


def _number(value) -> str:
    return "" if value is None else f"{value:.2f}"
