"""`ptta export` and the read-back of every format on the tiny HunyuanVideo.

The original layout's names are not typed here: they come from running diffusers' own
original -> diffusers conversion (`convert_hunyuan_video_transformer_to_diffusers`) on the tiny
model's weights laid out by our map, which must give the tiny model back exactly. diffusers hard-codes
the 13B model's hidden size 3072 for splitting `linear1`; the tiny model runs the same source with its
own hidden size, and a 3072-wide model on the meta device runs it unchanged.
"""

from __future__ import annotations

import inspect
import json
import re

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_train_fixtures import tiny_model_dir  # noqa: F401

import hydralora
from ptta.cli import main
from ptta.config import DEFAULT_TARGET_MODULES
from ptta.models.hunyuan_video import load_transformer
from ptta.models.hunyuan_video_lora import SWAPPED_HALVES, diffusers_parts, original_names, read_lora_file

FP32 = {"rtol": 1e-5, "atol": 1e-6}
HIDDEN = 20  # the tiny model: 2 heads x 10
# ComfyUI's HunyuanVideo LoRA key map (comfy/lora.py, model_lora_keys_unet) for the blocks
COMFY_BLOCK_KEY = re.compile(r"(transformer|diffusion_model)\.(double_blocks\.\d+\.(img|txt)_(attn_qkv|attn_proj|mlp\.fc1|"
                             r"mlp\.fc2|mod\.linear)|single_blocks\.\d+\.(linear1|linear2|modulation\.linear))"
                             r"\.lora_[AB]\.weight")


def diffusers_function(module, name: str, hidden: int):
    """A diffusers conversion function, its hard-coded hidden size 3072 replaced by `hidden`."""
    source = inspect.getsource(getattr(module, name))
    assert source.count("hidden_size = 3072") == 1, "diffusers' conversion changed: review the map"
    namespace = dict(vars(module))
    exec(source.replace("hidden_size = 3072", f"hidden_size = {hidden}"), namespace)
    return namespace[name]


def to_original_layout(transformer) -> dict[str, torch.Tensor]:
    """Every Linear's weight and bias of a diffusers HunyuanVideo, renamed and fused by our map."""
    linears = {n: m for n, m in transformer.named_modules() if isinstance(m, torch.nn.Linear)}
    state = {}
    for name in linears:
        original = original_names(name)[0]
        for kind in ("weight", "bias"):
            tensor = torch.cat([getattr(linears[part], kind).detach() for part in diffusers_parts(original)])
            if original in SWAPPED_HALVES:
                first, second = tensor.chunk(2)
                tensor = torch.cat([second, first])
            state[f"{original}.{kind}"] = tensor
    return state


@pytest.fixture(scope="module")
def original_linear_names(tiny_model_dir) -> set[str]:
    """The original layout's Linear names of the tiny model, checked against diffusers' conversion."""
    from diffusers.loaders import single_file_utils

    transformer = load_transformer(tiny_model_dir, torch.float32)
    convert = diffusers_function(single_file_utils, "convert_hunyuan_video_transformer_to_diffusers", HIDDEN)
    original = to_original_layout(transformer)
    back = convert(dict(original))
    linears = {f"{n}.{k}": getattr(m, k) for n, m in transformer.named_modules()
               if isinstance(m, torch.nn.Linear) for k in ("weight", "bias")}
    assert sorted(back) == sorted(linears)
    for key, tensor in linears.items():
        torch.testing.assert_close(back[key], tensor.detach(), rtol=0, atol=0)
    return {key.removesuffix(".weight") for key in original if key.endswith(".weight")}


def test_the_map_inverts_diffusers_conversion_on_the_13b_width():
    from diffusers import HunyuanVideoTransformer3DModel
    from diffusers.loaders.single_file_utils import convert_hunyuan_video_transformer_to_diffusers

    with torch.device("meta"):
        model = HunyuanVideoTransformer3DModel(num_attention_heads=24, attention_head_dim=128, num_layers=1,
                                               num_single_layers=1, num_refiner_layers=1)
    back = convert_hunyuan_video_transformer_to_diffusers(to_original_layout(model))
    shapes = {f"{n}.{k}": tuple(getattr(m, k).shape) for n, m in model.named_modules()
              if isinstance(m, torch.nn.Linear) for k in ("weight", "bias")}
    assert {key: tuple(t.shape) for key, t in back.items()} == shapes


