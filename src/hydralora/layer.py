"""`HydraLinear`: a frozen nn.Linear plus a HydraLoRA adapter (shared A, N heads B_i, mixed by omega)."""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn as nn

from hydralora.config import HydraConfig
from hydralora.functional import hydra_linear


class HydraMergeError(RuntimeError):
    """The adapter cannot be folded into the base weight (router mixing, or already merged)."""


class HeadCollapseWarning(UserWarning):
    """Heads mixed per layer are training without head weights per sample: they learn as one LoRA."""


class CollapseGuard:
    """Whether a model's per-layer-mixed layers have warned yet; `inject` gives all of them one,
    so a model warns once, naming how many layers it has, however many layers and steps run."""

    def __init__(self, num_layers: int = 1) -> None:
        self.num_layers = num_layers
        self.warned = False

    def warn(self, config: HydraConfig) -> None:
        self.warned = True
        n, layers = config.num_heads, self.num_layers
        warnings.warn(
            f"HydraLoRA: {layers} layer{'s' if layers != 1 else ''} with mixing={config.mixing!r} and "
            f"num_heads={n} {'are' if layers != 1 else 'is'} training without head weights set per sample. "
            f"With one omega per layer every head receives the same gradient up to its weight "
            f"(dB_i = omega_i * G), so heads that start equal stay equal, and the output only ever depends "
            f"on sum_i omega_i B_i: the adapter trains as a rank-{config.r} LoRA with {n} times the "
            f"parameters, and steering with head weights afterwards does nothing. Use mixing='router', or "
            f"supervise the heads per sample: `with hydralora.head_weights(model, weights): loss = ...; "
            f"loss.backward()` with weights of shape (batch, {n}), e.g. one-hot labels. "
            f"hydralora.head_report(model) measures how far the heads differ. Shown once per model.",
            HeadCollapseWarning,
            stacklevel=2,  # HydraLinear.forward, the call that trains without head weights
        )


