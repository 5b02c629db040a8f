"""The command line as a new user meets it (issue #17, items 10 and 15, and the folder-for-a-file
errors of item 2): --version, a help line with its default for every flag, and advice that names
the command line's own options."""

from __future__ import annotations

import argparse
from importlib import metadata

import pytest

from ptta.cli import build_parser, main

# Sub-commands whose flags are being edited elsewhere, left out of the help walk until that lands.
NOT_CHECKED_YET: set[str] = set()


def sub_parsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(commands.choices)


def options() -> list[tuple[str, argparse.Action, argparse.ArgumentParser]]:
    return [(name, action, parser) for name, parser in sub_parsers().items() if name not in NOT_CHECKED_YET
            for action in parser._actions if not isinstance(action, argparse._HelpAction)]


def test_version_prints_ptta_and_hydralora(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"ptta {metadata.version('ptta')}, hydralora {metadata.version('hydralora')}"


def test_every_option_has_help_and_its_default(capsys):
    assert {"curate", "curate-merge", "cache", "train", "sample", "evaluate", "ablate", "demo"} <= set(sub_parsers())
    missing, no_default = [], []
    for name, action, parser in options():
        where = f"{name} {'/'.join(action.option_strings) or action.dest}"
        if not action.help or action.help == argparse.SUPPRESS:
            missing.append(where)
            continue
        shown = parser._get_formatter()._expand_help(action)
        if action.default not in (None, False, [], argparse.SUPPRESS) and "default" not in shown:
            no_default.append(where)
    assert not missing, f"options without help: {missing}"
    assert not no_default, f"options whose help does not give the default: {no_default}"


@pytest.mark.parametrize("argv, message", [
    (["train", "--config", "{dir}"], "ptta train: --config {dir}: is a directory"),
    (["cache", "--config", "{dir}"], "ptta cache: --config {dir}: is a directory"),
    (["sample", "a cat", "--prompts-file", "{dir}", "--out", "{dir}/out"], "--prompts-file {dir}: is a directory"),
])
def test_a_folder_where_a_file_is_expected_is_called_a_directory(tmp_path, capsys, argv, message):
    assert main([part.format(dir=tmp_path) for part in argv]) == 2
    assert message.format(dir=tmp_path) in capsys.readouterr().err


def test_merging_a_router_adapter_points_to_heads_and_that_works(tmp_path, capsys, tiny_model_dir):
    import hydralora
    import torch

    from ptta.models.hunyuan_video import load_transformer

    transformer = load_transformer(tiny_model_dir, torch.float32)
    hydralora.inject(transformer, hydralora.HydraConfig(r=2, alpha=2, num_heads=2, mixing="router",
                                                        target_modules=["to_q"]))
    hydralora.save_adapter(transformer, tmp_path / "router")
    common = ["sample", "a cat", "--model", str(tiny_model_dir), "--adapter", str(tmp_path / "router"),
              "--out", str(tmp_path / "out"), "--steps", "1", "--height", "16", "--width", "16", "--frames", "1",
              "--no-gif", "--merge"]
    assert main(common) == 2
    err = capsys.readouterr().err
    assert "set_head_weights" not in err and "--heads 0.5,0.5 --merge" in err
    assert main([*common, "--heads", "0.5,0.5"]) == 0  # the advice works


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    from ptta.models.tiny_hunyuan_video import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("model") / "tiny")