# -- adapters on the tiny model ---------------------------------------------------------------------


def make_adapter(model_dir, out, seed=0, **config):
    """A saved adapter with random B (and learned omega), and the adapter's own per-layer deltas."""
    transformer = load_transformer(model_dir, torch.float32)
    settings = {"r": 3, "alpha": 6.0, "num_heads": 3, "mixing": "learned", **config}
    hydralora.inject(transformer, hydralora.HydraConfig(**settings))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in hydralora.hydra_layers(transformer):
            layer.lora_B.copy_(0.3 * torch.randn(layer.lora_B.shape, generator=generator))
            if layer.config.mixing == "learned":
                layer.head_weights.copy_(torch.rand(layer.num_heads, generator=generator) + 0.5)
    hydralora.save_adapter(transformer, out)
    return transformer


def adapter_deltas(transformer, heads=None) -> dict[str, torch.Tensor]:
    omega = None if heads is None else torch.tensor(heads, dtype=torch.float32)
    return {name: layer.delta_weight(omega) for name, layer in hydralora.hydra_layers(transformer)}


def file_deltas(path) -> dict[str, torch.Tensor]:
    """B @ A * alpha/rank per module, keyed as in the file (the original layout for original/kohya)."""
    state, out = load_file(str(path)), {}
    for key in state:
        for down, up in ((".lora_A.weight", ".lora_B.weight"), (".lora_down.weight", ".lora_up.weight")):
            if key.endswith(down):
                stem = key.removesuffix(down)
                lora_a, lora_b = state[key], state[stem + up]
                alpha = state.get(stem + ".alpha")
                scale = 1.0 if alpha is None else float(alpha) / lora_a.shape[0]
                out[stem] = scale * lora_b @ lora_a
    return out


def fused_expected(deltas: dict[str, torch.Tensor], transformer) -> dict[str, torch.Tensor]:
    """The adapter's deltas stacked as the original layout stacks its modules (zeros where unadapted)."""
    modules = dict(transformer.named_modules())
    out = {}
    for name in deltas:
        original = original_names(name)[0]
        stacked = torch.cat([deltas.get(part, torch.zeros_like(modules[part].weight)) for part in diffusers_parts(original)])
        if original in SWAPPED_HALVES:
            first, second = stacked.chunk(2)
            stacked = torch.cat([second, first])
        out[original] = stacked
    return out


