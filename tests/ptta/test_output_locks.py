"""`ptta cache`, `ptta train`, `ptta evaluate` and `ptta ablate` refuse an output folder another run
holds, at once and naming the holder (#12); `ptta curate`'s lock is tested with curation."""

from __future__ import annotations

import pytest

from ptta.cli import main
from ptta.output_lock import LOCK_FILE, empty_folder, output_lock

CONFIG = """\
model: tiny
output_dir: run
data:
  manifest: curated/manifest.jsonl
  cache_dir: cache
"""


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text(CONFIG)
    return path


@pytest.mark.parametrize("command, folder", [("cache", "cache"), ("train", "run")])
def test_cache_and_train_refuse_a_folder_in_use(config, command, folder, capsys):
    with output_lock(config.parent / folder, "another run"):
        assert main([command, "--config", str(config)]) == 2
    error = capsys.readouterr().err
    assert f"ptta {command}: {config.parent / folder} is in use by another run (PID" in error
    assert not (config.parent / folder / "cache_info.json").exists()


@pytest.mark.parametrize("command", ["evaluate", "ablate"])
def test_evaluate_and_ablate_refuse_a_folder_in_use(tmp_path, command):
    out = tmp_path / "eval"
    with output_lock(out, "another run"), pytest.raises(SystemExit, match=f"ptta {command}: .* is in use by another run"):
        main([command, "--out", str(out), "--manifest", str(tmp_path / "missing.csv")])
        assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]  # the refused run wrote nothing


def test_rebuilding_a_held_folder_keeps_its_lock_file(tmp_path):
    folder = tmp_path / "cache"
    (folder / "shards").mkdir(parents=True)
    (folder / "shards" / "shard-00000.safetensors").write_text("x")
    (folder / "cache_info.json").write_text("{}")
    with output_lock(folder, "ptta cache --overwrite"):
        empty_folder(folder)
        assert sorted(p.name for p in folder.iterdir()) == [LOCK_FILE]
        # the held file is the one a second run opens, so it is still refused
        with pytest.raises(RuntimeError, match="in use by ptta cache --overwrite"):
            with output_lock(folder, "second"):
                pass


def test_a_folder_the_lock_created_is_gone_again_when_the_run_wrote_nothing(tmp_path):
    with pytest.raises(ValueError), output_lock(tmp_path / "new", "a failing run"):
        raise ValueError("bad config")
    assert not (tmp_path / "new").exists()
    with output_lock(tmp_path / "used", "a run"):
        (tmp_path / "used" / "out.txt").write_text("kept")
    assert (tmp_path / "used" / "out.txt").read_text() == "kept"
    (tmp_path / "existing").mkdir()
    with output_lock(tmp_path / "existing", "a run"):
        pass
    assert (tmp_path / "existing").is_dir()
