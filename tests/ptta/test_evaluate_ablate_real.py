"""`ptta ablate` for real on the tiny HunyuanVideo: trains an adapter per N through the trainer,
samples with each, scores with the weight-free metrics, and a rerun reuses all of it."""

from __future__ import annotations

import csv
import math
import re

import yaml
from test_train_fixtures import (  # noqa: F401
    built_cache,
    clip_manifest,
    make_config_dict,
    tiny_model_dir,
)

import hydralora

HEADS = (1, 2)
PROMPTS = ["anime girl, reading books, desk, solo, anime style", "red paper airplane, gliding, classroom, anime style"]


def table_rows(table: str) -> dict[str, list[str]]:
    """Row label -> cells of the first Markdown table under "## Other metrics" (the weight-free one)."""
    section = table.split("## Other metrics", 1)[1]
    rows = {}
    for line in section.splitlines():
        if not line.startswith("|"):
            if rows:
                break
            continue
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if cells[0] == "B matrices nums N" or set(cells[0]) <= {"-"}:
            continue
        rows[cells[0]] = cells[1:]
    return rows


def test_ablate_trains_samples_scores_and_a_rerun_reuses_everything(tiny_model_dir, clip_manifest, built_cache,
                                                                   tmp_path, capsys):
    from diffusers import HunyuanVideoTransformer3DModel
    from ptta.cli import main

    config = make_config_dict(tiny_model_dir, clip_manifest, built_cache, tmp_path / "unused",
                              adapter={"num_heads": 4}, training={"max_steps": 1})
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    out = tmp_path / "ablate"
    argv = ["ablate", "--heads", ",".join(map(str, HEADS)), "--default-heads", "2", "--model", str(tiny_model_dir),
            "--train-config", str(tmp_path / "train.yaml"), "--prompts", str(tmp_path / "prompts.txt"),
            "--samples", "1", "--steps", "2", "--height", "32", "--width", "48", "--frames", "9",
            "--device", "cpu", "--flow-side", "32", "--gifs-per-cell", "0", "--out", str(out)]

    assert main(argv) == 0
    first = capsys.readouterr().out
    for n in HEADS:
        assert f"N={n}: training an adapter into {out / 'adapters' / f'heads{n}'}" in first
        assert f"N{n}: sampling 2 videos (2 prompts x 1 seeds)" in first
    assert "4 computed, 0 reused, 0 failed" in first

    adapters = {n: out / "adapters" / f"heads{n}" / "adapter" for n in HEADS}
    for n, folder in adapters.items():
        model = HunyuanVideoTransformer3DModel.from_pretrained(tiny_model_dir, subfolder="transformer")
        hydralora.load_adapter(model, folder)
        layers = [layer for _, layer in hydralora.hydra_layers(model)]
        assert layers and {layer.num_heads for layer in layers} == {n}

    videos = {n: sorted(p.name for p in (out / "videos" / f"N{n}").glob("*.mp4")) for n in HEADS}
    assert videos == {n: ["p01_s00.mp4", "p02_s00.mp4"] for n in HEADS}
    assert not list((out / "videos").rglob("_generating"))

    table = (out / "table.md").read_text()
    assert table.startswith("# PTTA ablation: number of B matrices N")
    rows = table_rows(table)
    assert list(rows) == ["1", "2 (Default)"]
    for cells in rows.values():
        *metric_cells, n_videos = cells
        assert n_videos == "2" and metric_cells
        for cell in metric_cells:
            numbers = [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?", cell)]
            # "mean ± half-width", or "mean [low, high]" where the metric's range clips the interval
            assert len(numbers) in (2, 3) and all(math.isfinite(x) for x in numbers), cell
    with (out / "per_video.csv").open(newline="") as handle:
        per_video = list(csv.DictReader(handle))
    assert sorted(r["method"] for r in per_video) == ["N1", "N1", "N2", "N2"]
    assert not any(r["errors"] for r in per_video)

    stamps = {p: p.stat().st_mtime_ns for p in [*out.rglob("*.safetensors"), *out.rglob("*.mp4")]}
    assert len([p for p in stamps if p.suffix == ".mp4"]) == 4
    assert main(argv) == 0
    second = capsys.readouterr().out
    assert "training an adapter" not in second and "sampling" not in second
    assert "0 computed, 4 reused, 0 failed" in second
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert (out / "table.md").read_text() == table

