"""Put HydraLoRA adapters into any nn.Module, take them out again, and act on all of them at once."""

from __future__ import annotations

import re
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn as nn

from hydralora.config import HydraConfig
from hydralora.layer import CollapseGuard, HydraLinear, HydraMergeError, overrides_linear_forward


class HydraInjectionError(ValueError):
    """The model and the config's target patterns do not fit together."""


def name_matches(name: str, pattern: list[str] | str | None) -> bool:
    """PEFT's rules: a string is a full-match regex, a list holds exact names or name suffixes."""
    if pattern is None:
        return False
    if isinstance(pattern, str):
        return re.fullmatch(pattern, name) is not None
    return any(name == p or name.endswith("." + p) for p in pattern)


def hydra_layers(model: nn.Module) -> Iterator[tuple[str, HydraLinear]]:
    """Every HydraLinear once (a shared one under its first name), in module order."""
    for name, module in model.named_modules():
        if isinstance(module, HydraLinear):
            yield name, module


def _child_slots(model: nn.Module) -> Iterator[tuple[str, nn.Module, str, nn.Module]]:
    """(full name, parent, attribute, child) for every parent->child edge, shared children included."""
    for parent_name, parent in model.named_modules(remove_duplicate=False):
        for attr, child in parent._modules.items():
            if child is not None:
                yield (f"{parent_name}.{attr}" if parent_name else attr), parent, attr, child


def _peft_layer_owners(model: nn.Module) -> dict[int, str]:
    """id of every module that is, or sits inside, a PEFT adapter layer -> that layer's name.

    Empty when PEFT was never imported: a model cannot hold PEFT layers then, and importing PEFT
    here only to find none would cost every inject a second.
    """
    tuners = sys.modules.get("peft.tuners.tuners_utils")
    if tuners is None:
        return {}
    owners = {}
    for name, module in model.named_modules():
        if isinstance(module, tuners.BaseTunerLayer):
            for inner in module.modules():
                owners[id(inner)] = name
    return owners


ALL_LINEAR = "all-linear"


def _is_target(name: str, parent: nn.Module, module: nn.Module, config: HydraConfig,
               skip: frozenset[int] = frozenset()) -> bool:
    """Whether `config` selects `module` (found as `name` under `parent`); `skip` holds the ids
    "all-linear" leaves out besides its per-module rules (`_all_linear_skips`)."""
    if name_matches(name, config.exclude_modules):
        return False
    if config.target_modules == ALL_LINEAR:
        if id(module) in skip:
            return False
        # as PEFT: transformers' Conv1D (GPT-2's linear layer) counts, and inject refuses it by name
        if _is_conv1d(module):
            return True
        # nn.MultiheadAttention reads out_proj.weight itself instead of calling out_proj (as PEFT notes);
        # a Linear subclass with its own forward (quantized, custom) would be bypassed by the adapter
        return (isinstance(module, nn.Linear) and not isinstance(parent, nn.MultiheadAttention)
                and not overrides_linear_forward(module))
    return name_matches(name, config.target_modules)



def _output_embedding(model: nn.Module) -> nn.Module | None:
    """The output layer PEFT's "all-linear" leaves out: `get_output_embeddings()` of a transformers
    model (Llama's lm_head); None for any other model (diffusers', plain modules), as in PEFT."""
    modeling = sys.modules.get("transformers.modeling_utils")  # not imported: cannot be such a model
    if modeling is None or not isinstance(model, modeling.PreTrainedModel):
        return None
    try:
        output = model.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        return None
    return output if isinstance(output, nn.Module) else None


def _all_linear_skips(model: nn.Module, config: HydraConfig) -> frozenset[int]:
    if config.target_modules != ALL_LINEAR:
        return frozenset()
    output = _output_embedding(model)
    return frozenset() if output is None else frozenset({id(output)})


