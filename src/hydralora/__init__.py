"""HydraLoRA for any PyTorch model: one shared down-projection A, N up-projection heads B_i mixed by omega.

    import hydralora
    model = hydralora.inject(model, hydralora.HydraConfig(r=32, alpha=32, num_heads=4))
    ...train...
    hydralora.save_adapter(model, "adapter/")
"""

__version__ = "0.1.0"

from hydralora.config import HydraConfig, HydraConfigError
from hydralora.diagnostics import head_report
from hydralora.export import export_lora
from hydralora.functional import hydra_linear, set_backend
from hydralora.injection import (
    HydraInjectionError,
    adapter_parameters,
    balance_loss,
    count_parameters,
    head_weights,
    hydra_layers,
    inject,
    merge_adapter,
    set_head_weights,
    unload,
    unmerge_adapter,
)
from hydralora.io import (
    AdapterLoadError,
    adapter_config,
    adapter_state_dict,
    load_adapter,
    load_adapter_state_dict,
    save_adapter,
)
from hydralora.layer import HeadCollapseWarning, HydraLinear, HydraMergeError
from hydralora.lora_formats import read_lora

__all__ = [
    "AdapterLoadError",
    "HeadCollapseWarning",
    "HydraConfig",
    "HydraConfigError",
    "HydraInjectionError",
    "HydraLinear",
    "HydraMergeError",
    "adapter_config",
    "adapter_parameters",
    "adapter_state_dict",
    "balance_loss",
    "count_parameters",
    "export_lora",
    "head_report",
    "head_weights",
    "hydra_layers",
    "hydra_linear",
    "inject",
    "load_adapter",
    "load_adapter_state_dict",
    "merge_adapter",
    "read_lora",
    "save_adapter",
    "set_backend",
    "set_head_weights",
    "unload",
    "unmerge_adapter",
]
