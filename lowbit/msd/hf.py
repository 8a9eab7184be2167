"""Loading a ``lowbit quantize`` folder as a Hugging Face model: :func:`from_pretrained` and a transformers quantizer.

A folder written by ``lowbit quantize MODEL_DIR OUT_DIR`` (:func:`lowbit.msd.quantize_checkpoint`) holds the
:class:`lowbit.msd.MSDLinear` buffers (``<layer>.qweight``/``<layer>.weight_scale``, or the MXFP4 codes) instead
of ``<layer>.weight``, ``lowbit_quant.json`` (each layer's config and the SHA-256 of each tensor file) and a
``config.json`` whose ``quantization_config`` is :data:`QUANT_METHOD` (``{"quant_method": "lowbit-msd", ...}``).

Two ways to load it, giving bit-identical tensors (those of :func:`lowbit.msd.load_quantized`):

* :func:`from_pretrained` (``lowbit.msd.from_pretrained(OUT_DIR)``): builds the architecture from ``config.json``
  without initialising weights, then :func:`lowbit.msd.load_quantized` (checksums, strict names and shapes).
* ``AutoModelForCausalLM.from_pretrained(OUT_DIR)`` after :func:`register_transformers_quantizer` (also run by
  :func:`from_pretrained`; importing lowbit does not import transformers): transformers finds
  ``quant_method == "lowbit-msd"`` in the config, and ``LowbitMSDHfQuantizer`` swaps the listed ``nn.Linear``
  layers for ``MSDLinear`` before the weights load and re-reads every tensor with :func:`lowbit.msd.load_quantized`
  afterwards (checksums verified, missing or unexpected tensors are errors, kernels prepacked).

Without the registration (a process that never imported lowbit), transformers 5.23 logs "Unknown quantization
type, got lowbit-msd ... we will skip the quantization" and would keep random linear weights; the folder's guards
(an empty ``<layer>.weight`` per quantized layer, :func:`lowbit.msd.checkpoint.guard_specs`) make it stop instead,
with a size-mismatch load report and ``RuntimeError`` (tested, so a change in transformers shows). Call
:func:`register_transformers_quantizer` first, or use :func:`from_pretrained`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lowbit.msd.checkpoint import FORMAT, METADATA_FILE, VERSION, _install_layer, load_quantized
from lowbit.msd.config import MSDConfig
from lowbit.msd.linear import MSDLinear
from lowbit.msd.safetensors_io import read_json

__all__ = [
    "QUANT_METHOD",
    "from_pretrained",
    "quantization_config_dict",
    "register_transformers_quantizer",
]

QUANT_METHOD = "lowbit-msd"


def quantization_config_dict(config: MSDConfig) -> dict[str, Any]:
    """The ``quantization_config`` entry ``lowbit quantize`` writes into ``config.json``.

    >>> quantization_config_dict(MSDConfig())["quant_method"]
    'lowbit-msd'
    """
    return {"quant_method": QUANT_METHOD, "format": FORMAT, "version": VERSION, "msd_config": config.to_dict()}


def _import_transformers() -> Any:
    try:
        import transformers
    except ImportError as exc:  # pragma: no cover - the hf extra is installed in development
        raise ImportError("loading a lowbit checkpoint as a Hugging Face model needs `pip install lowbit[hf]`") from exc
    return transformers


def _read_metadata(directory: Path) -> dict[str, Any]:
    path = directory / METADATA_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: config.json says quant_method={QUANT_METHOD!r} but {directory} is not a lowbit "
            "quantized checkpoint (was lowbit_quant.json removed?)"
        )
    meta = read_json(path)
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise ValueError(
            f"{path}: format {meta.get('format')!r} version {meta.get('version')!r}, expected {FORMAT!r} {VERSION}"
        )
    if not isinstance(meta.get("layers"), dict):
        raise ValueError(f"{path}: 'layers' must be a JSON object")
    return meta


def from_pretrained(
    directory: str | os.PathLike[str],
    *,
    model_class: Any = None,
    verify_checksums: bool = True,
    **config_kwargs: Any,
) -> nn.Module:
    """Load a ``lowbit quantize`` folder (or any :func:`lowbit.msd.save_quantized` folder holding a
    ``config.json``) as a Hugging Face model with :class:`MSDLinear` layers, in eval mode.

    The architecture comes from ``config.json`` (``AutoConfig``; ``config_kwargs`` override fields) and
    ``model_class`` (default ``transformers.AutoModelForCausalLM``), built without weight initialisation; every
    tensor then comes from the folder through :func:`lowbit.msd.load_quantized` (bit-exact, checksums verified).

    Raises:
        FileNotFoundError: no ``config.json`` or no ``lowbit_quant.json`` (not a lowbit checkpoint).
        ValueError: a checkpoint that does not match the architecture, or a corrupted tensor file
            (:func:`lowbit.msd.load_quantized`).
    """
    transformers = _import_transformers()
    from transformers.initialization import no_init_weights

    register_transformers_quantizer()
    directory = Path(directory)
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(f"{directory / 'config.json'} not found: from_pretrained needs the model's config")
    _read_metadata(directory)
    config = transformers.AutoConfig.from_pretrained(directory, **config_kwargs)
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # built as a float model here; load_quantized installs the MSD layers
    cls = transformers.AutoModelForCausalLM if model_class is None else model_class
    with no_init_weights():
        model = cls.from_config(config, dtype=torch.float32)
    load_quantized(directory, model, verify_checksums=verify_checksums)
    model.config.quantization_config = _load_config_class()(**_quant_fields(directory))
    return model.eval()


def _quant_fields(directory: Path) -> dict[str, Any]:
    data = read_json(directory / "config.json").get("quantization_config") or {}
    fields = {k: v for k, v in data.items() if k in ("format", "version", "msd_config")}
    return fields


_CLASSES: dict[str, Any] = {}


def _load_config_class() -> Any:
    """The transformers config class of ``quant_method="lowbit-msd"`` (defined on first use, so importing lowbit
    does not import transformers)."""
    if "config" in _CLASSES:
        return _CLASSES["config"]
    _import_transformers()
    from transformers.utils.quantization_config import QuantizationConfigMixin

    class LowbitMSDQuantizationConfig(QuantizationConfigMixin):
        """``quantization_config`` of a lowbit MSD checkpoint: the format, its version and the default
        :class:`MSDConfig` (each layer's own config is in ``lowbit_quant.json``)."""

        def __init__(
            self,
            format: str = FORMAT,  # the JSON field name
            version: int = VERSION,
            msd_config: dict[str, Any] | None = None,
            **kwargs: Any,
        ) -> None:
            self.quant_method = QUANT_METHOD
            if format != FORMAT or version != VERSION:
                raise ValueError(
                    f"quantization_config format {format!r} version {version!r}: this lowbit reads {FORMAT!r} "
                    f"version {VERSION}"
                )
            self.format = format
            self.version = version
            self.msd_config = MSDConfig.from_dict(msd_config or {}).to_dict()
            unknown = set(kwargs) - {"quant_method"}
            if unknown:
                raise ValueError(f"unknown lowbit-msd quantization_config fields {sorted(unknown)}")

    _CLASSES["config"] = LowbitMSDQuantizationConfig
    return LowbitMSDQuantizationConfig


def _load_quantizer_class() -> Any:
    if "quantizer" in _CLASSES:
        return _CLASSES["quantizer"]
    _import_transformers()
    from transformers.quantizers.base import HfQuantizer

    class LowbitMSDHfQuantizer(HfQuantizer):
        """transformers quantizer for ``quant_method="lowbit-msd"`` folders (pre-quantized only).

        Before the weights load: read ``lowbit_quant.json`` beside the tensor files and replace each listed
        ``nn.Linear`` by an empty :class:`MSDLinear` with the stored config. After: re-read every tensor with
        :func:`lowbit.msd.load_quantized` (checksums, strict names and shapes; the kernels are prepacked), so the
        model holds exactly what :func:`lowbit.msd.from_pretrained` gives.
        """

        requires_calibration = True  # only pre-quantized lowbit folders; quantize with lowbit quantize

        def __init__(self, quantization_config: Any, **kwargs: Any) -> None:
            super().__init__(quantization_config, **kwargs)
            self._directory: Path | None = None

        def validate_environment(self, *args: Any, device_map: Any = None, **kwargs: Any) -> None:
            if isinstance(device_map, dict) and any(str(d) not in ("cpu", "disk") for d in device_map.values()):
                raise ValueError(f"lowbit MSD layers run on the CPU; got device_map={device_map}")
            if isinstance(device_map, str) and device_map not in ("cpu", "auto"):
                raise ValueError(f"lowbit MSD layers run on the CPU; got device_map={device_map!r}")

        def update_dtype(self, dtype: torch.dtype) -> torch.dtype:
            if dtype not in (None, torch.float32):
                raise ValueError(
                    f"lowbit MSD checkpoints load in float32 (the weight scales are float32); got dtype={dtype}. "
                    "MSDLinear accepts bfloat16 activations at run time: convert the model after loading if needed"
                )
            return torch.float32

        def _process_model_before_weight_loading(self, model: nn.Module, **kwargs: Any) -> nn.Module:
            files = kwargs.get("checkpoint_files") or []
            if not files:
                raise ValueError("lowbit-msd checkpoints load from a folder of safetensors files")
            self._directory = Path(files[0]).parent
            meta = _read_metadata(self._directory)
            for name, entry in meta["layers"].items():
                _install_layer(model, name, entry)
            # The guards (lowbit.msd.checkpoint) have no parameter to load into once the layers are MSDLinear:
            # tell transformers they are expected, so its load report stays quiet; load_quantized checks them.
            guards = {rf"(^|\.){re.escape(g)}$" for g in meta.get("guards", []) if isinstance(g, str)}
            model._keys_to_ignore_on_load_unexpected = set(model._keys_to_ignore_on_load_unexpected or ()) | guards
            return model

        def _process_model_after_weight_loading(self, model: nn.Module, **kwargs: Any) -> nn.Module:
            assert self._directory is not None
            with torch.device("cpu"):
                for name, m in model.named_modules():
                    if isinstance(m, MSDLinear) and any(b.is_meta for b in m.buffers()):
                        raise ValueError(f"layer {name!r} was not filled from {self._directory}")
                load_quantized(self._directory, model)
            return model

        def is_serializable(self) -> bool:
            return False  # save with lowbit.msd.save_quantized

        @property
        def is_trainable(self) -> bool:
            return False

    _CLASSES["quantizer"] = LowbitMSDHfQuantizer
    return LowbitMSDHfQuantizer


def register_transformers_quantizer() -> None:
    """Register ``quant_method="lowbit-msd"`` with transformers (``register_quantization_config`` and
    ``register_quantizer``), so ``AutoModelForCausalLM.from_pretrained(OUT_DIR)`` loads a ``lowbit quantize``
    folder. Idempotent."""
    _import_transformers()
    from transformers.quantizers import auto

    config_cls, quantizer_cls = _load_config_class(), _load_quantizer_class()
    if auto.AUTO_QUANTIZATION_CONFIG_MAPPING.get(QUANT_METHOD) is not config_cls:
        if QUANT_METHOD in auto.AUTO_QUANTIZATION_CONFIG_MAPPING:
            raise ValueError(f"another quantization config is registered as {QUANT_METHOD!r}")
        auto.register_quantization_config(QUANT_METHOD)(config_cls)
    if auto.AUTO_QUANTIZER_MAPPING.get(QUANT_METHOD) is not quantizer_cls:
        if QUANT_METHOD in auto.AUTO_QUANTIZER_MAPPING:
            raise ValueError(f"another quantizer is registered as {QUANT_METHOD!r}")
        auto.register_quantizer(QUANT_METHOD)(quantizer_cls)


def __getattr__(name: str) -> Any:
    if name == "LowbitMSDQuantizationConfig":
        return _load_config_class()
    if name == "LowbitMSDHfQuantizer":
        return _load_quantizer_class()
    raise AttributeError(name)