def _is_conv1d(module: nn.Module) -> bool:
    """transformers' Conv1D: GPT-2's linear layer, its weight stored (in, out), transposed to nn.Linear's."""
    pytorch_utils = sys.modules.get("transformers.pytorch_utils")
    return pytorch_utils is not None and isinstance(module, pytorch_utils.Conv1D)


def _target_slots(model: nn.Module, config: HydraConfig,
                  slots: list[tuple[str, nn.Module, str, nn.Module]] | None = None
                  ) -> list[tuple[str, nn.Module, str, nn.Module]]:
    """The (name, parent, attribute, child) edges `config` selects, before any check of what they are."""
    skip = _all_linear_skips(model, config)
    slots = list(_child_slots(model)) if slots is None else slots
    return [slot for slot in slots if _is_target(slot[0], slot[1], slot[3], config, skip)]


def _some(items: list[str], limit: int = 3, sep: str = ", ") -> str:
    """'a, b, c' or 'a, b, c and 21 more': long lists summarised, so an error stays a few lines."""
    if len(items) <= limit:
        return sep.join(items)
    return f"{sep.join(items[:limit])} and {len(items) - limit} more"


def _short_name(name: str) -> str:
    """What a name-suffix pattern would use: the last part, with its parent when it is an index (to_out.0)."""
    parts = name.split(".")
    return ".".join(parts[-2:]) if parts[-1].isdigit() and len(parts) > 1 else parts[-1]


def _pattern_text(pattern: list[str] | str | None, limit: int = 4) -> str:
    if isinstance(pattern, list) and len(pattern) > limit:
        shown = ", ".join(repr(p) for p in pattern[: limit - 1])
        return f"[{shown}, ... {len(pattern)} names]"
    text = repr(pattern)
    return text if len(text) <= 160 else text[:150] + "...'"


def describe_targets(config: HydraConfig) -> str:
    """"target_modules=... (exclude_modules=...)", long pattern lists summarised."""
    text = f"target_modules={_pattern_text(config.target_modules)}"
    if config.exclude_modules is not None:
        text += f" (exclude_modules={_pattern_text(config.exclude_modules)})"
    return text


def _nothing_matched(model: nn.Module, config: HydraConfig) -> str:
    """The patterns, and the model's Linear names (all of a few; else a count, two, and their short names)."""
    modules = list(model.named_modules(remove_duplicate=False))
    linears = [name for name, child in modules if isinstance(child, nn.Linear)]
    conv1d = [name for name, child in modules if _is_conv1d(child)]
    model_name = type(model).__name__
    if not linears:
        has = "the model has no nn.Linear"
    elif len(linears) <= 8:
        has = f"this {model_name} has {len(linears)} nn.Linear: {', '.join(linears)}"
    else:
        leaves = list(dict.fromkeys(_short_name(name) for name in linears))
        has = (f"this {model_name} has {len(linears)} nn.Linear, e.g. {_some(linears, 2)}; "
               f"named {_some(leaves, 10)}")
    output = _output_embedding(model)
    if config.target_modules == ALL_LINEAR and isinstance(output, nn.Linear):
        has += "; all-linear leaves out the output layer, as PEFT does"
    if conv1d:
        has += f"; its {len(conv1d)} transformers Conv1D layers cannot take a HydraLoRA adapter"
    return f"{describe_targets(config)} matched no nn.Linear: {has}"


