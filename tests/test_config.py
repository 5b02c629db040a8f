"""HydraConfig: defaults, derived values, JSON round trip, and one failing case per validation branch."""

from __future__ import annotations

import json
import math

import pytest
import torch

from hydralora import HydraConfig, HydraConfigError


def test_defaults_follow_the_paper_and_peft():
    config = HydraConfig()
    assert (config.r, config.alpha, config.num_heads, config.mixing) == (32, 32.0, 4, "router")
    assert config.scale == 1.0
    assert config.init_b == "zero"
    assert config.target_modules == "all-linear"


def test_scale_and_per_layer_mixing():
    assert HydraConfig(r=8, alpha=32).scale == 4.0
    assert not HydraConfig(mixing="router").per_layer_mixing
    assert HydraConfig(mixing="learned").per_layer_mixing
    assert HydraConfig(mixing="fixed").per_layer_mixing


def test_head_weights_init_is_uniform_unless_given():
    assert HydraConfig(num_heads=4, mixing="fixed").head_weights_init() == [0.25] * 4
    assert HydraConfig(num_heads=2, mixing="learned", fixed_weights=[3, 1]).head_weights_init() == [3.0, 1.0]


@pytest.mark.parametrize(
    "config",
    [
        HydraConfig(),
        HydraConfig(r=4, alpha=2.5, num_heads=3, mixing="fixed", fixed_weights=(0.5, 0.25, 0.25), dropout=0.1),
        HydraConfig(mixing="router", router_input="lora", router_temperature=0.5, balance_loss_weight=0.001,
                    target_modules=("q_proj", "v_proj"), exclude_modules=["lm_head"], init_b="normal",
                    router_init="normal"),
        HydraConfig(mixing="learned", target_modules=r".*\.(to_q|to_k)", exclude_modules=r"single.*"),
    ],
)
def test_json_round_trip_gives_an_equal_config(config):
    text = config.to_json()
    assert json.loads(text) == config.to_dict()
    assert HydraConfig.from_json(text) == config
    assert HydraConfig.from_dict(config.to_dict()) == config


def test_fixed_weights_given_as_a_tensor_are_stored_as_plain_floats():
    config = HydraConfig(mixing="fixed", num_heads=2, fixed_weights=torch.tensor([0.25, 0.75]))
    assert config.fixed_weights == [0.25, 0.75] and HydraConfig.from_json(config.to_json()) == config


def test_tuples_become_lists_so_the_json_round_trip_is_exact():
    config = HydraConfig(target_modules=("a", "b"), exclude_modules=("c",), mixing="fixed", num_heads=2, fixed_weights=(1, 2))
    assert config.target_modules == ["a", "b"] and config.exclude_modules == ["c"]
    assert config.fixed_weights == [1.0, 2.0] and all(isinstance(w, float) for w in config.fixed_weights)
    assert HydraConfig.from_json(config.to_json()) == config


def test_save_and_load_keep_metadata_next_to_the_config(tmp_path):
    config = HydraConfig(r=4, num_heads=2, mixing="learned")
    path = config.save(tmp_path / "adapter", hydralora_version="9.9")
    payload = json.loads(path.read_text())
    assert payload["hydralora_version"] == "9.9"
    assert payload["hydra_config"] == config.to_dict()
    assert HydraConfig.load(tmp_path / "adapter") == config


BAD_CONFIGS = [
    ("r", {"r": 0}),
    ("r", {"r": -2}),
    ("r", {"r": 2.5}),
    ("r", {"r": True}),
    ("r", {"r": "8"}),
    ("alpha", {"alpha": 0}),
    ("alpha", {"alpha": -1.0}),
    ("alpha", {"alpha": math.nan}),
    ("alpha", {"alpha": math.inf}),
    ("alpha", {"alpha": "32"}),
    ("num_heads", {"num_heads": 0}),
    ("num_heads", {"num_heads": 2.0}),
    ("mixing", {"mixing": "topk"}),
    ("router_input", {"router_input": "pooled"}),
    ("init_b", {"init_b": "uniform"}),
    ("init_a", {"init_a": "gaussian"}),
    ("router_init", {"router_init": "zeros"}),
    ("router_temperature", {"router_temperature": 0}),
    ("router_temperature", {"router_temperature": -1.0}),
    ("balance_loss_weight", {"balance_loss_weight": -0.1}),
    ("balance_loss_weight", {"balance_loss_weight": 0.01, "mixing": "learned"}),
    ("balance_loss_weight", {"balance_loss_weight": 0.01, "mixing": "fixed"}),
    ("dropout", {"dropout": 1.0}),
    ("dropout", {"dropout": -0.1}),
    ("dropout", {"dropout": math.nan}),
    ("init_b_std", {"init_b_std": 0.0}),
    ("router_init_std", {"router_init_std": -1e-2}),
    ("fixed_weights", {"mixing": "fixed", "num_heads": 3, "fixed_weights": [0.5, 0.5]}),
    ("fixed_weights", {"mixing": "learned", "num_heads": 2, "fixed_weights": [0.5, math.nan]}),
    ("fixed_weights", {"mixing": "router", "num_heads": 2, "fixed_weights": [0.5, 0.5]}),
    ("fixed_weights", {"mixing": "fixed", "num_heads": 2, "fixed_weights": "ab"}),
    ("fixed_weights", {"mixing": "fixed", "num_heads": 2, "fixed_weights": 0.5}),
    ("fixed_weights", {"mixing": "fixed", "num_heads": 2, "fixed_weights": [0.5, None]}),
    ("target_modules", {"target_modules": ""}),
    ("target_modules", {"target_modules": "(unclosed"}),
    ("target_modules", {"target_modules": []}),
    ("target_modules", {"target_modules": ["q_proj", ""]}),
    ("target_modules", {"target_modules": 5}),
    ("target_modules", {"target_modules": None}),
    ("exclude_modules", {"exclude_modules": "[bad"}),
    ("exclude_modules", {"exclude_modules": [3]}),
]


@pytest.mark.parametrize(("field", "kwargs"), BAD_CONFIGS, ids=[f"{f}-{i}" for i, (f, _) in enumerate(BAD_CONFIGS)])
def test_bad_values_raise_an_error_naming_the_field(field, kwargs):
    with pytest.raises(HydraConfigError, match=rf"HydraConfig\.{field}:"):
        HydraConfig(**kwargs)


def test_config_error_is_a_value_error():
    with pytest.raises(ValueError):
        HydraConfig(r=0)


def test_unknown_keys_are_refused_and_named():
    data = HydraConfig().to_dict() | {"lora_alpha": 16, "rank": 8}
    with pytest.raises(HydraConfigError, match=r"\['lora_alpha', 'rank'\]"):
        HydraConfig.from_dict(data)
    with pytest.raises(HydraConfigError, match="lora_alpha"):
        HydraConfig.from_json(json.dumps(data))


def test_from_dict_validates_values():
    with pytest.raises(HydraConfigError, match=r"HydraConfig\.mixing"):
        HydraConfig.from_dict({"mixing": "dense"})


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        HydraConfig.load(tmp_path)
    (tmp_path / "adapter_config.json").write_text("{not json")
    with pytest.raises(HydraConfigError, match=r"adapter_config\.json is not valid JSON"):
        HydraConfig.load(tmp_path)
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 8, "peft_type": "LORA"}))
    with pytest.raises(HydraConfigError, match="no 'hydra_config' entry"):
        HydraConfig.load(tmp_path)
