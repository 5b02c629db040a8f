"""`HydraConfig`: every choice a HydraLoRA adapter makes, validated, with a JSON round trip."""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

MIXING_MODES = ("router", "learned", "fixed")
ROUTER_INPUTS = ("x", "lora")
B_INITS = ("zero", "normal")
ROUTER_INITS = ("kaiming", "normal")
CONFIG_NAME = "adapter_config.json"


class HydraConfigError(ValueError):
    """A HydraConfig field holds a value the adapter cannot use."""


@dataclass
class HydraConfig:
    """Hyper-parameters of a HydraLoRA adapter: dW = (alpha / r) * sum_i omega_i B_i A.

    Attributes:
        r: rank of the shared down-projection A (r x k).
        alpha: scale numerator; the update is multiplied by alpha / r (PEFT convention).
        num_heads: N, the number of up-projection heads B_i (d x r).
        mixing: how omega is made. "router": per-token softmax gate W_g (HydraLoRA paper);
            "learned": one learnable weight per head and layer; "fixed": constant per-layer weights.
        router_input: what the router reads. "x": the layer input (official HydraLoRA code);
            "lora": the rank-r signal A x, which avoids the uniform, inert gates a router on the raw
            input of a diffusion transformer tends to give.
        router_temperature: softmax temperature of the router (> 0).
        balance_loss_weight: weight of the Switch-style load-balance loss that `balance_loss`
            returns (0 disables it). Keep it small: 0.01 was seen to pin routers to uniform.
        fixed_weights: omega for "fixed" mixing and the initial omega of "learned"; default 1/N each.
        dropout: dropout probability on the adapter's input (the base path never sees it).
        target_modules: which nn.Linear modules get an adapter. "all-linear"; a string, matched as
            a full regex against the module's dotted name; or a list of exact names or name suffixes.
        exclude_modules: same forms; a module matching it is left alone.
        init_a: "kaiming" (kaiming_uniform with a = sqrt(5), as LoRA).
        init_b: "zero" (the model starts exactly at the base) or "normal" (std `init_b_std`), which
            starts the heads apart. With per-layer mixing they still all receive the same gradient
            (up to omega_i) and learn one update: only head weights per sample make them specialise.
        router_init: "kaiming" (official code) or "normal" with std `router_init_std`.
    """

    r: int = 32
    alpha: float = 32.0
    num_heads: int = 4
    mixing: str = "router"
    router_input: str = "x"
    router_temperature: float = 1.0
    balance_loss_weight: float = 0.0
    fixed_weights: list[float] | None = None
    dropout: float = 0.0
    target_modules: list[str] | str = "all-linear"
    exclude_modules: list[str] | str | None = None
    init_a: str = "kaiming"
    init_b: str = "zero"
    init_b_std: float = 1e-4
    router_init: str = "kaiming"
    router_init_std: float = 1e-2

    def __post_init__(self) -> None:
        if isinstance(self.target_modules, tuple):
            self.target_modules = list(self.target_modules)
        if isinstance(self.exclude_modules, tuple):
            self.exclude_modules = list(self.exclude_modules)
        if self.fixed_weights is not None:
            self.fixed_weights = _as_float_list("fixed_weights", self.fixed_weights)
        self.validate()

    @property
    def scale(self) -> float:
        return self.alpha / self.r

    @property
    def per_layer_mixing(self) -> bool:
        """True when omega does not depend on the token, so the adapter collapses to a LoRA."""
        return self.mixing in ("learned", "fixed")

    def head_weights_init(self) -> list[float]:
        return list(self.fixed_weights) if self.fixed_weights is not None else [1.0 / self.num_heads] * self.num_heads

    def validate(self) -> None:
        def fail(name: str, message: str) -> None:
            raise HydraConfigError(f"HydraConfig.{name}: {message}")

        if not isinstance(self.r, int) or isinstance(self.r, bool) or self.r < 1:
            fail("r", f"must be a positive integer, got {self.r!r}")
        if not _is_finite_number(self.alpha) or self.alpha <= 0:
            fail("alpha", f"must be a positive number, got {self.alpha!r}")
        if not isinstance(self.num_heads, int) or isinstance(self.num_heads, bool) or self.num_heads < 1:
            fail("num_heads", f"must be a positive integer, got {self.num_heads!r}")
        _check_choice("mixing", self.mixing, MIXING_MODES)
        _check_choice("router_input", self.router_input, ROUTER_INPUTS)
        _check_choice("init_b", self.init_b, B_INITS)
        _check_choice("init_a", self.init_a, ("kaiming",))
        _check_choice("router_init", self.router_init, ROUTER_INITS)
        if not _is_finite_number(self.router_temperature) or self.router_temperature <= 0:
            fail("router_temperature", f"must be > 0, got {self.router_temperature!r}")
        if not _is_finite_number(self.balance_loss_weight) or self.balance_loss_weight < 0:
            fail("balance_loss_weight", f"must be >= 0, got {self.balance_loss_weight!r}")
        if self.balance_loss_weight > 0 and self.mixing != "router":
            fail("balance_loss_weight", f"applies only to mixing='router', not {self.mixing!r}")
        if not _is_finite_number(self.dropout) or not 0 <= self.dropout < 1:
            fail("dropout", f"must be in [0, 1), got {self.dropout!r}")
        for name in ("init_b_std", "router_init_std"):
            value = getattr(self, name)
            if not _is_finite_number(value) or value <= 0:
                fail(name, f"must be > 0, got {value!r}")
        if self.fixed_weights is not None:
            if len(self.fixed_weights) != self.num_heads:
                fail("fixed_weights", f"has {len(self.fixed_weights)} entries for num_heads={self.num_heads}")
            if not all(math.isfinite(w) for w in self.fixed_weights):
                fail("fixed_weights", f"must be finite, got {self.fixed_weights}")
            if self.mixing == "router":
                fail("fixed_weights", "has no meaning with mixing='router' (the router makes omega)")
        _check_targets("target_modules", self.target_modules, allow_none=False)
        _check_targets("exclude_modules", self.exclude_modules, allow_none=True)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HydraConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise HydraConfigError(f"unknown HydraConfig field(s) {unknown}; known fields: {sorted(known)}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> HydraConfig:
        return cls.from_dict(json.loads(text))

    def save(self, directory: str | Path, **metadata: Any) -> Path:
        """Write `adapter_config.json` into `directory`, with extra top-level `metadata`."""
        path = Path(directory) / CONFIG_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {**metadata, "hydra_config": self.to_dict()}
        path.write_text(json.dumps(payload, indent=2, sort_keys=True))
        return path

    @classmethod
    def load(cls, directory: str | Path) -> HydraConfig:
        path = Path(directory) / CONFIG_NAME
        if not path.is_file():
            raise FileNotFoundError(f"no HydraLoRA config at {path}")
        try:
            payload = json.loads(path.read_text())
        # UnicodeDecodeError too: a binary file in the config's place
        except ValueError as exc:
            raise HydraConfigError(f"{path} is not valid JSON: {exc}") from exc
        if not isinstance(payload, dict) or not isinstance(payload.get("hydra_config"), dict):
            raise HydraConfigError(f"{path} holds no 'hydra_config' entry: is it a HydraLoRA adapter?")
        try:
            return cls.from_dict(payload["hydra_config"])
        except HydraConfigError as exc:
            raise HydraConfigError(f"{path}: {exc}") from exc


def _as_float_list(name: str, value: Any) -> list[float]:
    """A list of floats from a list, tuple, array or 1-D tensor of numbers, so the JSON stays plain."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise HydraConfigError(f"HydraConfig.{name}: must be a list of numbers, got {value!r}")
    try:
        return [float(v) for v in value]
    except (TypeError, ValueError) as exc:
        raise HydraConfigError(f"HydraConfig.{name}: must be a list of numbers, got {value!r}") from exc


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise HydraConfigError(f"HydraConfig.{name}: must be one of {choices}, got {value!r}")


def _check_targets(name: str, value: Any, allow_none: bool) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, str):
        if not value:
            raise HydraConfigError(f"HydraConfig.{name}: empty pattern")
        try:
            re.compile(value)
        except re.error as exc:
            raise HydraConfigError(f"HydraConfig.{name}: {value!r} is not a valid regex: {exc}") from exc
        return
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return
    raise HydraConfigError(
        f"HydraConfig.{name}: must be 'all-linear', a regex string or a non-empty list of names, got {value!r}"
    )
