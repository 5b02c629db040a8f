"""An adapter or target patterns for another model fail with a short message: the file or the
patterns, what was expected, what the model has, long lists summarised (#17 item 12)."""

from __future__ import annotations

import pytest
from tiny_models import HUNYUAN_TARGETS, build_hunyuan, build_llama

import hydralora
from hydralora import AdapterLoadError, HydraConfig, HydraInjectionError

LLAMA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
SHORT = 600


def saved_adapter(directory, build, targets):
    model = build()
    hydralora.inject(model, HydraConfig(r=2, num_heads=2, target_modules=targets))
    hydralora.save_adapter(model, directory)
    return directory


@pytest.fixture(scope="module")
def hunyuan():
    return build_hunyuan()


@pytest.mark.parametrize("targets", [LLAMA_TARGETS, "all-linear"], ids=["names", "all-linear"])
def test_a_llama_adapter_on_hunyuan_names_the_file_and_says_another_model(tmp_path, hunyuan, targets):
    directory = saved_adapter(tmp_path, build_llama, targets)
    with pytest.raises(AdapterLoadError) as info:
        hydralora.load_adapter(hunyuan, directory)
    message = str(info.value)
    assert len(message) < SHORT
    assert str(directory) in message and "another model" in message
    assert not list(hydralora.hydra_layers(hunyuan))


@pytest.mark.parametrize("targets", [HUNYUAN_TARGETS, "all-linear"], ids=["regex", "all-linear"])
def test_a_hunyuan_adapter_on_llama_names_the_file_and_says_another_model(tmp_path, targets):
    directory = saved_adapter(tmp_path, build_hunyuan, targets)
    with pytest.raises(AdapterLoadError) as info:
        hydralora.load_adapter(build_llama(), directory)
    message = str(info.value)
    assert len(message) < SHORT and str(directory) in message and "another model" in message


def test_patterns_matching_nothing_name_them_and_summarise_the_model(hunyuan):
    with pytest.raises(HydraInjectionError) as info:
        hydralora.inject(hunyuan, HydraConfig(target_modules=LLAMA_TARGETS))
    message = str(info.value)
    assert len(message) < SHORT
    assert message.startswith("target_modules=['q_proj', 'k_proj', 'v_proj', ... 7 names] matched no nn.Linear")
    linears = sum(1 for _, m in hunyuan.named_modules(remove_duplicate=False) if type(m).__name__ == "Linear")
    assert f"this HunyuanVideoTransformer3DModel has {linears} nn.Linear, e.g." in message
    assert "to_q" in message and "to_out.0" in message  # short names, as a suffix pattern would use them


def test_a_long_pattern_list_is_summarised(hunyuan):
    targets = [f"model.layers.{i}.self_attn.{name}" for i in range(32) for name in LLAMA_TARGETS]
    with pytest.raises(HydraInjectionError, match=r"'model\.layers\.0\.self_attn\.q_proj', .* 224 names\]") as info:
        hydralora.inject(hunyuan, HydraConfig(target_modules=targets, exclude_modules=targets))
    assert len(str(info.value)) < SHORT and "exclude_modules=[" in str(info.value)


def test_a_long_regex_is_cut_short():
    regex = "(" + "|".join(f"block_{i}" for i in range(100)) + ")"
    with pytest.raises(HydraInjectionError, match=r"target_modules='\(block_0\|block_1\|.*\.\.\.' matched no") as info:
        hydralora.inject(build_llama(), HydraConfig(target_modules=regex))
    assert len(str(info.value)) < SHORT


def test_many_matches_of_the_wrong_type_are_counted_and_summarised(hunyuan):
    with pytest.raises(HydraInjectionError) as info:
        hydralora.inject(hunyuan, HydraConfig(target_modules=r".*(attn|norm.*)"))
    message = str(info.value)
    assert len(message) < SHORT
    assert message.startswith("target_modules='.*(attn|norm.*)' matched ")
    assert "modules that are not nn.Linear: " in message and " more: only nn.Linear can take" in message
    assert not list(hydralora.hydra_layers(hunyuan))