@pytest.fixture(scope="module")
def all_linear(tiny_model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("all_linear") / "adapter"
    return folder, make_adapter(tiny_model_dir, folder, target_modules="all-linear")


@pytest.mark.parametrize("fmt", ["diffusers", "peft", "original", "kohya"])
def test_every_format_holds_the_adapters_delta_and_reads_back(all_linear, original_linear_names, tmp_path, fmt):
    folder, transformer = all_linear
    expected = adapter_deltas(transformer)
    out = tmp_path / ("peft" if fmt == "peft" else f"lora_{fmt}.safetensors")
    assert main(["export", str(folder), "--format", fmt, "--out", str(out)]) == 0
    path = out / "adapter_model.safetensors" if fmt == "peft" else out
    in_file = file_deltas(path)
    if fmt in ("diffusers", "peft"):
        prefix = "base_model.model." if fmt == "peft" else "transformer."
        want = {prefix + name: delta for name, delta in expected.items()}
    else:
        want = fused_expected(expected, transformer)
        prefix = "lora_unet_" if fmt == "kohya" else "transformer."
        names = original_linear_names if fmt == "original" else {n.replace(".", "_") for n in original_linear_names}
        assert set(want) == original_linear_names  # all-linear: every Linear has a place
        want = {prefix + (name if fmt == "original" else name.replace(".", "_")): d for name, d in want.items()}
        assert {key.removeprefix(prefix) for key in in_file} == names
    assert sorted(in_file) == sorted(want)
    for key, delta in want.items():
        torch.testing.assert_close(in_file[key], delta, **FP32)
    lora = read_lora_file(out)
    assert not lora.unmapped and sorted(lora.layers) == sorted(expected)
    for name, delta in lora.deltas().items():
        torch.testing.assert_close(delta, expected[name], **FP32)


def test_original_keys_are_the_layouts_and_comfyuis_and_kohya_alpha_is_rank(all_linear, original_linear_names, tmp_path):
    folder, _ = all_linear
    main(["export", str(folder), "--format", "original", "--out", str(tmp_path / "o.safetensors")])
    main(["export", str(folder), "--format", "kohya", "--out", str(tmp_path / "k.safetensors")])
    original = load_file(str(tmp_path / "o.safetensors"))
    assert {key.removeprefix("transformer.").rsplit(".lora_", 1)[0] for key in original} == original_linear_names
    blocks = [key for key in original if "blocks." in key and "txt_in." not in key]
    assert blocks and all(COMFY_BLOCK_KEY.fullmatch(key) for key in blocks)
    assert original["transformer.single_blocks.0.linear1.lora_A.weight"].shape == (4 * 3, HIDDEN)  # q, k, v, mlp
    assert original["transformer.double_blocks.0.img_attn_qkv.lora_B.weight"].shape == (3 * HIDDEN, 3 * 3)
    kohya = load_file(str(tmp_path / "k.safetensors"))
    for key in [k for k in kohya if k.endswith(".alpha")]:
        assert float(kohya[key]) == kohya[key.replace(".alpha", ".lora_down.weight")].shape[0]


def test_diffusers_reads_our_original_file_to_the_same_deltas(all_linear, tmp_path):
    from diffusers.loaders import lora_conversion_utils

    folder, transformer = all_linear
    path = tmp_path / "o.safetensors"
    main(["export", str(folder), "--format", "original", "--out", str(path)])
    convert = diffusers_function(lora_conversion_utils, "_convert_hunyuan_video_lora_to_diffusers", HIDDEN)
    state = convert(load_file(str(path)))
    expected = adapter_deltas(transformer)
    wrong = []
    for key in [k for k in state if k.endswith(".lora_A.weight")]:
        name = key.removeprefix("transformer.").removesuffix(".lora_A.weight")
        lora_a, lora_b = state[key], state[key.replace(".lora_A.", ".lora_B.")]
        if lora_b.shape[1] != lora_a.shape[0] or not torch.allclose(lora_b @ lora_a, expected[name], **FP32):
            wrong.append(name)
    # every dual- and single-stream block module (the default targets) comes out exact. diffusers' LoRA
    # converter treats lora_A like a weight in two places: it splits the token refiner's self_attn_qkv
    # lora_A into thirds and swaps the halves of the final layer's lora_A rows as well as lora_B's
    refiner_qkv = {f"context_embedder.token_refiner.refiner_blocks.0.attn.to_{x}" for x in "qkv"}
    assert set(wrong) == refiner_qkv | {"norm_out.linear"}


def file_deltas_of(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key.removeprefix("transformer.").removesuffix(".lora_A.weight"):
            state[key.replace(".lora_A.", ".lora_B.")] @ state[key] for key in state if key.endswith(".lora_A.weight")}


def test_partial_groups_get_zero_rows_and_an_unknown_mlp_width_skips_with_a_reason(tiny_model_dir, tmp_path):
    targets = ["single_transformer_blocks.0.attn.to_q", "transformer_blocks.0.attn.add_k_proj", "norm_out.linear"]
    transformer = make_adapter(tiny_model_dir, tmp_path / "a", target_modules="|".join(map(re.escape, targets)))
    expected = adapter_deltas(transformer)
    result = main(["export", str(tmp_path / "a"), "--format", "original", "--out", str(tmp_path / "x.safetensors")])
    assert result == 0
    assert "single_blocks.0.linear1" not in str(load_file(str(tmp_path / "x.safetensors")).keys())

    out = tmp_path / "o.safetensors"
    assert main(["export", str(tmp_path / "a"), "--format", "original", "--out", str(out),
                 "--model", str(tiny_model_dir)]) == 0
    in_file = file_deltas(out)
    for original, delta in fused_expected(expected, transformer).items():
        torch.testing.assert_close(in_file["transformer." + original], delta, **FP32)
    assert in_file["transformer.single_blocks.0.linear1"][HIDDEN:].abs().max() == 0  # k, v, mlp rows zero
    lora = read_lora_file(out)
    assert sorted(lora.layers) == sorted(targets)
    for name, delta in lora.deltas().items():
        torch.testing.assert_close(delta, expected[name], **FP32)


def test_skipped_layers_are_printed(tiny_model_dir, tmp_path, capsys):
    make_adapter(tiny_model_dir, tmp_path / "a", target_modules=["single_transformer_blocks.0.attn.to_q",
                                                                  "transformer_blocks.0.attn.to_q"])
    assert main(["export", str(tmp_path / "a"), "--format", "kohya", "--out", str(tmp_path / "k")]) == 0
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'k' / 'lora_kohya.safetensors'} (kohya): 1 LoRA modules" in out
    assert "skipped single_transformer_blocks.0.attn.to_q: single_blocks.0.linear1 also holds proj_mlp" in out
    assert "1 adapter layer(s) skipped" in out


