"""`ptta demo`: the whole chain on the embedded tiny model leaves a complete run folder."""

from __future__ import annotations

import re

from ptta.cli import main


def test_demo_leaves_a_summary_page_whose_links_all_resolve(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PTTA_HOME", str(tmp_path / "home"))  # the tiny model is created here, not in ~/.cache
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--train-steps", "4", "--sample-steps", "2"]) == 0
    page = (out / "summary.html").read_text()
    links = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert {"curated/report.html", "train/loss_curve.png", "train.yaml"} <= set(links)
    missing = [link for link in links if not (out / link).exists()]
    assert not missing
    assert sum(link.endswith(".gif") for link in links) == 4  # 2 prompts, with and without the adapter
    assert (out / "train" / "adapter" / "adapter_model.safetensors").is_file()
    assert "4 steps of hydralora" in page

    (out / "keep.txt").write_text("mine")
    assert main(["demo", "--out", str(out)]) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"
