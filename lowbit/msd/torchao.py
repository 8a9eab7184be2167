"""torchao handler: ``torchao.quantization.quantize_(model, LowbitMSDConfig())`` swaps ``nn.Linear`` for
:class:`lowbit.msd.MSDLinear`.

``LowbitMSDConfig`` is a torchao ``AOBaseConfig`` dataclass with the fields of :class:`lowbit.msd.MSDConfig`
(``weight``, ``passes``, ``method``, ``group_size``, ``kernel``, ``stacking``); its handler, registered with
``torchao.quantization.transform_module.register_quantize_module_handler`` (the pattern of torchao 0.18's
``quant_api.py``), returns ``MSDLinear.from_linear(module, config.msd_config())``. ``quantize_``'s default
``filter_fn`` selects every ``nn.Linear`` (an ``MSDLinear`` is not one, so running it twice changes nothing).

The class is built (and its handler registered) the first time ``lowbit.msd.torchao.LowbitMSDConfig`` is read, so
importing lowbit never imports torchao.

>>> import torch
>>> from lowbit.msd.torchao import LowbitMSDConfig  # doctest: +SKIP
>>> torchao.quantization.quantize_(model, LowbitMSDConfig(passes=2))  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from torch import nn

from lowbit.msd.config import MSDConfig
from lowbit.msd.linear import MSDLinear

__all__ = ["msd_linear_from_torchao"]  # and LowbitMSDConfig, built on first access (module __getattr__)

_BUILT: dict[str, Any] = {}


def msd_linear_from_torchao(module: nn.Module, config: Any) -> nn.Module:
    """The handler ``quantize_`` calls for each selected module: an ``nn.Linear`` becomes
    ``MSDLinear.from_linear(module, config.msd_config())``.

    Raises:
        TypeError: ``module`` is not an ``nn.Linear`` (a custom ``filter_fn`` selected something else).
    """
    if not isinstance(module, nn.Linear):
        raise TypeError(f"LowbitMSDConfig quantizes nn.Linear modules, got {type(module).__name__}")
    return MSDLinear.from_linear(module, config.msd_config())


def _build() -> Any:
    if "config" in _BUILT:
        return _BUILT["config"]
    try:
        from torchao.core.config import AOBaseConfig
        from torchao.quantization.transform_module import register_quantize_module_handler
    except ImportError as exc:
        raise ImportError("LowbitMSDConfig needs torchao (`pip install lowbit[torchao]`)") from exc

    @dataclass(frozen=True)
    class LowbitMSDConfig(AOBaseConfig):
        """torchao config for lowbit MSD linears; fields as :class:`lowbit.msd.MSDConfig` (checked there)."""

        weight: str = "int8"
        passes: int = 2
        method: str = "msd"
        group_size: int | None = None
        kernel: str = "auto"
        stacking: str = "auto"

        def __post_init__(self) -> None:
            self.msd_config()  # validate now: a bad field fails at construction, not inside quantize_

        def msd_config(self) -> MSDConfig:
            """The equivalent :class:`MSDConfig`."""
            return MSDConfig(**{f.name: getattr(self, f.name) for f in fields(self)})

    LowbitMSDConfig.__module__ = __name__
    register_quantize_module_handler(LowbitMSDConfig)(msd_linear_from_torchao)
    _BUILT["config"] = LowbitMSDConfig
    return LowbitMSDConfig


def __getattr__(name: str) -> Any:
    if name == "LowbitMSDConfig":
        return _build()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
