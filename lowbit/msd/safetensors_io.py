"""Streaming safetensors IO and the file rules of a checkpoint folder (used by :mod:`lowbit.msd.checkpoint` and
:mod:`lowbit.msd.convert`).

* Reading: :func:`read_header` validates a file with the ``safetensors`` library (``safe_open``) and again with
  :func:`parse_header` (8-byte length within the file, JSON object without duplicate names, known dtypes,
  non-negative integer shapes and offsets, ``end - begin = prod(shape) · itemsize``, offsets contiguous from 0 to
  the end of the file); :func:`read_tensor` then reads one tensor with plain file reads (no memory map, so the
  resident set stays near one tensor).
* Writing: :func:`write_safetensors` writes the header from the specs first (8-byte little-endian length, JSON
  padded with spaces to a multiple of 8), then one tensor at a time from a producer, and returns the file's
  SHA-256; peak memory is the largest tensor, not the model.
* Names: a file name taken from an index or from metadata must be a plain name inside its folder
  (:func:`plain_name`; no separator, no ``..``, not absolute); a tensor file must be a plain ``*.safetensors``
  name of a regular file or of a symbolic link to one (:func:`tensor_file`). Other files are copied without
  following links (:func:`copy_plain_file`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import stat
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "HASH_CHUNK",
    "ST_DTYPES",
    "TENSOR_SUFFIX",
    "TensorEntry",
    "TensorSpec",
    "copy_plain_file",
    "is_plain_file",
    "open_safetensors",
    "parse_header",
    "plain_name",
    "read_header",
    "read_json",
    "read_tensor",
    "sha256_file",
    "tensor_file",
    "write_json",
    "write_safetensors",
]

TENSOR_SUFFIX = ".safetensors"
HASH_CHUNK = 1 << 24

ST_DTYPES = {
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


def plain_name(name: object, folder: Path, source: str) -> str:
    """``name`` if it is a plain file name inside ``folder``, else a ``ValueError`` naming ``source``.

    Plain: a non-empty string without a path separator or NUL, not ``.``/``..``, not absolute, and
    ``folder/name`` has ``folder`` itself as its (unresolved) parent.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"{source}: file name {name!r} is not a non-empty string")
    seps = {"/", "\\", "\0", os.sep} | ({os.altsep} if os.altsep else set())
    if any(s in name for s in seps) or name in (".", "..") or os.path.isabs(name):
        raise ValueError(
            f"{source}: file name {name!r} is not a plain name inside {folder} "
            "(separators, '..' and absolute paths are refused)"
        )
    if os.path.dirname(os.path.abspath(folder / name)) != os.path.abspath(folder):
        raise ValueError(f"{source}: file name {name!r} does not stay inside {folder}")
    return name


def tensor_file(folder: Path, name: object, source: str) -> Path:
    """The path of a tensor file (shard) ``name`` listed by ``source``: a plain ``*.safetensors`` name inside
    ``folder`` that is a regular file or a symbolic link to one.

    Raises:
        ValueError: not a plain name, not ``*.safetensors``, or not a regular file (a folder, a device, a link to
            one).
        FileNotFoundError: nothing of that name (or a dangling link).
    """
    fname = plain_name(name, folder, source)
    if not fname.endswith(TENSOR_SUFFIX) or fname == TENSOR_SUFFIX:
        raise ValueError(f"{source}: tensor file {fname!r} must be named <name>{TENSOR_SUFFIX}")
    path = folder / fname
    try:
        st = os.stat(path)  # follows a link: shards may be links to regular files
    except FileNotFoundError:
        raise FileNotFoundError(f"tensor file {path} listed in {source} is missing") from None
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"tensor file {path} listed in {source} is not a regular file")
    return path


