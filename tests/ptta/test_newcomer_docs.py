"""The documentation cites what a reader can find (issue #17, item 16): the PTTA paper by its title
and authors, never a file outside this repository."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUTSIDE = "shared/" + "seed"  # split so that this file does not match itself
SUFFIXES = {".md", ".py", ".toml", ".yaml", ".yml", ".txt", ".cfg", ".sh"}


def repository_text_files() -> list[Path]:
    skip = {".git", ".venv", "node_modules", "__pycache__", ".pytest_cache", ".ruff_cache", ".hypothesis"}
    return [path for path in ROOT.rglob("*")
            if path.suffix in SUFFIXES | {""} and path.is_file() and not skip & set(path.relative_to(ROOT).parts)
            and path.stat().st_size < 2_000_000]


def test_nothing_cites_a_file_outside_the_repository():
    citing = [str(path.relative_to(ROOT)) for path in repository_text_files()
              if OUTSIDE in path.read_text(errors="replace")]
    assert not citing


def test_the_guide_cites_the_paper_by_title_and_authors():
    guide = " ".join((ROOT / "docs" / "ptta-guide.md").read_text().split())
    assert '"PTTA: A Pure Text-to-Animation Framework for High-Quality Creation"' in guide
    assert "Ruiqi Chen, Kaitong Cai, Yijia Fan, Keze Wang, Sun Yat-sen University" in guide
