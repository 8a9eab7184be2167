"""Quantized checkpoints: ``save_quantized`` / ``load_quantized`` and the streaming ``quantize_checkpoint``.

Layout of a quantized checkpoint directory (written under a temporary name and renamed into place, so a
failure never leaves a half-written directory):

* ``model.safetensors`` or shards ``<name>.safetensors`` with ``model.safetensors.index.json`` (the Hugging
  Face layout): every tensor of the model's ``state_dict``. Quantized layers hold their :class:`MSDLinear`
  buffers (``<layer>.qweight`` int8 + ``<layer>.weight_scale`` float32, or ``<layer>.weight_codes`` uint8 packed
  E2M1 + ``<layer>.weight_scale_exponents`` E8M0 for MXFP4) instead of ``<layer>.weight``.
* ``lowbit_quant.json``: format name and version, each quantized layer's :class:`MSDConfig`, shape and bias flag,
  tied (shared) tensors, and the SHA-256 of every tensor file (checked on load: a corrupted or truncated file is
  an error, never a silently different model).
* For ``lowbit quantize``: the other files of the source directory (``config.json``, tokenizer files) copied.

Tensors are stored bit-exactly (``safetensors``), so ``load_quantized(save_quantized(model))`` reproduces every
buffer and parameter exactly (tested). The streaming writer writes one tensor at a time, so peak memory stays
near the largest tensor, not the model size.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import struct
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lowbit.msd.config import MSDConfig
from lowbit.msd.linear import MSDLinear, quantize_weight, quantized_shapes
from lowbit.msd.quantize_model import _set_submodule

__all__ = [
    "FORMAT",
    "METADATA_FILE",
    "QuantizeSummary",
    "load_quantized",
    "quantize_checkpoint",
    "save_quantized",
]

FORMAT = "lowbit-msd"
VERSION = 1
METADATA_FILE = "lowbit_quant.json"
INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
DEFAULT_EXCLUDE = r"(^|\.)(embed_tokens|embeddings?|wte|wpe|word_embeddings|position_embeddings)\."
_HASH_CHUNK = 1 << 24
_ROW_CHUNK_ELEMENTS = 1 << 18  # rows quantized at a time in the streaming path (identical bytes: rows independent)

_ST_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


# ---------------------------------------------------------------------------------------------------------------
# atomic directories and streaming safetensors
# ---------------------------------------------------------------------------------------------------------------


@contextmanager
def _atomic_dir(out_dir: Path, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary directory beside ``out_dir``; on success rename it to ``out_dir``, on error delete it."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"output directory {out_dir} exists; pass overwrite=True (--overwrite) to replace it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@dataclass(frozen=True)
class _Spec:
    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * torch.empty((), dtype=self.dtype).element_size()


def _write_safetensors(
    path: Path, specs: list[_Spec], produce: Callable[[_Spec], torch.Tensor], metadata: dict[str, str] | None = None
) -> str:
    """Write a safetensors file tensor by tensor (``produce(spec)`` is called once per tensor, in order).

    The header (8-byte little-endian length, JSON with dtype/shape/data_offsets, padded with spaces to 8 bytes)
    is known from the specs, so nothing but the current tensor is held in memory. Returns the file's SHA-256.
    """
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = metadata
    offset = 0
    for s in specs:
        if s.dtype not in _ST_DTYPES:
            raise TypeError(f"tensor {s.name!r} has dtype {s.dtype}, which safetensors cannot store")
        header[s.name] = {
            "dtype": _ST_DTYPES[s.dtype],
            "shape": list(s.shape),
            "data_offsets": [offset, offset + s.nbytes],
        }
        offset += s.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        for chunk in (struct.pack("<Q", len(raw)), raw):
            f.write(chunk)
            digest.update(chunk)
        for s in specs:
            t = produce(s)
            if t.dtype != s.dtype or tuple(t.shape) != s.shape:
                raise RuntimeError(
                    f"tensor {s.name!r}: produced {t.dtype} {tuple(t.shape)}, expected {s.dtype} {s.shape}"
                )
            data = t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
            f.write(data)
            digest.update(data)
        f.flush()
        os.fsync(f.fileno())
    return digest.hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _open_safetensors(path: Path) -> Any:
    """``safetensors.safe_open`` with a clear error for a missing, truncated or corrupted file."""
    from safetensors import safe_open

    if not path.is_file():
        raise FileNotFoundError(f"safetensors file {path} is missing")
    try:
        return safe_open(str(path), framework="pt")
    except Exception as exc:  # SafetensorError: header/JSON/size problems
        raise ValueError(f"{path} is not a valid safetensors file (truncated or corrupted?): {exc}") from exc


# ---------------------------------------------------------------------------------------------------------------
# save / load a model
# ---------------------------------------------------------------------------------------------------------------


def save_quantized(model: nn.Module, out_dir: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write ``model``'s state (quantized layers included) to ``out_dir`` (layout in the module docstring).

    Shared tensors (tied weights) are stored once and recorded in ``lowbit_quant.json``.

    Raises:
        FileExistsError: ``out_dir`` exists and ``overwrite`` is false.
        ValueError: the model has no :class:`MSDLinear` layer (nothing quantized).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    layers = {name: m for name, m in model.named_modules() if isinstance(m, MSDLinear)}
    if not layers:
        raise ValueError("model has no MSDLinear layers; run lowbit.msd.quantize_model(model, config) first")
    state = model.state_dict(keep_vars=False)
    tensors: dict[str, torch.Tensor] = {}
    tied: dict[str, str] = {}
    seen: dict[tuple[int, int, tuple[int, ...], torch.dtype], str] = {}
    for name, t in state.items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.dtype)
        if t.numel() and key in seen:
            tied[name] = seen[key]
            continue
        seen[key] = name
        tensors[name] = t
    specs = [_Spec(n, t.dtype, tuple(t.shape)) for n, t in tensors.items()]
    with _atomic_dir(Path(out_dir), overwrite) as tmp:
        sha = _write_safetensors(tmp / SINGLE_FILE, specs, lambda s: tensors[s.name], {"format": "pt"})
        meta = _metadata({n: _layer_entry(m) for n, m in layers.items()}, tied, {SINGLE_FILE: sha})
        _write_json(tmp / METADATA_FILE, meta)
    return Path(out_dir)


def load_quantized(directory: str | os.PathLike[str], model: nn.Module, *, verify_checksums: bool = True) -> nn.Module:
    """Load a quantized checkpoint into ``model`` (same architecture, float ``nn.Linear`` layers) in place.

    Every layer listed in ``lowbit_quant.json`` is replaced by an :class:`MSDLinear` with the stored config, then
    all tensors are loaded strictly (missing or unexpected names, or shape mismatches, are errors) and the
    kernels are prepacked. Returns ``model``.

    Raises:
        FileNotFoundError: the directory, its metadata or a tensor file is missing.
        ValueError: a corrupted or truncated file (SHA-256 or header check), an unknown format version, or a
            checkpoint that does not match ``model`` (a layer missing, not an ``nn.Linear``, or of another shape).
    """
    directory = Path(directory)
    meta_path = directory / METADATA_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} not found: {directory} is not a lowbit quantized checkpoint")
    meta = _read_json(meta_path)
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise ValueError(
            f"{meta_path}: format {meta.get('format')!r} version {meta.get('version')!r}, expected {FORMAT!r} {VERSION}"
        )
    files: dict[str, str] = meta["files"]
    for fname, sha in files.items():
        path = directory / fname
        if not path.is_file():
            raise FileNotFoundError(f"tensor file {path} listed in {METADATA_FILE} is missing")
        if verify_checksums and _sha256(path) != sha:
            raise ValueError(f"{path} is corrupted or truncated: its SHA-256 differs from the one in {METADATA_FILE}")
    for name, entry in meta["layers"].items():
        _install_layer(model, name, entry)
    state: dict[str, torch.Tensor] = {}
    for fname in files:
        with _open_safetensors(directory / fname) as f:
            for key in f.keys():
                state[key] = f.get_tensor(key)
    for name, source in meta.get("tied", {}).items():
        if source not in state:
            raise ValueError(f"tied tensor {name!r} refers to {source!r}, which the checkpoint lacks")
        state[name] = state[source]
    expected = model.state_dict()
    _fill_tied(expected, state)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"checkpoint {directory} does not match the model: missing {missing[:8]}{'...' if len(missing) > 8 else ''}"
            f", unexpected {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}"
        )
    for key, t in state.items():
        if tuple(expected[key].shape) != tuple(t.shape):
            raise ValueError(
                f"checkpoint tensor {key!r} has shape {tuple(t.shape)}, the model expects {tuple(expected[key].shape)}"
            )
    model.load_state_dict(state, strict=True)
    return model


def _fill_tied(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> None:
    """A tensor the checkpoint omits because the model ties it to one it holds (e.g. ``lm_head.weight`` tied to
    the embedding in a Hugging Face checkpoint) is filled from that one; anything else stays missing."""
    by_storage: dict[tuple[int, int, tuple[int, ...]], str] = {}
    for key, t in expected.items():
        if key in state and t.numel():
            by_storage[(t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))] = key
    for key, t in expected.items():
        if key not in state and t.numel():
            source = by_storage.get((t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape)))
            if source is not None:
                state[key] = state[source]


def _layer_entry(m: MSDLinear) -> dict[str, Any]:
    return {
        "config": m.config.to_dict(),
        "in_features": m.in_features,
        "out_features": m.out_features,
        "bias": m.bias is not None,
    }


def _install_layer(model: nn.Module, name: str, entry: dict[str, Any]) -> None:
    try:
        current = model.get_submodule(name)
    except AttributeError as exc:
        raise ValueError(f"checkpoint layer {name!r} does not exist in the model (config mismatch?)") from exc
    config = MSDConfig.from_dict(entry["config"])
    n, k, bias = int(entry["out_features"]), int(entry["in_features"]), bool(entry["bias"])
    if isinstance(current, MSDLinear):
        if (current.out_features, current.in_features, current.config) == (n, k, config):
            return
    elif not isinstance(current, nn.Linear):
        raise ValueError(f"checkpoint layer {name!r} is a {type(current).__name__} in the model, not an nn.Linear")
    if (current.out_features, current.in_features) != (n, k) or (current.bias is not None) != bias:
        raise ValueError(
            f"checkpoint layer {name!r} is [{n}, {k}] (bias={bias}) but the model's is "
            f"[{current.out_features}, {current.in_features}] (bias={current.bias is not None}): config mismatch"
        )
    _set_submodule(model, name, MSDLinear(k, n, bias=bias, config=config))


def _metadata(layers: dict[str, Any], tied: dict[str, str], files: dict[str, str]) -> dict[str, Any]:
    return {"format": FORMAT, "version": VERSION, "layers": layers, "tied": tied, "files": files}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    with open(path, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())


def _read_json(path: Path) -> dict[str, Any]:
    try:
        with open(path) as f:
            data = json.load(f)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON (corrupted?): {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object")
    return data


# ---------------------------------------------------------------------------------------------------------------
# streaming quantization of a safetensors checkpoint directory
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuantizeSummary:
    """What :func:`quantize_checkpoint` did: layers quantized, tensors copied, bytes in and out, largest tensor."""

    out_dir: Path
    quantized: int
    copied: int
    bytes_in: int
    bytes_out: int
    largest_tensor_bytes: int


def _source_files(model_dir: Path) -> tuple[list[str], dict[str, str] | None]:
    """The tensor files of a checkpoint directory and its weight map (None for a single file)."""
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model directory {model_dir} does not exist")
    index = model_dir / INDEX_FILE
    if index.is_file():
        data = _read_json(index)
        weight_map = data.get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ValueError(f"{index} has no 'weight_map'")
        files = sorted(set(weight_map.values()))
        missing = [f for f in files if not (model_dir / f).is_file()]
        if missing:
            raise FileNotFoundError(f"shards listed in {index} are missing: {missing}")
        return files, weight_map
    if (model_dir / SINGLE_FILE).is_file():
        return [SINGLE_FILE], None
    found = sorted(p.name for p in model_dir.glob("*.safetensors"))
    if len(found) == 1:
        return found, None
    raise FileNotFoundError(
        f"{model_dir} has no {SINGLE_FILE} or {INDEX_FILE}"
        + (f" (several .safetensors files {found} but no index)" if found else "")
    )


def _check_config(model_dir: Path, shapes: dict[str, tuple[int, ...]]) -> None:
    """Compare ``config.json`` (if present) with the tensors: hidden size, vocabulary, number of layers."""
    path = model_dir / "config.json"
    if not path.is_file():
        return
    cfg = _read_json(path)
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
    called after each tensor.

    Raises:
        FileNotFoundError: the directory, its tensor file(s) or a shard listed in the index is missing.
        ValueError: a truncated/corrupted file, an index naming tensors a shard lacks, ``config.json`` that does
            not match the tensors, NaN/Inf in a weight, or an output directory that exists (without ``overwrite``).
    """
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    files, weight_map = _source_files(model_dir)
    headers: dict[str, dict[str, tuple[tuple[int, ...], torch.dtype]]] = {}
    for fname in files:
        headers[fname] = {key: (e.shape, e.dtype) for key, e in _read_header(model_dir / fname).items()}
    if weight_map is not None:
        for key, fname in weight_map.items():
            if key not in headers[fname]:
                raise ValueError(f"{INDEX_FILE} maps {key!r} to {fname}, which does not contain it (mismatched shards)")
    shapes = {k: s for h in headers.values() for k, (s, _) in h.items()}
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
    for key, shape in shapes.items():
        if selected(key, shape):
            n, k = shape
            if config.weight == "int8" and config.group_size is not None and k % config.group_size:
                raise ValueError(f"group_size={config.group_size} does not divide K={k} of {key!r}")
            layers[key[: -len(".weight")]] = {"config": config.to_dict(), "in_features": k, "out_features": n}
    for layer, entry in layers.items():
        entry["bias"] = len(shapes.get(f"{layer}.bias", ())) == 1
    file_sha: dict[str, str] = {}
    new_map: dict[str, str] = {}
    counts = {"quantized": 0, "copied": 0, "in": 0, "out": 0, "largest": 0}
    with _atomic_dir(out_dir, overwrite) as tmp:
        for fname in files:
            plan: list[tuple[_Spec, str, str]] = []  # (output spec, source key, role)
            for key, (shape, dtype) in headers[fname].items():
                if selected(key, shape):
                    n, k = shape
                    for buf, (bshape, bdtype) in quantized_shapes(n, k, config).items():
                        plan.append((_Spec(f"{key[: -len('.weight')]}.{buf}", bdtype, bshape), key, buf))
                elif key.endswith(".bias") and layers.get(key[: -len(".bias")], {}).get("bias"):
                    plan.append((_Spec(key, torch.float32, shape), key, "bias"))
                else:
                    plan.append((_Spec(key, dtype, shape), key, "copy"))
            producer = _Producer(model_dir / fname, config, counts, progress, {p[0].name: p[1:] for p in plan})
            specs = [p[0] for p in plan]
            file_sha[fname] = _write_safetensors(tmp / fname, specs, producer, {"format": "pt"})
            counts["out"] += (tmp / fname).stat().st_size
            new_map.update({s.name: fname for s in specs})
        if weight_map is not None:
            _write_json(tmp / INDEX_FILE, {"metadata": {"total_size": counts["out"]}, "weight_map": new_map})
        for extra in sorted(model_dir.iterdir()):
            if extra.is_file() and extra.suffix != ".safetensors" and extra.name not in (INDEX_FILE, METADATA_FILE):
                shutil.copy2(extra, tmp / extra.name)
        _write_json(tmp / METADATA_FILE, _metadata(layers, {}, file_sha))
    return QuantizeSummary(
        out_dir, counts["quantized"], counts["copied"], counts["in"], counts["out"], counts["largest"]
    )


