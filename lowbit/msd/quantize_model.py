"""``quantize_model(model, config)``: swap ``nn.Linear`` layers for :class:`lowbit.msd.MSDLinear` in place.

One verb and a small config, as in torchao's ``quantize_(model, config)``; a filter function picks the layers.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from lowbit.msd.config import MSDConfig
from lowbit.msd.linear import MSDLinear

__all__ = ["quantize_model", "quantized_layers"]

FilterFn = Callable[[str, nn.Module], bool]


def quantize_model(
    model: nn.Module, config: MSDConfig | None = None, *, filter_fn: FilterFn | None = None
) -> nn.Module:
    """Replace every ``nn.Linear`` of ``model`` for which ``filter_fn(name, module)`` is true (default: all) by
    ``MSDLinear.from_linear(module, config)``; returns ``model`` (changed in place).

    Layers that are already :class:`MSDLinear` are left alone. Tied weights stay tied only among the modules that
    are not quantized (an ``lm_head`` tied to the embedding gets its own quantized copy if selected).

    >>> import torch
    >>> m = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8))
    >>> _ = quantize_model(m, MSDConfig(weight="int8"), filter_fn=lambda name, mod: name != "2")
    >>> [type(x).__name__ for x in m]
    ['MSDLinear', 'ReLU', 'Linear']
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    config = MSDConfig() if config is None else config
    if not isinstance(config, MSDConfig):
        raise TypeError(f"config must be an MSDConfig, got {type(config).__name__}")
    if filter_fn is not None and not callable(filter_fn):
        raise TypeError("filter_fn must be a callable (name, module) -> bool")
    targets = [
        (name, module)
        for name, module in model.named_modules()
        if type(module) is nn.Linear and (filter_fn is None or filter_fn(name, module))
    ]
    for name, module in targets:
        _set_submodule(model, name, MSDLinear.from_linear(module, config))
    return model


def quantized_layers(model: nn.Module) -> dict[str, MSDLinear]:
    """Every :class:`MSDLinear` of ``model`` by qualified name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, MSDLinear)}


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    if not name:
        raise ValueError("the model itself is an nn.Linear; wrap it or use MSDLinear.from_linear directly")
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)
