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


def _is_target(name: str, parent: nn.Module, module: nn.Module, config: HydraConfig) -> bool:
    if name_matches(name, config.exclude_modules):
        return False
    if config.target_modules == "all-linear":
        # nn.MultiheadAttention reads out_proj.weight itself instead of calling out_proj (as PEFT notes);
        # a Linear subclass with its own forward (quantized, custom) would be bypassed by the adapter
        return (isinstance(module, nn.Linear) and not isinstance(parent, nn.MultiheadAttention)
                and not overrides_linear_forward(module))
    return name_matches(name, config.target_modules)


def inject(model: nn.Module, config: HydraConfig) -> nn.Module:
    """Replace the matching nn.Linear modules of `model` by HydraLinear, in place; return `model`.

    Every parameter outside the adapters is frozen. A Linear reachable under several names gets
    one adapter, placed at each of them. Errors: nothing matched (the message lists candidates), a
    match that is not nn.Linear, or a model that already has adapters.
    """
    if isinstance(model, HydraLinear) or any(True for _ in hydra_layers(model)):
        raise HydraInjectionError("the model already has HydraLoRA adapters: call hydralora.unload(model) first")
    if isinstance(model, nn.Linear):
        raise HydraInjectionError("cannot replace the root module itself: wrap the nn.Linear in a container")
    slots = list(_child_slots(model))
    peft_owners = _peft_layer_owners(model)
    selected: dict[int, nn.Module] = {}
    for name, parent, _, child in slots:
        if not _is_target(name, parent, child, config):
            continue
        if id(child) in peft_owners:
            raise HydraInjectionError(
                f"target pattern matched {name!r}, part of the PEFT adapter layer {peft_owners[id(child)]!r}: "
                f"HydraLoRA does not stack on PEFT adapters; merge them into the base first (model.merge_and_unload(), "
                f"or pipe.fuse_lora() then pipe.unload_lora_weights()), or exclude it with exclude_modules"
            )
        if not isinstance(child, nn.Linear):
            raise HydraInjectionError(
                f"target pattern matched {name!r}, a {type(child).__name__}: only nn.Linear can take a HydraLoRA "
                f"adapter; narrow target_modules to the Linear names inside it, or exclude it with exclude_modules"
            )
        if isinstance(parent, nn.MultiheadAttention):
            raise HydraInjectionError(
                f"{name!r} belongs to an nn.MultiheadAttention, which uses out_proj.weight directly and never calls "
                f"the module, so an adapter there would be ignored; exclude it with exclude_modules"
            )
        if overrides_linear_forward(child):
            raise HydraInjectionError(
                f"{name!r} is a {type(child).__module__}.{type(child).__qualname__}, an nn.Linear subclass with its "
                f"own forward (quantized or custom), which a HydraLinear would bypass; exclude it with exclude_modules"
            )
        selected[id(child)] = child
    if not selected:
        candidates = [name for name, _, _, child in slots if isinstance(child, nn.Linear)]
        shown = ", ".join(candidates[:30]) + (" ..." if len(candidates) > 30 else "")
        raise HydraInjectionError(
            f"target_modules={config.target_modules!r} (exclude_modules={config.exclude_modules!r}) matched no "
            f"nn.Linear; candidates: {shown or 'none: the model has no nn.Linear'}"
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