def is_plain_file(path: Path) -> bool:
    """A regular file that is not a symbolic link (``lstat``)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def copy_plain_file(src: Path, dst: Path) -> None:
    """Copy a regular file without following a symbolic link (``O_NOFOLLOW``; checked again on the open file).

    The copy gets the umask's mode (``0o666 & ~umask``) and the source's modification time.
    """
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    fd = os.open(src, flags)
    with open(fd, "rb") as fin:
        st = os.fstat(fin.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{src} is not a regular file; not copied")
        with open(dst, "xb") as fout:
            shutil.copyfileobj(fin, fout, HASH_CHUNK)
            fout.flush()
            os.fsync(fout.fileno())
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))


@dataclass(frozen=True)
class TensorSpec:
    """A tensor to be written: name, dtype and shape (its bytes come later, from the producer)."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        """``prod(shape) · itemsize``."""
        return math.prod(self.shape) * torch.empty((), dtype=self.dtype).element_size()


def write_safetensors(
    path: Path,
    specs: list[TensorSpec],
    produce: Callable[[TensorSpec], torch.Tensor],
    metadata: dict[str, str] | None = None,
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
        if s.dtype not in ST_DTYPES:
            raise TypeError(f"tensor {s.name!r} has dtype {s.dtype}, which safetensors cannot store")
        header[s.name] = {
            "dtype": ST_DTYPES[s.dtype],
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


def sha256_file(path: Path) -> str:
    """SHA-256 (hex) of a file, read in 16 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def open_safetensors(path: Path) -> Any:
    """``safetensors.safe_open`` with a clear error for a missing, truncated or corrupted file."""
    from safetensors import safe_open

    if not path.is_file():
        raise FileNotFoundError(f"safetensors file {path} is missing")
    try:
        return safe_open(str(path), framework="pt")
    except Exception as exc:  # SafetensorError: header/JSON/size problems
        raise ValueError(f"{path} is not a valid safetensors file (truncated or corrupted?): {exc}") from exc


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as indented JSON with sorted keys and fsync it (inside a folder being built aside)."""
    with open(path, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON object; invalid JSON or another top-level value is a ``ValueError``."""
    try:
        with open(path) as f:
            data = json.load(f)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON (corrupted?): {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object")
    return data


def _dtype_from_st(code: str, path: Path, key: str) -> torch.dtype:
    for dtype, name in ST_DTYPES.items():
        if name == code:
            return dtype
    raise ValueError(f"tensor {key!r} in {path} has dtype {code}, which lowbit quantize does not handle")


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a validated safetensors header: where its bytes lie in the file."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int  # absolute file offset of the first byte
    nbytes: int


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"duplicate names {dup[:4]}")
    return dict(pairs)


def read_header(path: Path) -> dict[str, TensorEntry]:
    """Validate a safetensors file with the ``safetensors`` library, then read its offsets without mapping the
    data (plain reads keep the resident set low).

    ``safe_open`` rejects a truncated file, invalid JSON, negative or non-integer shapes, offsets that do not
    match shape × itemsize, and offsets that overlap, leave gaps or do not cover the data exactly. The same rules
    are checked again by :func:`parse_header`, and the names, dtypes and shapes must agree with the library's.
    """
    from safetensors import safe_open

    if not path.is_file():
        raise FileNotFoundError(f"safetensors file {path} is missing")
    try:
        with safe_open(str(path), framework="pt") as f:
            library = {k: (f.get_slice(k).get_dtype(), tuple(f.get_slice(k).get_shape())) for k in f.keys()}
    except Exception as exc:  # SafetensorError: header length, JSON, offsets, size
        raise ValueError(f"{path} is not a valid safetensors file (truncated or corrupted): {exc}") from exc
    entries = parse_header(path)
    ours = {name: (ST_DTYPES[e.dtype], e.shape) for name, e in entries.items()}
    if ours != library:
        raise ValueError(f"{path} is corrupted: its header reads differently here and in the safetensors library")
    return entries


def parse_header(path: Path) -> dict[str, TensorEntry]:
    """Parse a safetensors header with the library's rules: 8-byte length within the file, a JSON object without
    duplicate names, known dtypes, non-negative integer shapes and offsets, ``end - begin`` equal to shape ×
    itemsize, and offsets that, sorted, run contiguously from 0 to the end of the file (no overlap, no gap)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(8)
        (n,) = struct.unpack("<Q", head) if len(head) == 8 else (size,)
        if n > size - 8:
            raise ValueError(f"{path} is truncated or corrupted: header length {n} exceeds the file size {size}")
        raw = f.read(n)
    try:
        header = json.loads(raw, object_pairs_hook=_no_duplicates)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, duplicates
        raise ValueError(f"{path} is corrupted: its safetensors header is not valid ({exc})") from exc
    if not isinstance(header, dict):
        raise ValueError(f"{path} is corrupted: the safetensors header is not a JSON object")
    entries: dict[str, TensorEntry] = {}
    spans: list[tuple[int, int, str]] = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = _dtype_from_st(info["dtype"], path, name)
            shape = tuple(info["shape"])
            begin, end = info["data_offsets"]
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path} is corrupted: bad header entry for {name!r} ({exc})") from exc
        if not all(type(v) is int and v >= 0 for v in (*shape, begin, end)):
            raise ValueError(f"{path} is corrupted: tensor {name!r} has a negative or non-integer shape or offset")
        nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        if end - begin != nbytes:
            raise ValueError(f"{path} is corrupted: tensor {name!r} has {end - begin} bytes for shape {shape} {dtype}")
        entries[name] = TensorEntry(name, dtype, shape, 8 + n + begin, nbytes)
        spans.append((begin, end, name))
    expected = 0
    for begin, end, name in sorted(spans):
        if begin != expected:
            kind = "overlaps the previous tensor" if begin < expected else "leaves a gap before it"
            raise ValueError(f"{path} is corrupted: tensor {name!r} at bytes [{begin}, {end}) {kind}")
        expected = end
    if 8 + n + expected != size:
        raise ValueError(f"{path} is corrupted or truncated: the tensors end at byte {8 + n + expected} of {size}")
    return entries


def read_tensor(path: Path, e: TensorEntry) -> torch.Tensor:
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
