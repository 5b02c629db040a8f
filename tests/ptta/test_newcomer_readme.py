"""The README's library snippet runs as written (issue #17, item 14): every name it uses is
defined in it, on a model it builds from a config, and the LoRA it exports loads into PEFT."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.DOTALL | re.MULTILINE)


def test_the_readme_has_one_python_block_and_names_both_module_conventions():
    (block,) = python_blocks()
    assert "q_proj" in block and "to_q" in block  # transformers' Llama names, and diffusers' for HunyuanVideo


def test_the_readme_python_block_runs_as_written(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    from transformers import LlamaForCausalLM

    monkeypatch.chdir(tmp_path)
    (block,) = python_blocks()
    (tmp_path / "snippet.py").write_text(block)
    names = runpy.run_path(str(tmp_path / "snippet.py"), run_name="__main__")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    assert names["logits"].shape[:2] == names["tokens"].shape
    base = LlamaForCausalLM(names["model"].config)
    peft.PeftModel.from_pretrained(base, str(tmp_path / "lora"))  # the exported LoRA loads where it says