def _problems(model: nn.Module, config: HydraConfig,
              matched: list[tuple[str, nn.Module, str, nn.Module]]) -> str | None:
    """The first kind of match that cannot take an adapter, all its matches counted; None if none."""
    peft_owners = _peft_layer_owners(model)
    kinds: dict[str, list[str]] = {"peft": [], "conv1d": [], "other": [], "mha": [], "forward": []}
    owner = None
    for name, parent, _, child in matched:
        if id(child) in peft_owners:
            owner = owner or peft_owners[id(child)]
            kinds["peft"].append(repr(name))
        elif _is_conv1d(child):
            kinds["conv1d"].append(name)
        elif not isinstance(child, nn.Linear):
            kinds["other"].append(f"{name!r}, a {type(child).__name__}")
        elif isinstance(parent, nn.MultiheadAttention):
            kinds["mha"].append(repr(name))
        elif overrides_linear_forward(child):
            kinds["forward"].append(f"{name!r} is a {type(child).__module__}.{type(child).__qualname__}")
    targets = describe_targets(config)
    if kinds["peft"]:
        return (
            f"{targets} matched {_some(kinds['peft'])}, part of the PEFT adapter layer {owner!r}: HydraLoRA does not "
            f"stack on PEFT adapters; merge them into the base first (model.merge_and_unload(), or pipe.fuse_lora() "
            f"then pipe.unload_lora_weights()), or exclude them with exclude_modules"
        )
    if kinds["conv1d"]:
        found = kinds["conv1d"]
        return (
            f"{targets} matched {len(found)} transformers Conv1D layer{'s' if len(found) != 1 else ''} of this "
            f"{type(model).__name__} ({_some(found, 2)}): HydraLoRA adapts nn.Linear only, and Conv1D (GPT-2's "
            f"linear layer, weight stored transposed) is not supported; use PEFT for this model, or leave them out "
            f"with exclude_modules and name nn.Linear targets"
        )
    if kinds["other"]:
        count = f"{len(kinds['other'])} modules that are not nn.Linear: " if len(kinds["other"]) > 1 else ""
        return (
            f"{targets} matched {count}{_some(kinds['other'], sep='; ')}: only nn.Linear can take a HydraLoRA "
            f"adapter; narrow target_modules to the Linear names inside, or exclude them with exclude_modules"
        )
    if kinds["mha"]:
        return (
            f"{_some(kinds['mha'])} belongs to an nn.MultiheadAttention, which uses out_proj.weight directly and never "
            f"calls the module, so an adapter there would be ignored; exclude it with exclude_modules"
        )
    if kinds["forward"]:
        return (
            f"{_some(kinds['forward'], 2)}, an nn.Linear subclass with its own forward (quantized or custom), which a "
            f"HydraLinear would bypass; exclude it with exclude_modules"
        )
    return None


def inject(model: nn.Module, config: HydraConfig) -> nn.Module:
    """Replace the matching nn.Linear modules of `model` by HydraLinear, in place; return `model`.

    Every parameter outside the adapters is frozen. A Linear reachable under several names gets
    one adapter, placed at each of them. "all-linear" selects the modules PEFT's does: every
    nn.Linear but a transformers model's output layer (`get_output_embeddings()`, Llama's lm_head),
    and warns when that is a single module. Errors, each naming the patterns and summarising long
    lists: nothing matched (with the model's Linear names), a match that is not nn.Linear (a
    transformers Conv1D is refused by name), or a model that already has adapters.
    """
    if isinstance(model, HydraLinear) or any(True for _ in hydra_layers(model)):
        raise HydraInjectionError("the model already has HydraLoRA adapters: call hydralora.unload(model) first")
    if isinstance(model, nn.Linear):
        raise HydraInjectionError("cannot replace the root module itself: wrap the nn.Linear in a container")
    slots = list(_child_slots(model))
    matched = _target_slots(model, config, slots)
    problem = _problems(model, config, matched)
    if problem is not None:
        raise HydraInjectionError(problem)
    selected: dict[int, nn.Module] = {id(child): child for _, _, _, child in matched}
    if not selected:
        raise HydraInjectionError(_nothing_matched(model, config))
    if config.target_modules == ALL_LINEAR and len(selected) == 1:
        name = matched[0][0]
        left_out = list(dict.fromkeys(
            repr(n) for n, _, _, child in slots if isinstance(child, nn.Linear) and id(child) not in selected
        ))
        why = (f"; it left out {_some(left_out, 2)} (the output layer, nn.MultiheadAttention internals, Linear "
               f"subclasses with their own forward, exclude_modules)") if left_out else ""
        warnings.warn(
            f"target_modules='all-linear' found a single module in this {type(model).__name__}: {name!r}{why}. "
            f"Is this the model meant to be adapted? Name the target explicitly to make it deliberate",
            UserWarning,
            stacklevel=2,
        )
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    wrappers = {key: HydraLinear(linear, config) for key, linear in selected.items()}
    # one collapse guard for the whole model: a per-layer-mixed model warns once, not once per layer
    guarded = [wrapper for wrapper in wrappers.values() if wrapper._collapse_guard is not None]
    if guarded:
        guard = CollapseGuard(len(guarded))
        for wrapper in guarded:
            wrapper._collapse_guard = guard
    # a shared Linear is replaced wherever it appears, by the one wrapper made for it
    for _, parent, attr, child in slots:
        if id(child) in wrappers:
            setattr(parent, attr, wrappers[id(child)])
    return model