class HydraLinear(nn.Module):
    """y = base(x) + (alpha / r) * sum_i omega_i B_i A dropout(x).

    The base layer is kept as it is (same weight object, dtype and device) and frozen. Adapter
    parameters are fp32 when the base is half precision, so small optimiser steps (the paper's
    lr 2e-5) are not rounded away; they are cast to the input's dtype in the forward.

    Parameters: `lora_A` (r, k), `lora_B` (N, d, r) with every head stacked, and by mixing mode
    `router.weight` (N, k) or (N, r), `head_weights` (N,) learnable, or the buffer `head_weights`
    (N,) for fixed mixing. Per layer: r*k + N*d*r, plus k*N or r*N (router) or N (learned).
    """

    def __init__(self, base_layer: nn.Linear, config: HydraConfig) -> None:
        super().__init__()
        if not isinstance(base_layer, nn.Linear):
            raise TypeError(f"HydraLinear wraps nn.Linear, got {type(base_layer).__name__}")
        if overrides_linear_forward(base_layer):
            raise TypeError(
                f"HydraLinear cannot wrap {type(base_layer).__qualname__}: it overrides nn.Linear.forward "
                f"(a quantized or custom Linear), which the adapter's F.linear(x, weight, bias) would bypass"
            )
        self.base_layer = base_layer
        base_layer.requires_grad_(False)
        self.config = config
        self.in_features, self.out_features = base_layer.in_features, base_layer.out_features
        self.num_heads, self.r, self.scale = config.num_heads, config.r, config.scale
        weight = base_layer.weight
        dtype = torch.float32 if weight.dtype in (torch.float16, torch.bfloat16) or not weight.is_floating_point() else weight.dtype
        factory = {"device": weight.device, "dtype": dtype}
        self.lora_A = nn.Parameter(torch.empty(config.r, self.in_features, **factory))
        self.lora_B = nn.Parameter(torch.empty(config.num_heads, self.out_features, config.r, **factory))
        self.router: nn.Linear | None = None
        if config.mixing == "router":
            router_in = self.in_features if config.router_input == "x" else config.r
            self.router = nn.Linear(router_in, config.num_heads, bias=False, **factory)
        initial_omega = torch.tensor(config.head_weights_init(), **factory)
        if config.mixing == "learned":
            self.head_weights = nn.Parameter(initial_omega)
        elif config.mixing == "fixed":
            self.register_buffer("head_weights", initial_omega)
        self._override: torch.Tensor | None = None
        self._original_weight: torch.Tensor | None = None
        self._merged_head_weights: torch.Tensor | None = None
        self.merged = False
        self.last_balance_loss: torch.Tensor | None = None
        self.last_head_usage: torch.Tensor | None = None
        self.last_gate_entropy: torch.Tensor | None = None
        # per-layer omega with several heads: warn when trained without an override (see forward)
        self._collapse_guard = CollapseGuard() if config.per_layer_mixing and config.num_heads > 1 else None
        self.reset_adapter_parameters()

    # Code written for nn.Linear reads `module.weight` / `module.bias` (diffusers' `x.to(proj.weight.dtype)`)
    # and transformers' `tie_weights` assigns `lm_head.weight`: both reach the base layer, so a tie
    # re-ties the base weight instead of registering a stray parameter that save_adapter would write.
    @property
    def weight(self) -> torch.Tensor:
        return self.base_layer.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base_layer.bias

    def __setattr__(self, name: str, value: object) -> None:
        if name in ("weight", "bias"):
            setattr(self.base_layer, name, value)
        else:
            super().__setattr__(name, value)

    def reset_adapter_parameters(self) -> None:
        """Initialise as configured: A kaiming (as LoRA), B zero or small normal, router."""
        config = self.config
        with torch.no_grad():
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
            if config.init_b == "zero":
                nn.init.zeros_(self.lora_B)
            else:
                nn.init.normal_(self.lora_B, std=config.init_b_std)
            if self.router is not None:
                if config.router_init == "kaiming":
                    nn.init.kaiming_uniform_(self.router.weight, a=math.sqrt(5))
                else:
                    nn.init.normal_(self.router.weight, std=config.router_init_std)

    # -- head weights set at call time -------------------------------------------------------
    def set_head_weights(self, weights: torch.Tensor | None) -> None:
        """Override omega for later forwards: (N,), (B, N) per sample, or per token; None clears."""
        if weights is not None:
            if not isinstance(weights, torch.Tensor):
                raise TypeError(f"head weights must be a torch.Tensor or None, got {type(weights).__name__}")
            if weights.dim() == 0 or weights.shape[-1] != self.num_heads:
                raise ValueError(f"head weights need {self.num_heads} entries in their last dim, got shape {tuple(weights.shape)}")
            if self.merged:
                raise HydraMergeError("cannot override head weights of a merged layer: unmerge first")
        self._override = weights

    @property
    def head_weights_override(self) -> torch.Tensor | None:
        return self._override

    # -- forward -------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:
            return self.base_layer(x)
        config = self.config
        override = self._override
        guard = self._collapse_guard
        # a few attribute reads per forward until the model has warned once; not inside torch.compile,
        # where warnings.warn would break the graph (and fail fullgraph=True)
        if (guard is not None and not guard.warned and override is None and self.training
                and torch.is_grad_enabled() and self.lora_B.requires_grad and not torch.compiler.is_compiling()):
            guard.warn(config)
        if override is not None:
            head_weights, router_weight = override.to(device=x.device), None
        elif self.router is not None:
            head_weights, router_weight = None, self.router.weight
        else:
            head_weights, router_weight = self.head_weights, None
        y, probs = hydra_linear(
            x,
            self.base_layer.weight,
            self.base_layer.bias,
            self.lora_A,
            self.lora_B,
            self.scale,
            head_weights=head_weights,
            router_weight=router_weight,
            router_on_lora=config.router_input == "lora",
            temperature=config.router_temperature,
            dropout_p=config.dropout,
            training=self.training,
        )
        balance = None
        if probs is not None:
            flat = probs.reshape(-1, self.num_heads).detach()
            self.last_head_usage = flat.mean(0)
            self.last_gate_entropy = torch.special.entr(flat).sum(-1).mean()
            if config.balance_loss_weight > 0 and self.training:
                balance = switch_balance_loss(probs.reshape(-1, self.num_heads))
        # set once, at the end: a checkpoint's recompute that stops early (non-reentrant
        # torch.utils.checkpoint) must not leave None behind for balance_loss(model) to skip
        self.last_balance_loss = balance
        return y

    # -- collapse, merge, unmerge --------------------------------------------------------------
    def per_layer_head_weights(self) -> torch.Tensor:
        """The (N,) omega the layer mixes with now (override, else its own); errors when it has none."""
        if self.router is not None and self._override is None:
            raise HydraMergeError(
                "a per-token router cannot be collapsed into one weight: omega changes with every token. "
                "Use mixing='learned' or 'fixed', or pin per-layer head weights with set_head_weights((N,)) first"
            )
        omega = self._override if self._override is not None else self.head_weights
        if omega.dim() != 1:
            raise HydraMergeError(f"only per-layer head weights (N,) can be collapsed, got shape {tuple(omega.shape)}")
        return omega.detach()

    def collapsed_lora(self, head_weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(A, B_eff) with B_eff = (alpha/r) * sum_i omega_i B_i: the exact rank-r LoRA.

        omega is `head_weights` (N,) when given, else `per_layer_head_weights()`. In fp32, or fp64
        when the adapter is fp64 (rounding an fp64 adapter to fp32 would lose digits).
        """
        omega = self.per_layer_head_weights() if head_weights is None else head_weights
        dtype = _compute_dtype(self.lora_B.dtype)
        omega = omega.to(self.lora_B.device, dtype)
        b_eff = self.scale * torch.einsum("n,ndr->dr", omega, self.lora_B.detach().to(dtype))
        return self.lora_A.detach().to(dtype), b_eff

    def delta_weight(self, head_weights: torch.Tensor | None = None) -> torch.Tensor:
        """scale * (sum_i omega_i B_i) A, (d, k), in fp32 (fp64 for an fp64 adapter)."""
        lora_a, b_eff = self.collapsed_lora(head_weights)
        return b_eff @ lora_a

    @torch.no_grad()
    def merge(self, keep_original: bool = True) -> None:
        """Fold the adapter into the base weight (computed in fp32, or fp64 for fp64, cast once).

        With `keep_original` the exact original weight is kept on the CPU so `unmerge` restores it
        bit for bit; without it, unmerge subtracts the same delta again (exact up to rounding).
        The weight is changed in place: if it is tied to another module, that module changes too
        (`merge_adapter` refuses such weights; this method cannot see the rest of the model).
        """
        if self.merged:
            raise HydraMergeError("layer is already merged")
        # remembered so unmerge subtracts what was added even if the override is cleared meanwhile
        self._merged_head_weights = self.per_layer_head_weights().clone()
        delta = self.delta_weight(self._merged_head_weights)
        weight = self.base_layer.weight
        self._original_weight = weight.detach().to("cpu", copy=True) if keep_original else None
        dtype = _compute_dtype(weight.dtype)
        weight.copy_((weight.to(dtype) + delta.to(weight.device, dtype)).to(weight.dtype))
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if not self.merged:
            raise HydraMergeError("layer is not merged")
        weight = self.base_layer.weight
        if self._original_weight is not None:
            weight.copy_(self._original_weight.to(weight.device))
        else:
            dtype = _compute_dtype(weight.dtype)
            delta = self.delta_weight(self._merged_head_weights)
            weight.copy_((weight.to(dtype) - delta.to(weight.device, dtype)).to(weight.dtype))
        self._original_weight = None
        self._merged_head_weights = None
        self.merged = False

    def extra_repr(self) -> str:
        c = self.config
        return f"in={self.in_features}, out={self.out_features}, r={c.r}, heads={c.num_heads}, mixing={c.mixing}, scale={self.scale:g}"


# Subclasses whose own forward computes exactly x W^T + b, so F.linear in HydraLinear is the same.
LINEAR_EQUIVALENT_SUBCLASSES = {("transformers.models.falcon.modeling_falcon", "FalconLinear")}


def overrides_linear_forward(module: nn.Linear) -> bool:
    """True for an nn.Linear subclass whose own forward computes something else than x W^T + b
    (bitsandbytes, QAT, custom scaling); known plain ones (Falcon's) are not counted."""
    cls = type(module)
    if (cls.__module__, cls.__qualname__) in LINEAR_EQUIVALENT_SUBCLASSES:
        return False
    return cls.forward is not nn.Linear.forward


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 for half precision (and fp32), fp64 for fp64: never below fp32, never below the input."""
    return torch.promote_types(dtype, torch.float32)


def switch_balance_loss(probs: torch.Tensor) -> torch.Tensor:
    """Switch-Transformer load balance: N * sum_i f_i * P_i, 1 when perfectly balanced.

    f_i is the fraction of tokens whose largest gate is head i (no gradient), P_i the mean gate
    probability of head i (carries the gradient).
    """
    num_heads = probs.shape[-1]
    top = torch.nn.functional.one_hot(probs.argmax(-1), num_heads).to(probs.dtype)
    return num_heads * (top.mean(0) * probs.mean(0)).sum()
