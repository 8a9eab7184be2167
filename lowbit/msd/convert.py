"""``quantize_checkpoint``: stream a Hugging Face safetensors folder into a quantized checkpoint (``lowbit quantize``).

The source is a folder with ``model.safetensors``, or shards listed in ``model.safetensors.index.json``. Every
selected 2-D ``<layer>.weight`` is read alone, quantized in row blocks (identical bytes: rows are independent) and
written as the :class:`lowbit.msd.MSDLinear` buffers of ``<layer>``; every other tensor is copied unchanged. The
output has the layout of :func:`lowbit.msd.save_quantized` (one output shard per input shard) and loads with
:func:`lowbit.msd.load_quantized`. Peak memory stays near the largest tensor.

Crafted inputs are refused before anything is written (rules in :mod:`lowbit.msd.checkpoint`): shard names must be
plain ``*.safetensors`` names inside the folder, headers are validated twice (:mod:`lowbit.msd.safetensors_io`),
the output must not be, contain or lie inside the model folder, ``config.json`` must match the tensors, and a
selected weight must be floating-point, non-empty, finite and within float32's range.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lowbit.msd.checkpoint import (
    INDEX_FILE,
    METADATA_FILE,
    SINGLE_FILE,
    atomic_checkpoint_dir,
    checkpoint_metadata,
    empty_guard,
    guard_specs,
    resolve_out_dir,
)
from lowbit.msd.config import MSDConfig
from lowbit.msd.linear import quantize_weight, quantized_shapes
from lowbit.msd.safetensors_io import (
    ST_DTYPES,
    TENSOR_SUFFIX,
    TensorEntry,
    TensorSpec,
    copy_plain_file,
    is_plain_file,
    plain_name,
    read_header,
    read_json,
    read_tensor,
    tensor_file,
    write_json,
    write_safetensors,
)

__all__ = ["DEFAULT_EXCLUDE", "QuantizeSummary", "quantize_checkpoint"]

DEFAULT_EXCLUDE = r"(^|\.)(embed_tokens|embeddings?|wte|wpe|word_embeddings|position_embeddings)\."
_ROW_CHUNK_ELEMENTS = 1 << 18  # rows quantized at a time in the streaming path (identical bytes: rows independent)
_FLOAT32_MAX = float(torch.finfo(torch.float32).max)
_WEIGHT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _check_separate(model_dir: Path, out_dir: Path) -> None:
    """Refuse an ``out_dir`` that is, contains or is inside ``model_dir`` (by real path and by device/inode, so
    symbolic links, ``..`` and bind mounts do not evade it)."""
    src, dst = Path(os.path.realpath(model_dir)), Path(os.path.realpath(resolve_out_dir(out_dir)))
    src_st = os.stat(src)
    relation = None
    for a in (dst, *dst.parents):
        if a == src or (os.path.exists(a) and os.path.samestat(os.stat(a), src_st)):
            relation = "is" if a == dst else "is inside"
            break
    if relation is None and os.path.exists(dst):
        dst_st = os.stat(dst)
        if any(a == dst or os.path.samestat(os.stat(a), dst_st) for a in src.parents):
            relation = "contains"
    if relation is not None:
        raise ValueError(
            f"output directory {out_dir} {relation} the model directory {model_dir}: refused, the source "
            "checkpoint could be overwritten or deleted; choose an output directory outside it"
        )


@dataclass(frozen=True)
class QuantizeSummary:
    """What :func:`quantize_checkpoint` did: layers quantized, tensors copied, bytes in and out, largest tensor,
    and the other files of the source directory not copied (symbolic links, which are never followed for them)."""

    out_dir: Path
    quantized: int
    copied: int
    bytes_in: int
    bytes_out: int
    largest_tensor_bytes: int
    skipped: tuple[str, ...] = ()


def _source_files(model_dir: Path) -> tuple[list[str], dict[str, str] | None]:
    """The tensor files of a checkpoint directory and its weight map (None for a single file).

    Every shard name the index lists must be a plain ``*.safetensors`` name inside ``model_dir`` naming a regular
    file or a symbolic link to one (checked before anything is opened).

    Raises:
        FileNotFoundError: no model directory, no tensor file, or shards the index lists are missing.
        ValueError: an index without a weight map, or a shard name that is not a plain name inside the folder.
    """
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model directory {model_dir} does not exist")
    index = model_dir / INDEX_FILE
    if index.is_file():
        data = read_json(index)
        weight_map = data.get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ValueError(f"{index} has no 'weight_map'")
        for key, fname in weight_map.items():
            plain_name(fname, model_dir, f"{index} (tensor {key!r})")
        files = sorted(set(weight_map.values()))
        missing = []
        for fname in files:
            try:
                tensor_file(model_dir, fname, str(index))
            except FileNotFoundError:
                missing.append(fname)
        if missing:
            raise FileNotFoundError(f"shards listed in {index} are missing: {missing}")
        return files, weight_map
    found = (
        [SINGLE_FILE]
        if os.path.lexists(model_dir / SINGLE_FILE)
        else sorted(p.name for p in model_dir.glob(f"*{TENSOR_SUFFIX}"))
    )
    if len(found) == 1:
        tensor_file(model_dir, found[0], str(model_dir))
        return found, None
    raise FileNotFoundError(
        f"{model_dir} has no {SINGLE_FILE} or {INDEX_FILE}"
        + (f" (several {TENSOR_SUFFIX} files {found} but no index)" if found else "")
    )


def _check_config(model_dir: Path, shapes: dict[str, tuple[int, ...]]) -> None:
    """Compare ``config.json`` (if present, and not a symbolic link) with the tensors: hidden size, vocabulary,
    number of layers."""
    path = model_dir / "config.json"
    if not is_plain_file(path):
        return
    cfg = read_json(path)
    problems = []
    embed = [s for n, s in shapes.items() if re.search(r"embed_tokens\.weight$|wte\.weight$", n)]
    if embed:
        vocab, hidden = embed[0]
        if "vocab_size" in cfg and cfg["vocab_size"] != vocab:
            problems.append(f"vocab_size={cfg['vocab_size']} but the embedding has {vocab} rows")
        if "hidden_size" in cfg and cfg["hidden_size"] != hidden:
            problems.append(f"hidden_size={cfg['hidden_size']} but the embedding has {hidden} columns")
    layer_ids = {int(m.group(2)) for n in shapes if (m := re.search(r"(^|\.)(?:layers|h)\.(\d+)\.", n))}
    if "num_hidden_layers" in cfg and layer_ids and max(layer_ids) + 1 != cfg["num_hidden_layers"]:
        problems.append(
            f"num_hidden_layers={cfg['num_hidden_layers']} but the tensors hold {max(layer_ids) + 1} layers"
        )
    if problems:
        raise ValueError(f"{path} does not match the checkpoint tensors: " + "; ".join(problems))


def quantize_checkpoint(
    model_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    config: MSDConfig,
    *,
    include: str | None = None,
    exclude: str | None = DEFAULT_EXCLUDE,
    overwrite: bool = False,
    progress: Callable[[str, int], None] | None = None,
) -> QuantizeSummary:
    """Quantize a safetensors checkpoint directory tensor by tensor into a :func:`load_quantized` directory.

    Every 2-D ``<layer>.weight`` whose name matches ``include`` (default: all) and not ``exclude`` (default:
    embeddings) becomes the :class:`MSDLinear` buffers of ``<layer>``; a ``<layer>.bias`` beside it is stored as
    float32; every other tensor is copied unchanged. One output shard per input shard. Weights are read one at a
    time and quantized in row blocks, so memory stays near the largest tensor. ``progress(name, nbytes)`` is
    called after each tensor. The other regular files of ``model_dir`` are copied; symbolic links among them are
    not (see :attr:`QuantizeSummary.skipped`). Nothing outside ``model_dir`` and beside ``out_dir`` is read or
    written (see the module docstring for the rules).

    Raises:
        FileNotFoundError: the directory, its tensor file(s) or a shard listed in the index is missing.
        FileExistsError: ``out_dir`` exists (without ``overwrite``), cannot be replaced (not an empty directory or
            a lowbit checkpoint), or was created or replaced by another process during the run.
        ValueError: ``out_dir`` is, contains or is inside ``model_dir``; a shard name that is not a plain
            ``*.safetensors`` name inside ``model_dir``; a truncated/corrupted file (the ``safetensors`` header
            checks: overlapping or gapped offsets included); an index naming tensors a shard lacks;
            ``config.json`` that does not match the tensors; a selected weight that is empty, not floating-point,
            holds NaN/Inf or values beyond the float32 range; a layer bias of another length.
    """
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    files, weight_map = _source_files(model_dir)
    _check_separate(model_dir, out_dir)
    headers = {fname: read_header(model_dir / fname) for fname in files}
    if weight_map is not None:
        for key, fname in weight_map.items():
            if key not in headers[fname]:
                raise ValueError(f"{INDEX_FILE} maps {key!r} to {fname}, which does not contain it (mismatched shards)")
    shapes = {k: e.shape for h in headers.values() for k, e in h.items()}
    _check_config(model_dir, shapes)
    inc = re.compile(include) if include else None
    exc = re.compile(exclude) if exclude else None

    def selected(key: str, shape: tuple[int, ...]) -> bool:
        return (
            key.endswith(".weight")
            and len(shape) == 2
            and (inc is None or inc.search(key) is not None)
            and (exc is None or exc.search(key) is None)
        )

    layers: dict[str, Any] = {}
    for fname, header in headers.items():
        for key, e in header.items():
            if selected(key, e.shape):
                _check_weight_entry(model_dir / fname, e, config)
                n, k = e.shape
                layers[key[: -len(".weight")]] = {"config": config.to_dict(), "in_features": k, "out_features": n}
    for layer, entry in layers.items():
        bias_shape = shapes.get(f"{layer}.bias")
        if bias_shape is not None and len(bias_shape) == 1 and bias_shape[0] != entry["out_features"]:
            raise ValueError(
                f"tensor {layer}.bias has {bias_shape[0]} elements but {layer}.weight has "
                f"{entry['out_features']} rows; the bias of a quantized layer must match"
            )
        entry["bias"] = bias_shape is not None and len(bias_shape) == 1
    file_sha: dict[str, str] = {}
    new_map: dict[str, str] = {}
    counts = {"quantized": 0, "copied": 0, "in": 0, "out": 0, "largest": 0}
    skipped: list[str] = []
    with atomic_checkpoint_dir(out_dir, overwrite) as tmp:
        for fname in files:
            plan: list[tuple[TensorSpec, str, str]] = []  # (output spec, source key, role)
            for key, e in headers[fname].items():
                if selected(key, e.shape):
                    n, k = e.shape
                    for buf, (bshape, bdtype) in quantized_shapes(n, k, config).items():
                        plan.append((TensorSpec(f"{key[: -len('.weight')]}.{buf}", bdtype, bshape), key, buf))
                    plan.extend((g, key, "guard") for g in guard_specs([key[: -len(".weight")]]))
                elif key.endswith(".bias") and layers.get(key[: -len(".bias")], {}).get("bias"):
                    plan.append((TensorSpec(key, torch.float32, e.shape), key, "bias"))
                else:
                    plan.append((TensorSpec(key, e.dtype, e.shape), key, "copy"))
            routes = {p[0].name: p[1:] for p in plan}
            producer = _Producer(model_dir / fname, headers[fname], config, counts, progress, routes)
            specs = [p[0] for p in plan]
            file_sha[fname] = write_safetensors(tmp / fname, specs, producer, {"format": "pt"})
            counts["out"] += (tmp / fname).stat().st_size
            new_map.update({s.name: fname for s in specs})
        if weight_map is not None:
            write_json(tmp / INDEX_FILE, {"metadata": {"total_size": counts["out"]}, "weight_map": new_map})
        for extra in sorted(os.scandir(model_dir), key=lambda d: d.name):
            if extra.name.endswith(TENSOR_SUFFIX) or extra.name in (INDEX_FILE, METADATA_FILE):
                continue
            if extra.is_symlink():
                skipped.append(extra.name)
            elif extra.is_file(follow_symlinks=False):
                copy_plain_file(Path(extra.path), tmp / extra.name)
        _mark_config(tmp / "config.json", config)
        guards = [g.name for g in guard_specs(layers)]
        write_json(tmp / METADATA_FILE, checkpoint_metadata(layers, {}, file_sha, guards))
    return QuantizeSummary(
        out_dir,
        counts["quantized"],
        counts["copied"],
        counts["in"],
        counts["out"],
        counts["largest"],
        tuple(skipped),
    )


def _mark_config(path: Path, config: MSDConfig) -> None:
    """Add ``quantization_config`` (``quant_method="lowbit-msd"``, :func:`lowbit.msd.hf.quantization_config_dict`)
    to the copied ``config.json``, so transformers knows the folder is quantized (an existing entry is replaced:
    the tensors are now lowbit's)."""
    from lowbit.msd.hf import quantization_config_dict

    if not is_plain_file(path):
        return
    data = read_json(path)
    if isinstance(data, dict):
        data["quantization_config"] = quantization_config_dict(config)
        path.unlink()
        write_json(path, data)


def _check_weight_entry(path: Path, e: TensorEntry, config: MSDConfig) -> None:
    """A weight selected for quantization must be floating-point, non-empty and fit the config's grouping."""
    if e.dtype not in _WEIGHT_DTYPES:
        raise ValueError(
            f"tensor {e.name!r} in {path} is a 2-D .weight of dtype {ST_DTYPES[e.dtype]}: only floating-point "
            "weights (F16, BF16, F32, F64) can be quantized; leave it out with --exclude/--include"
        )
    n, k = e.shape
    if n == 0 or k == 0:
        raise ValueError(f"tensor {e.name!r} in {path} has shape {list(e.shape)}: an empty weight cannot be quantized")
    if config.weight == "int8" and config.group_size is not None and k % config.group_size:
        raise ValueError(f"group_size={config.group_size} does not divide K={k} of {e.name!r}")


class _Producer:
    """Produces each output tensor from its source tensor; caches the last quantized weight's buffers only."""

    def __init__(
        self,
        path: Path,
        entries: dict[str, TensorEntry],
        config: MSDConfig,
        counts: dict[str, int],
        progress: Callable[[str, int], None] | None,
        routes: dict[str, tuple[str, str]],
    ):
        self.routes = routes
        self.entries = entries
        self.path = path
        self.config = config
        self.counts = counts
        self.progress = progress
        self._cache_key: str | None = None
        self._cache: dict[str, torch.Tensor] = {}

    def _load(self, key: str) -> torch.Tensor:
        t = read_tensor(self.path, self.entries[key])
        nbytes = t.numel() * t.element_size()
        self.counts["in"] += nbytes
        self.counts["largest"] = max(self.counts["largest"], nbytes)
        return t

    def __call__(self, spec: TensorSpec) -> torch.Tensor:
        key, role = self.routes[spec.name]
        if role == "guard":
            return empty_guard(spec)
        if role == "copy":
            t = self._load(key)
            self.counts["copied"] += 1
            self._report(key, t)
            return t
        if role == "bias":
            t = self._load(key).to(torch.float32)
            self._report(key, t)
            return t
        if self._cache_key != key:
            self._cache.clear()
            w = self._load(key)
            _check_weight_values(self.path, key, w)
            self._cache = _quantize_rows(w, self.config)
            _check_scales(self.path, key, self._cache)
            self._cache_key = key
            self.counts["quantized"] += 1
            self._report(key, w)
            del w
        out = self._cache.pop(role)
        if not self._cache:
            self._cache_key = None
        return out

    def _report(self, key: str, t: torch.Tensor) -> None:
        if self.progress is not None:
            self.progress(key, t.numel() * t.element_size())


def _check_weight_values(path: Path, key: str, w: torch.Tensor) -> None:
    """NaN/Inf, or a magnitude beyond float32 (an F64 weight: its scales would overflow), is an error."""
    if not bool(torch.isfinite(w).all()):
        raise ValueError(f"weight {key!r} in {path} contains NaN or Inf")
    amax = float(w.abs().max())
    if amax > _FLOAT32_MAX:
        raise ValueError(
            f"weight {key!r} in {path} holds a value of magnitude {amax:.3g}, beyond the float32 range "
            f"({_FLOAT32_MAX:.3g}): its quantization scales would overflow"
        )


def _check_scales(path: Path, key: str, buffers: dict[str, torch.Tensor]) -> None:
    """The quantized scales must be finite (INT8) or a finite E8M0 exponent (MXFP4, 255 encodes NaN)."""
    scale = buffers.get("weight_scale")
    exps = buffers.get("weight_scale_exponents")
    bad_scale = scale is not None and not bool(torch.isfinite(scale).all())
    if bad_scale or (exps is not None and bool((exps == 255).any())):
        raise ValueError(f"weight {key!r} in {path}: its quantization scales are out of range (Inf or NaN)")


def _quantize_rows(w: torch.Tensor, config: MSDConfig) -> dict[str, torch.Tensor]:
    """:func:`quantize_weight` applied to row blocks (same bytes: every row is quantized independently)."""
    n, k = w.shape
    rows = max(1, _ROW_CHUNK_ELEMENTS // max(1, k))
    parts = [quantize_weight(w[i : i + rows], config) for i in range(0, n, rows)]
    return {name: torch.cat([p[name] for p in parts], dim=0) for name in parts[0]}