def unload(model: nn.Module, merge: bool = False) -> nn.Module:
    """Give back plain nn.Linear modules, with the adapters folded in when `merge`; return `model`.

    With `merge`, every layer is checked first: one that cannot be collapsed, or whose base weight
    is tied to another module, raises before any other is merged and replaced. Without it, merged
    layers are unmerged as `unmerge_adapter` does.
    """
    layers = list(hydra_layers(model))
    if merge:
        to_merge = [(name, layer) for name, layer in layers if not layer.merged]
        for _, layer in to_merge:
            layer.per_layer_head_weights()  # HydraMergeError for a router or a per-token override
        _refuse_tied_base_weights(model, to_merge)
        for _, layer in to_merge:
            layer.merge(keep_original=False)
    else:
        _unmerge_in_reverse([layer for _, layer in layers])
    for _, parent, attr, child in list(_child_slots(model)):
        if isinstance(child, HydraLinear):
            setattr(parent, attr, child.base_layer)
    return model


def merge_adapter(model: nn.Module, keep_original: bool = True) -> None:
    """Fold every adapter into its base weight (per-layer mixing only; see HydraLinear.merge).

    Every layer is checked first: a merged one, a router, a per-token override or a base weight
    tied to another module raises before any is merged.
    """
    layers = _require_layers(model)
    for name, layer in layers:
        if layer.merged:
            raise HydraMergeError(f"{name!r}: layer is already merged")
        layer.per_layer_head_weights()
    _refuse_tied_base_weights(model, layers)
    for _, layer in layers:
        layer.merge(keep_original=keep_original)


def unmerge_adapter(model: nn.Module) -> None:
    """Undo `merge_adapter`: last layer first, so a base weight tied between layers comes back exactly."""
    layers = _require_layers(model)
    for name, layer in layers:
        if not layer.merged:
            raise HydraMergeError(f"{name!r}: layer is not merged")
    _unmerge_in_reverse([layer for _, layer in layers])


def _refuse_tied_base_weights(model: nn.Module, layers: list[tuple[str, HydraLinear]]) -> None:
    """Merging writes the base weight in place, so a weight tied to another module (an input
    embedding under lm_head, a second adapted Linear) would change there too, and the output with it."""
    holders: dict[object, list[str]] = {}
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            holders.setdefault(_memory_key(param), []).append(f"{module_name}.{param_name}" if module_name else param_name)
    for name, layer in layers:
        held_by = holders.get(_memory_key(layer.base_layer.weight), [])
        others = [h for h in held_by if h != f"{name}.base_layer.weight"]
        if others:
            raise HydraMergeError(
                f"{name!r}: its base weight is tied to {others}, which merging would change too; untie it first "
                f"(layer.base_layer.weight = nn.Parameter(layer.base_layer.weight.detach().clone())), leave the "
                f"layer out of target_modules, or keep the adapter unmerged"
            )


