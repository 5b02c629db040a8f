"""The PTTA import rule (docs/architecture.md), checked by parsing every module's imports.

A stage imports shared modules and the stages before it in the pipeline, never a later one;
shared modules import no stage; nothing imports the demo. The project's own modules are imported
at the top of a file, except a module that loads a heavy third-party package at import time, which
may be imported inside a function so that `ptta --help` stays fast.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[2] / "examples" / "ptta"
PIPELINE = ["curate", "cache", "train", "sample", "export", "evaluate", "demo"]
SHARED = {"ptta", "ptta.cli", "ptta.models", "ptta.config", "ptta.video_io", "ptta.tables", "ptta.synthetic",
          "ptta.assets", "ptta.torch_runtime", "ptta.rendering", "ptta.paper_prompts", "ptta.output_lock"}
HEAVY = {"torch", "numpy", "cv2", "diffusers", "transformers", "accelerate", "av", "scenedetect", "pandas",
         "pyarrow", "matplotlib", "PIL", "scipy", "safetensors", "hydralora", "peft", "tqdm", "yaml", "imageio_ffmpeg"}


def module_name(path: Path, root: Path = PACKAGE_ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def stage_of(module: str) -> int | None:
    """Pipeline position of a module's stage; None for shared modules."""
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in PIPELINE:
        return PIPELINE.index(parts[1])
    if any(module == shared or module.startswith(shared + ".") for shared in SHARED if shared != "ptta"):
        return None
    if module == "ptta":
        return None
    raise AssertionError(f"{module} is neither a stage nor a listed shared module: add it to one")


def imports(tree: ast.Module) -> list[tuple[str, bool, int]]:
    """(imported module, at top level?, line) for every import; `from a import b` counts as `a.b` when
    a.b is a module, else as `a` (decided by the caller)."""
    found = []
    top_level = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top_level, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [(f"{node.module}.{alias.name}", id(node) in top_level, node.lineno) for alias in node.names]
    return found


def package_modules(root: Path = PACKAGE_ROOT) -> dict[str, Path]:
    return {module_name(path, root): path for path in sorted((root / "ptta").rglob("*.py"))}


def resolve(name: str, known: dict[str, Path]) -> str | None:
    """The ptta module an import names (`ptta.a.b.func` -> `ptta.a.b`); None for third-party."""
    if not name.startswith("ptta"):
        return None
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def violations(root: Path = PACKAGE_ROOT) -> list[str]:
    known = package_modules(root)
    trees = {name: ast.parse(path.read_text(), str(path)) for name, path in known.items()}
    top_imports = {name: [i for i in imports(tree) if i[1]] for name, tree in trees.items()}

    heavy_cache: dict[str, bool] = {}

    def is_heavy(module: str, seen: frozenset = frozenset()) -> bool:
        """Loads a heavy third-party package when imported (directly or through ptta modules)."""
        if module not in heavy_cache:
            heavy = False
            for name, _, _ in top_imports[module]:
                target = resolve(name, known)
                if target is None:
                    heavy = heavy or name.split(".")[0] in HEAVY
                elif target != module and target not in seen:
                    heavy = heavy or is_heavy(target, seen | {module})
            heavy_cache[module] = heavy
        return heavy_cache[module]

    problems = []
    for module, tree in trees.items():
        source = stage_of(module)
        for name, at_top, line in imports(tree):
            target = resolve(name, known)
            if target is None or target == module:
                continue
            where = f"{known[module].relative_to(root)}:{line} imports {target}"
            target_stage = stage_of(target)
            if target_stage == PIPELINE.index("demo") and source != target_stage:
                problems.append(f"{where}: nothing imports the demo")
            elif target_stage is not None and source is None:
                problems.append(f"{where}: a shared module imports no stage")
            elif target_stage is not None and target_stage > source:
                problems.append(f"{where}: a stage imports only earlier stages ({PIPELINE[target_stage]} comes after "
                                f"{PIPELINE[source]})")
            if not at_top and not is_heavy(target):
                problems.append(f"{where} inside a function: it loads no heavy package, import it at the top")
    return problems


def test_ptta_follows_the_import_rule():
    assert violations() == []


def test_the_rule_catches_a_later_stage_a_demo_import_and_a_needless_lazy_import(tmp_path):
    root = tmp_path / "pkg"
    for package in ("ptta", "ptta/curate", "ptta/train", "ptta/demo", "ptta/models"):
        (root / package).mkdir(parents=True)
        (root / package / "__init__.py").write_text("")
    (root / "ptta/demo/run.py").write_text("X = 1\n")
    (root / "ptta/train/trainer.py").write_text("Y = 1\n")
    (root / "ptta/tables.py").write_text("import json\n")
    (root / "ptta/curate/caption.py").write_text("from ptta.train.trainer import Y\n")
    (root / "ptta/models/loader.py").write_text("from ptta.demo.run import X\n")
    (root / "ptta/train/data.py").write_text("def f():\n    from ptta.tables import json\n")
    problems = violations(root)
    assert any("caption.py:1 imports ptta.train.trainer" in p and "earlier stages" in p for p in problems)
    assert any("loader.py:1 imports ptta.demo.run" in p and "demo" in p for p in problems)
    assert any("data.py:2 imports ptta.tables inside a function" in p for p in problems)
    assert len(problems) == 3


def test_the_command_line_loads_no_heavy_package():
    code = ("import sys; from ptta.cli import build_parser; build_parser(); "
            f"print(sorted(m for m in {sorted(HEAVY)!r} if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_each_stage_folder_holds_its_command():
    from ptta.cli import COMMANDS

    commands = {module for module, _ in COMMANDS.values()}
    for stage in ("curate", "cache", "train", "sample", "export", "evaluate", "demo"):
        assert f"ptta.{stage}.command" in commands, stage