def test_a_run_folder_uses_its_recorded_model_and_copies_text_encoding(tiny_model_dir, tmp_path, capsys):
    run = tmp_path / "run"
    make_adapter(tiny_model_dir, run / "adapter", target_modules=["single_transformer_blocks.0.attn.to_v"])
    (run / "adapter" / "text_encoding.json").write_text(json.dumps({"max_sequence_length": 7, "fps": 12.0}))
    (run / "config.yaml").write_text(f"model: {tiny_model_dir}\n")
    assert main(["export", str(run), "--format", "original", "--out", str(tmp_path / "out" / "x.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "MLP width 80 read from the config of model" in out and "skipped" not in out
    assert json.loads((tmp_path / "out" / "text_encoding.json").read_text())["max_sequence_length"] == 7


def test_router_adapter_needs_heads_and_exports_the_pinned_mix(tiny_model_dir, tmp_path, capsys):
    transformer = make_adapter(tiny_model_dir, tmp_path / "r", mixing="router", target_modules=DEFAULT_TARGET_MODULES)
    assert main(["export", str(tmp_path / "r"), "--format", "original", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "per-token router" in err and "pin the mix with --heads, 3 weights (e.g. --heads 1,0,0)" in err
    assert main(["export", str(tmp_path / "r"), "--format", "original", "--out", str(tmp_path / "o"),
                 "--heads", "1,0"]) == 2
    assert "got 2 weights but the adapter has 3 heads" in capsys.readouterr().err
    heads = [0.2, 0.5, 0.3]
    assert main(["export", str(tmp_path / "r"), "--format", "original", "--out", str(tmp_path / "o"),
                 "--heads", ",".join(map(str, heads))]) == 0
    expected = adapter_deltas(transformer, heads)
    lora = read_lora_file(tmp_path / "o" / "lora_original.safetensors")
    assert sorted(lora.layers) == sorted(expected)
    for name, delta in lora.deltas().items():
        torch.testing.assert_close(delta, expected[name], **FP32)


def test_cli_errors(tmp_path, capsys):
    assert main(["export", str(tmp_path / "missing"), "--format", "original", "--out", str(tmp_path / "o")]) == 2
    assert "no such adapter or run folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["export", str(tmp_path / "empty"), "--format", "diffusers", "--out", str(tmp_path / "o")]) == 2
    assert "no adapter_model.safetensors there or in" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["export", str(tmp_path), "--format", "comfy", "--out", str(tmp_path / "o")])
    assert exc.value.code == 2 and "invalid choice: 'comfy'" in capsys.readouterr().err


def test_a_diffusion_pipe_style_file_loads_back(tmp_path):
    """Dense rank-r LoRAs on the fused modules, `transformer.` prefix, a PEFT config beside (alpha 2r)."""
    from diffusers.loaders import lora_conversion_utils

    generator = torch.Generator().manual_seed(5)
    shapes = {"double_blocks.0.img_attn_qkv": (3 * HIDDEN, HIDDEN), "double_blocks.0.txt_mlp.fc2": (HIDDEN, 80),
              "single_blocks.0.linear1": (3 * HIDDEN + 80, HIDDEN), "single_blocks.0.modulation.linear": (60, HIDDEN),
              "final_layer.adaLN_modulation.1": (40, HIDDEN)}
    state = {}
    for name, (d, k) in shapes.items():
        state[f"transformer.{name}.lora_A.weight"] = torch.randn(4, k, generator=generator)
        state[f"transformer.{name}.lora_B.weight"] = torch.randn(d, 4, generator=generator)
    save_file(state, str(tmp_path / "adapter_model.safetensors"))
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8}))
    lora = read_lora_file(tmp_path)
    assert lora.style == "peft" and not lora.unmapped
    convert = diffusers_function(lora_conversion_utils, "_convert_hunyuan_video_lora_to_diffusers", HIDDEN)
    expected = file_deltas_of(convert(dict(state)))
    # diffusers swaps the final layer's lora_A rows too (see above): its delta is the original's, halves swapped
    final = state["transformer.final_layer.adaLN_modulation.1.lora_B.weight"] @ \
        state["transformer.final_layer.adaLN_modulation.1.lora_A.weight"]
    expected["norm_out.linear"] = torch.cat(final.chunk(2)[::-1])
    assert sorted(lora.layers) == sorted(expected)
    for name, delta in lora.deltas().items():
        torch.testing.assert_close(delta, 2.0 * expected[name], **FP32)  # scale lora_alpha / r = 2


def test_unusable_tensors_are_reported_not_dropped(tmp_path):
    state = {"transformer.double_blocks.0.img_mod.linear.lora_A.weight": torch.ones(2, HIDDEN),
             "transformer.double_blocks.0.img_mod.linear.lora_B.weight": torch.ones(120, 2),
             "transformer.double_blocks.0.img_norm1.lora_A.weight": torch.ones(2, HIDDEN),
             "transformer.double_blocks.0.img_norm1.lora_B.weight": torch.ones(HIDDEN, 2),
             "lora_unet_double_blocks_0_img_mlp_fc1.lora_down.weight": torch.ones(2, HIDDEN),
             "transformer.double_blocks.0.img_attn_q_norm.dora_scale": torch.ones(HIDDEN)}
    save_file(state, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError, match=r"3 tensor\(s\) or module\(s\) cannot be applied") as exc:
        read_lora_file(tmp_path / "bad.safetensors")
    message = str(exc.value)
    assert "img_norm1: no such Linear" in message and "img_mlp.fc1: has lora_A/down but not its other half" in message
    assert "dora_scale: not a LoRA weight" in message


def transformer_output(pipe) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    inputs = {"hidden_states": torch.randn(1, 4, 3, 8, 8, generator=generator), "timestep": torch.tensor([500]),
              "encoder_hidden_states": torch.randn(1, 5, 16, generator=generator),
              "encoder_attention_mask": torch.ones(1, 5), "pooled_projections": torch.randn(1, 8, generator=generator),
              "guidance": torch.tensor([6000.0])}
    with torch.no_grad():
        return pipe.transformer(**inputs, return_dict=False)[0]


def test_sample_applies_every_format_as_the_adapter(all_linear, tiny_model_dir, tmp_path):
    from ptta.rendering import load_sampling_pipeline

    folder, _ = all_linear
    cpu = torch.device("cpu")
    expected = transformer_output(load_sampling_pipeline(tiny_model_dir, cpu, adapter=folder))
    base = transformer_output(load_sampling_pipeline(tiny_model_dir, cpu))
    assert (expected - base).abs().max() > 1e-2
    for fmt in ("diffusers", "peft", "original", "kohya"):
        out = tmp_path / fmt
        assert main(["export", str(folder), "--format", fmt, "--out", str(out)]) == 0
        pipe = load_sampling_pipeline(tiny_model_dir, cpu, lora=out if fmt == "peft" else next(out.iterdir()))
        torch.testing.assert_close(transformer_output(pipe), expected, rtol=1e-4, atol=1e-5, msg=fmt)


def test_ptta_sample_lora_refuses_a_file_it_cannot_apply_before_loading(tmp_path, capsys):
    save_file({"transformer.double_blocks.0.img_norm1.lora_A.weight": torch.ones(2, HIDDEN),
               "transformer.double_blocks.0.img_norm1.lora_B.weight": torch.ones(HIDDEN, 2)},
              str(tmp_path / "odd.safetensors"))
    assert main(["sample", "a cat", "--out", str(tmp_path / "s"), "--lora", str(tmp_path / "odd.safetensors")]) == 2
    assert "img_norm1: no such Linear in HunyuanVideo" in capsys.readouterr().err
