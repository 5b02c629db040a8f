"""hydralora.lora_formats and the file-only export: exact fusing and splitting, a pluggable key map, the
three key styles written and read back, and the collapse from an adapter folder without its model."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny_models import build_nested, randomize_adapters

import hydralora
from hydralora import HydraConfig, HydraMergeError
from hydralora.export import collapse_adapter, collapsed_lora_state, write_lora
from hydralora.lora_formats import FusedKeyMap, FusedModule, fuse_lora, read_lora, split_lora, swap_halves

FP32 = {"rtol": 1e-5, "atol": 1e-6}


def pair(r: int, d: int, k: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(r, k, generator=generator), torch.randn(d, r, generator=generator)


def test_fusing_stacks_each_parts_delta_and_fills_missing_parts_with_zeros():
    q, v = pair(2, 4, seed=1), pair(3, 6, seed=2)
    lora_a, lora_b = fuse_lora([q, 5, v])
    assert lora_a.shape == (5, 5) and lora_b.shape == (15, 5)
    expected = torch.cat([q[1] @ q[0], torch.zeros(5, 5), v[1] @ v[0]])
    torch.testing.assert_close(lora_b @ lora_a, expected, **FP32)
    back = split_lora(lora_a, lora_b, [4, 5, 6])
    assert back[1] is None
    for (a, b), (a0, b0) in zip([back[0], back[2]], [q, v]):
        assert torch.equal(a, a0) and torch.equal(b, b0)


def test_splitting_a_dense_lora_keeps_every_column_and_each_parts_delta():
    lora_a, lora_b = pair(3, 12, seed=3)
    parts = split_lora(lora_a, lora_b, [4, 4, 4])
    for i, (a, b) in enumerate(parts):
        torch.testing.assert_close(b @ a, (lora_b @ lora_a)[4 * i:4 * i + 4], **FP32)
    with pytest.raises(ValueError, match="add up to 11"):
        split_lora(lora_a, lora_b, [4, 4, 3])


def test_swap_halves_is_its_own_inverse():
    b = torch.arange(12.0).reshape(6, 2)
    assert torch.equal(swap_halves(b)[:3], b[3:]) and torch.equal(swap_halves(swap_halves(b)), b)


# -- collapse from the adapter's files -----------------------------------------------------------------


@pytest.mark.parametrize("mixing", ["learned", "fixed"])
def test_collapse_from_the_folder_equals_the_models(tmp_path, mixing):
    model = build_nested()
    hydralora.inject(model, HydraConfig(r=2, alpha=5.0, num_heads=3, mixing=mixing, fixed_weights=None))
    randomize_adapters(model)
    hydralora.save_adapter(model, tmp_path)
    from_files, from_model = collapse_adapter(tmp_path), collapsed_lora_state(model)
    assert sorted(from_files) == sorted(from_model)
    for name, (lora_a, lora_b) in from_files.items():
        torch.testing.assert_close(lora_a, from_model[name][0], rtol=0, atol=0)
        torch.testing.assert_close(lora_b, from_model[name][1], **FP32)
    assert load_file(hydralora.export_lora(tmp_path, tmp_path / "f.safetensors")).keys() == \
        load_file(hydralora.export_lora(model, tmp_path / "m.safetensors")).keys()


def test_a_router_collapses_only_with_pinned_head_weights(tmp_path):
    model = build_nested()
    hydralora.inject(model, HydraConfig(r=2, num_heads=3, mixing="router"))
    randomize_adapters(model)
    hydralora.save_adapter(model, tmp_path)
    with pytest.raises(HydraMergeError, match="per-token router.*pin the head weights"):
        collapse_adapter(tmp_path)
    with pytest.raises(ValueError, match=r"one entry per head \(3\)"):
        collapse_adapter(tmp_path, [0.5, 0.5])
    omega = [0.1, 0.7, 0.2]
    pinned = collapse_adapter(tmp_path, omega)
    for name, layer in hydralora.hydra_layers(model):
        torch.testing.assert_close(pinned[name][1] @ pinned[name][0], layer.delta_weight(torch.tensor(omega)), **FP32)
    model_pinned = collapsed_lora_state(model, head_weights=omega)
    torch.testing.assert_close(model_pinned["head"][1], pinned["head"][1], **FP32)


# -- key map and key styles --------------------------------------------------------------------------


def nested_adapter():
    model = build_nested()
    hydralora.inject(model, HydraConfig(r=2, alpha=4.0, num_heads=2, mixing="learned",
                                        target_modules=["embed", "blocks.0.mlp.0", "blocks.1.mlp.0", "head"]))
    randomize_adapters(model)
    deltas = {name: layer.delta_weight() for name, layer in hydralora.hydra_layers(model)}
    # a layout that stacks the two blocks' first MLP Linears (24 rows each) and keeps `head` as it is
    key_map = FusedKeyMap([FusedModule("mlp_in.fused", ("blocks.0.mlp.0", "blocks.1.mlp.0"), (24, 24))],
                          passthrough=["head"])
    return model, deltas, key_map


@pytest.mark.parametrize("style", ["diffusers", "peft", "kohya"])
def test_each_style_round_trips_through_a_key_map(tmp_path, style):
    model, deltas, key_map = nested_adapter()
    with pytest.warns(UserWarning, match="skipped 1 module.*embed: no counterpart in the file's layout"):
        path = hydralora.export_lora(model, tmp_path / "out", format=style, key_map=key_map)
    state = load_file(path)
    if style == "kohya":
        assert sorted(state) == [f"lora_unet_{n}.{k}" for n in ("head", "mlp_in_fused")
                                 for k in ("alpha", "lora_down.weight", "lora_up.weight")]
        assert float(state["lora_unet_mlp_in_fused.alpha"]) == 4.0  # alpha = fused rank 2 + 2
    fused = state["base_model.model.mlp_in.fused.lora_B.weight" if style == "peft" else
                  "lora_unet_mlp_in_fused.lora_up.weight" if style == "kohya" else
                  "transformer.mlp_in.fused.lora_B.weight"]
    assert fused.shape == (48, 4)
    lora = read_lora(path.parent if style == "peft" else path, key_map)
    assert lora.style == style and not lora.unmapped
    assert sorted(lora.layers) == ["blocks.0.mlp.0", "blocks.1.mlp.0", "head"]
    for name, delta in lora.deltas().items():
        torch.testing.assert_close(delta, deltas[name], **FP32)


def test_peft_config_keeps_scale_one_for_mixed_ranks(tmp_path):
    model, _, key_map = nested_adapter()
    result = write_lora(collapsed_lora_state(model), tmp_path, "peft", key_map=key_map)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert result.modules == {"head": 2, "mlp_in.fused": 4}
    assert result.skipped == {"embed": "no counterpart in the file's layout"}
    assert config["rank_pattern"] == config["alpha_pattern"] in ({"head": 2}, {"mlp_in.fused": 4})
    assert config["r"] == config["lora_alpha"]


def test_alpha_and_peft_scales_are_folded_into_b_when_read(tmp_path):
    lora_a, lora_b = pair(4, 3)
    save_file({"lora_unet_head.lora_down.weight": lora_a, "lora_unet_head.lora_up.weight": lora_b,
               "lora_unet_head.alpha": torch.tensor(1.0)}, str(tmp_path / "k.safetensors"))
    key_map = FusedKeyMap([], passthrough=["head"])
    lora = read_lora(tmp_path / "k.safetensors", key_map)
    torch.testing.assert_close(lora.deltas()["head"], 0.25 * lora_b @ lora_a, **FP32)
    peft = tmp_path / "peft"
    peft.mkdir()
    save_file({"base_model.model.head.lora_A.weight": lora_a, "base_model.model.head.lora_B.weight": lora_b},
              str(peft / "adapter_model.safetensors"))
    (peft / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8,
                                                          "use_rslora": True}))
    torch.testing.assert_close(read_lora(peft).deltas()["head"], 4.0 * lora_b @ lora_a, **FP32)  # 8 / sqrt(4)


def test_what_cannot_be_read_is_listed(tmp_path):
    lora_a, lora_b = pair(2, 3)
    save_file({"transformer.head.lora_A.weight": lora_a, "transformer.head.lora_B.weight": lora_b,
               "transformer.tail.lora_A.weight": lora_a.clone(), "transformer.head.dora_scale": torch.ones(3),
               "lora_unet_blocks_0_x.lora_down.weight": lora_a.clone(), "transformer.odd.lora_A.weight": lora_a.clone(),
               "transformer.odd.lora_B.weight": lora_b.T.contiguous()}, str(tmp_path / "l.safetensors"))
    lora = read_lora(tmp_path / "l.safetensors")
    assert sorted(lora.layers) == ["head"]
    assert "not a LoRA weight" in lora.unmapped.pop("transformer.head.dora_scale")
    assert lora.unmapped == {
        "tail": "has lora_A/down but not its other half",
        "lora_unet_blocks_0_x.lora_down.weight": "kohya name 'blocks_0_x' matches no module (no key map given)",
        "odd": "A (2, 5) and B (2, 3) are not (r, k) and (d, r)",
    }
    unknown = read_lora(tmp_path / "l.safetensors", FusedKeyMap([]))
    assert unknown.unmapped["head"] == "no such module in the model's layout"


def test_a_hydralora_adapter_is_not_read_as_a_lora(tmp_path):
    model = build_nested()
    hydralora.inject(model, HydraConfig(r=2, num_heads=2, mixing="learned"))
    hydralora.save_adapter(model, tmp_path)
    with pytest.raises(ValueError, match="is a HydraLoRA adapter, not a LoRA"):
        read_lora(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_lora(tmp_path / "none.safetensors")