def _memory_key(param: torch.Tensor) -> object:
    """What two tied parameters share: the address of their data (two Parameter objects can wrap
    one tensor's memory), or the object itself where there is no memory (meta). Not the storage:
    weights loaded as views into one buffer (a memory-mapped file) start at different addresses."""
    if param.device.type == "meta" or param.data_ptr() == 0:
        return id(param)
    return (param.device, param.data_ptr())


def _unmerge_in_reverse(layers: list[HydraLinear]) -> None:
    """Unmerge the merged layers last to first. Layers whose base weight is tied each restore (or
    subtract from) the weight as it was at their merge, so only the reverse order is exact."""
    for layer in reversed(layers):
        if layer.merged:
            layer.unmerge()


def set_head_weights(model: nn.Module, weights: torch.Tensor | None) -> None:
    """Override omega in every layer: (N,), (B, N) per sample, or per token; None restores mixing.

    Weights on another device than a layer are copied there once per device here, not by every
    layer in every forward; weights that require grad are left for each forward to move, so the
    copy is part of the graph that reaches them.
    """
    _set_on_every_layer([layer for _, layer in _require_layers(model)], weights)


def _set_on_every_layer(layers: list[HydraLinear], weights: torch.Tensor | None) -> None:
    moved: dict[torch.device, torch.Tensor] = {}
    for layer in layers:
        given = weights
        if isinstance(weights, torch.Tensor) and not weights.requires_grad:
            device = layer.lora_A.device
            if weights.device != device and device.type != "meta":
                if device not in moved:
                    moved[device] = weights.to(device)
                given = moved[device]
        layer.set_head_weights(given)


@contextmanager
def head_weights(model: nn.Module, weights: torch.Tensor) -> Iterator[nn.Module]:
    """`with head_weights(model, w):` forwards inside use omega = w; the previous state returns after.

    Works for training as for inference: w of shape (B, N) supervises the heads per sample (one-hot
    labels train head k on the samples labelled k only), and gradients reach w if it requires grad.
    Run the backward inside the block when activations are recomputed in the backward (gradient
    checkpointing): the recompute reads the override that is set then.
    """
    layers = [layer for _, layer in _require_layers(model)]
    previous = [layer.head_weights_override for layer in layers]
    try:
        _set_on_every_layer(layers, weights)
        yield model
    finally:
        for layer, old in zip(layers, previous):
            layer.set_head_weights(old)


def balance_loss(model: nn.Module) -> torch.Tensor:
    """balance_loss_weight * the mean over router layers of the last training forward's Switch loss.

    Zero (on the model's device) when no layer has one: no router, weight 0, or an eval forward.
    """
    layers = [layer for _, layer in hydra_layers(model) if layer.last_balance_loss is not None]
    if not layers:
        device = next(model.parameters()).device
        return torch.zeros((), device=device)
    if torch.is_grad_enabled() and any(
        layer.router.weight.requires_grad and not layer.last_balance_loss.requires_grad for layer in layers
    ):
        warnings.warn(
            "balance_loss: the router forward ran without autograd (under torch.no_grad or a reentrant "
            "checkpoint), so the loss carries no gradient; checkpoint with use_reentrant=False",
            stacklevel=2,
        )
    weight = layers[0].config.balance_loss_weight
    return weight * torch.stack([layer.last_balance_loss for layer in layers]).mean()


def adapter_parameters(model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    """(name, parameter) of every trainable adapter parameter."""
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            yield name, parameter


def count_parameters(model: nn.Module) -> dict[str, int]:
    """{'trainable', 'total', 'adapter'} parameter counts (adapter: everything inside HydraLinears but the base)."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    adapter = sum(
        p.numel() for _, layer in hydra_layers(model) for n, p in layer.named_parameters() if not n.startswith("base_layer.")
    )
    return {"trainable": trainable, "total": total, "adapter": adapter}


def _require_layers(model: nn.Module) -> list[tuple[str, HydraLinear]]:
    layers = list(hydra_layers(model))
    if not layers:
        raise HydraInjectionError("the model has no HydraLoRA adapters: call hydralora.inject(model, config) first")
    return layers