class _Producer:
    """Produces each output tensor from its source tensor; caches the last quantized weight's buffers only."""

    def __init__(
        self,
        path: Path,
        config: MSDConfig,
        counts: dict[str, int],
        progress: Callable[[str, int], None] | None,
        routes: dict[str, tuple[str, str]],
    ):
        self.routes = routes
        self.entries = _read_header(path)
        self.path = path
        self.config = config
        self.counts = counts
        self.progress = progress
        self._cache_key: str | None = None
        self._cache: dict[str, torch.Tensor] = {}

    def _load(self, key: str) -> torch.Tensor:
        t = _read_tensor(self.path, self.entries[key])
        nbytes = t.numel() * t.element_size()
        self.counts["in"] += nbytes
        self.counts["largest"] = max(self.counts["largest"], nbytes)
        return t

    def __call__(self, spec: _Spec) -> torch.Tensor:
        key, role = self.routes[spec.name]
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
            if not bool(torch.isfinite(w).all()):
                raise ValueError(f"weight {key!r} in {self.path} contains NaN or Inf")
            self._cache = _quantize_rows(w, self.config)
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


def _quantize_rows(w: torch.Tensor, config: MSDConfig) -> dict[str, torch.Tensor]:
    """:func:`quantize_weight` applied to row blocks (same bytes: every row is quantized independently)."""
    n, k = w.shape
    rows = max(1, _ROW_CHUNK_ELEMENTS // max(1, k))
    parts = [quantize_weight(w[i : i + rows], config) for i in range(0, n, rows)]
    return {name: torch.cat([p[name] for p in parts], dim=0) for name in parts[0]}


def _dtype_from_st(code: str, path: Path, key: str) -> torch.dtype:
    for dtype, name in _ST_DTYPES.items():
        if name == code:
            return dtype
    raise ValueError(f"tensor {key!r} in {path} has dtype {code}, which lowbit quantize does not handle")


@dataclass(frozen=True)
class _Entry:
    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int  # absolute file offset of the first byte
    nbytes: int


def _read_header(path: Path) -> dict[str, _Entry]:
    """Parse and validate a safetensors header without mapping the data (plain reads keep RSS low).

    Checks: the 8-byte length, valid JSON, known dtypes, ``data_offsets`` matching shape × itemsize, and a file
    long enough for every tensor (a truncated file is reported here, before anything is written).
    """
    if not path.is_file():
        raise FileNotFoundError(f"safetensors file {path} is missing")
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise ValueError(f"{path} is truncated: {size} bytes, shorter than the 8-byte safetensors header length")
        (n,) = struct.unpack("<Q", raw)
        if n > size - 8:
            raise ValueError(f"{path} is truncated or corrupted: header length {n} exceeds the file size {size}")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path} is corrupted: its safetensors header is not valid JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise ValueError(f"{path} is corrupted: the safetensors header is not a JSON object")
    entries = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = _dtype_from_st(info["dtype"], path, name)
            shape = tuple(int(d) for d in info["shape"])
            begin, end = (int(v) for v in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path} is corrupted: bad header entry for {name!r} ({exc})") from exc
        nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        if end - begin != nbytes or begin < 0:
            raise ValueError(f"{path} is corrupted: tensor {name!r} has {end - begin} bytes for shape {shape} {dtype}")
        if 8 + n + end > size:
            raise ValueError(
                f"{path} is truncated: tensor {name!r} ends at byte {8 + n + end} but the file has {size} bytes"
            )
        entries[name] = _Entry(name, dtype, shape, 8 + n + begin, nbytes)
    return entries


def _read_tensor(path: Path, e: _Entry) -> torch.Tensor:
    """Read one tensor with ordinary file reads (one copy, no memory map)."""
    buf = bytearray(e.nbytes)
    with open(path, "rb") as f:
        f.seek(e.start)
        got = f.readinto(buf)
    if got != e.nbytes:
        raise ValueError(f"{path} is truncated: tensor {e.name!r} needs {e.nbytes} bytes, read {got}")
    if not e.nbytes:
        return torch.empty(e.shape, dtype=e.dtype)
    return torch.frombuffer(buf, dtype=e.dtype).reshape(e.shape)
