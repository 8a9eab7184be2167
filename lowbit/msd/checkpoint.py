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
* For ``lowbit quantize``: the other regular files of the source directory (``config.json``, tokenizer files)
  copied; symbolic links among them are neither read nor copied (listed in :attr:`QuantizeSummary.skipped`).

Tensors are stored bit-exactly (``safetensors``), so ``load_quantized(save_quantized(model))`` reproduces every
buffer and parameter exactly (tested). The streaming writer writes one tensor at a time, so peak memory stays
near the largest tensor, not the model size.

Safety rules (crafted inputs must not read or write outside the given folders, and nothing is lost):

* A file name taken from an index or from ``lowbit_quant.json`` must be a plain ``*.safetensors`` name inside the
  folder (no separator, no ``..``, not absolute). Symbolic links are followed only for tensor files (shards) and
  the index, and only to regular files (the Hugging Face cache links snapshots to blobs).
* Headers are validated by the ``safetensors`` library (``safe_open``: offsets in order, contiguous, covering the
  file) and again here, before anything is written.
* ``lowbit quantize`` refuses an output directory that is, contains or is inside the model directory.
* The output is built in ``.<OUT_DIR>.lowbit-tmp.<host>.<pid>.<random>`` beside ``OUT_DIR`` and moved into place
  with ``renameat2`` (``RENAME_NOREPLACE``, or ``RENAME_EXCHANGE`` for ``overwrite``): the final rename fails
  rather than replace a directory this run did not check. ``overwrite`` replaces only an empty directory or a
  lowbit checkpoint. Temporary folders of dead processes (same host) are removed on the next start.
* Folders are created with mode ``0o777`` and files with ``0o666``, both reduced by the user's umask.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import math
import os
import re
import secrets
import shutil
import socket
import stat
import struct
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
TENSOR_SUFFIX = ".safetensors"
DEFAULT_EXCLUDE = r"(^|\.)(embed_tokens|embeddings?|wte|wpe|word_embeddings|position_embeddings)\."
_HASH_CHUNK = 1 << 24
_ROW_CHUNK_ELEMENTS = 1 << 18  # rows quantized at a time in the streaming path (identical bytes: rows independent)
_FLOAT32_MAX = float(torch.finfo(torch.float32).max)
_WEIGHT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

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
# file names from indexes and metadata
# ---------------------------------------------------------------------------------------------------------------


def _plain_name(name: object, folder: Path, source: str) -> str:
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


def _tensor_file(folder: Path, name: object, source: str) -> Path:
    """The path of a tensor file (shard) ``name`` listed by ``source``: a plain ``*.safetensors`` name inside
    ``folder`` that is a regular file or a symbolic link to one.

    Raises:
        ValueError: not a plain name, not ``*.safetensors``, or not a regular file (a folder, a device, a link to
            one).
        FileNotFoundError: nothing of that name (or a dangling link).
    """
    fname = _plain_name(name, folder, source)
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


def _is_plain_file(path: Path) -> bool:
    """A regular file that is not a symbolic link (``lstat``)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def _copy_plain_file(src: Path, dst: Path) -> None:
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
            shutil.copyfileobj(fin, fout, _HASH_CHUNK)
            fout.flush()
            os.fsync(fout.fileno())
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))


# ---------------------------------------------------------------------------------------------------------------
# output directories: separate from the source, built aside, moved in without replacing what was not checked
# ---------------------------------------------------------------------------------------------------------------


def _check_separate(model_dir: Path, out_dir: Path) -> None:
    """Refuse an ``out_dir`` that is, contains or is inside ``model_dir`` (by real path and by device/inode, so
    symbolic links, ``..`` and bind mounts do not evade it)."""
    src, dst = Path(os.path.realpath(model_dir)), Path(os.path.realpath(_resolve_out_dir(out_dir)))
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


def _resolve_out_dir(out_dir: str | os.PathLike[str]) -> Path:
    """``out_dir`` with its parent resolved (links and ``..`` as the kernel follows them) and its last component
    kept, so a link at ``out_dir`` itself stays a link (and is refused, never followed, by ``overwrite``)."""
    out = Path(out_dir)
    if out.name in ("", ".."):  # "/" or "a/..": the directory it denotes
        out = Path(os.path.realpath(out))
    return Path(os.path.realpath(out.parent)) / out.name


def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _aside_name(out_dir: Path, kind: str) -> Path:
    """A new name beside ``out_dir`` that records its owner: ``.<name>.lowbit-<kind>.<host>.<pid>.<random>``."""
    return out_dir.parent / f".{out_dir.name}.lowbit-{kind}.{_host_tag()}.{os.getpid()}.{secrets.token_hex(4)}"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # another user's live process; a crafted pid: keep its folder
        return True
    return True


def _remove_tree(path: Path) -> None:
    """Delete a folder we created (never follows a link; a missing folder is fine)."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISDIR(os.lstat(path).st_mode):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)


def _clean_stale(out_dir: Path) -> None:
    """Remove the temporary folders that runs for ``out_dir`` on this host left behind when killed.

    A ``tmp`` folder whose owner process is dead is deleted. An ``old`` folder (the previous output, moved aside
    during an ``overwrite`` without ``renameat2``) is moved back if ``out_dir`` is missing, else deleted.
    """
    pattern = re.compile(rf"\.{re.escape(out_dir.name)}\.lowbit-(tmp|old)\.([0-9a-f]{{8}})\.(\d+)\.[0-9a-f]+")
    try:
        names = os.listdir(out_dir.parent)
    except FileNotFoundError:
        return
    host = _host_tag()
    for name in names:
        m = pattern.fullmatch(name)
        if m is None or m.group(2) != host or _pid_alive(int(m.group(3))):
            continue
        path = out_dir.parent / name
        if m.group(1) == "old" and not os.path.lexists(out_dir):
            with contextlib.suppress(OSError):
                if _rename_noreplace(path, out_dir):
                    continue
        _remove_tree(path)


_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _renameat2(src: Path, dst: Path, flags: int) -> bool:
    """Linux ``renameat2(src, dst, flags)``; False where the C library or the file system lacks it.

    Raises:
        OSError: the rename failed for another reason (``EEXIST`` for ``RENAME_NOREPLACE`` onto an existing
            name, ``ENOENT`` for ``RENAME_EXCHANGE`` with a missing name).
    """
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError, TypeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    if fn(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(src), None, str(dst))


def _rename_noreplace(src: Path, dst: Path) -> bool:
    """Rename ``src`` to ``dst`` unless ``dst`` exists (then False). Atomic with ``renameat2``; elsewhere a check
    then ``os.rename``, which still refuses a non-empty directory."""
    try:
        if _renameat2(src, dst, _RENAME_NOREPLACE):
            return True
    except FileExistsError:
        return False
    if os.path.lexists(dst):
        return False
    try:
        os.rename(src, dst)
    except OSError as exc:
        if exc.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
            return False
        raise
    return True


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of ``path`` itself (not following a link), or None when nothing is there."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def _check_replaceable(out_dir: Path) -> None:
    """``overwrite`` replaces only a real directory that is empty or a lowbit checkpoint."""
    st = os.lstat(out_dir)
    if not stat.S_ISDIR(st.st_mode):
        raise FileExistsError(f"output {out_dir} exists and is not a directory (or is a link); not replacing it")
    if any(True for _ in os.scandir(out_dir)) and not _is_plain_file(out_dir / METADATA_FILE):
        raise FileExistsError(
            f"output directory {out_dir} exists and is not a lowbit checkpoint (no {METADATA_FILE}); "
            "overwrite replaces only an empty directory or a previous lowbit output"
        )


def _commit(tmp: Path, out_dir: Path, before: tuple[int, int] | None) -> None:
    """Move the finished ``tmp`` to ``out_dir``; fail instead of replacing anything but what ``before`` identified
    (None: ``out_dir`` was absent at the start)."""
    changed = FileExistsError(
        f"output directory {out_dir} was created or replaced by another process during this run; it was left "
        "as it is and this run's output was discarded"
    )
    if before is None or _identity(out_dir) is None:
        if not _rename_noreplace(tmp, out_dir):
            raise changed
        return
    if _identity(out_dir) != before:
        raise changed
    try:
        exchanged = _renameat2(tmp, out_dir, _RENAME_EXCHANGE)
    except FileNotFoundError:  # removed meanwhile
        if not _rename_noreplace(tmp, out_dir):
            raise changed from None
        return
    if exchanged:  # tmp now holds the previous output
        if _identity(tmp) != before:
            _renameat2(tmp, out_dir, _RENAME_EXCHANGE)  # put the other process's directory back
            raise changed
        _remove_tree(tmp)
        return
    aside = _aside_name(out_dir, "old")  # no renameat2: move the checked directory aside, then ours in
    os.rename(out_dir, aside)
    if _identity(aside) != before or not _rename_noreplace(tmp, out_dir):
        _put_back(aside, out_dir, changed)
    _remove_tree(aside)


def _put_back(aside: Path, out_dir: Path, error: FileExistsError) -> None:
    """Move ``aside`` back to ``out_dir`` and raise ``error``; if ``out_dir`` was taken meanwhile, keep ``aside``
    under a visible name that no cleanup removes, and say so."""
    if _rename_noreplace(aside, out_dir):
        raise error
    kept = out_dir.parent / f"{out_dir.name}.previous-{secrets.token_hex(4)}"
    os.rename(aside, kept)
    raise FileExistsError(f"{error}; the directory that was at {out_dir} is kept as {kept}")


@contextmanager
def _atomic_dir(out_dir: Path, overwrite: bool) -> Iterator[Path]:
    """Yield a new temporary folder beside ``out_dir``; on success move it to ``out_dir``, on error delete it.

    Raises:
        FileExistsError: ``out_dir`` exists and ``overwrite`` is false, or it cannot be replaced (not an empty
            directory or lowbit checkpoint), or it was created or replaced by someone else during the run.
    """
    out_dir = _resolve_out_dir(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale(out_dir)
    before = _identity(out_dir)
    if before is not None:
        if not overwrite:
            raise FileExistsError(f"output directory {out_dir} exists; pass overwrite=True (--overwrite) to replace it")
        _check_replaceable(out_dir)
    while True:
        tmp = _aside_name(out_dir, "tmp")
        try:
            os.mkdir(tmp, 0o777)  # the umask applies (tempfile.mkdtemp would give 0o700)
            break
        except FileExistsError:
            continue
    try:
        yield tmp
        _commit(tmp, out_dir, before)
    except BaseException:
        _remove_tree(tmp)
        raise


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
        ValueError: a corrupted or truncated file (SHA-256 or header check), an unknown format version, a tensor
            file name that is not a plain ``*.safetensors`` name inside ``directory`` (or not a regular file), or
            a checkpoint that does not match ``model`` (a layer missing, not an ``nn.Linear``, or of another
            shape).
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
    files, layers, tied = meta.get("files"), meta.get("layers"), meta.get("tied", {})
    for field, value in (("files", files), ("layers", layers), ("tied", tied)):
        if not isinstance(value, dict):
            raise ValueError(f"{meta_path}: {field!r} must be a JSON object")
    if not files:
        raise ValueError(f"{meta_path} lists no tensor files")
    paths = {fname: _tensor_file(directory, fname, str(meta_path)) for fname in files}
    for fname, path in paths.items():
        sha = files[fname]
        if verify_checksums and _sha256(path) != sha:
            raise ValueError(f"{path} is corrupted or truncated: its SHA-256 differs from the one in {METADATA_FILE}")
    for name, entry in layers.items():
        _install_layer(model, name, entry)
    state: dict[str, torch.Tensor] = {}
    for path in paths.values():
        with _open_safetensors(path) as f:
            for key in f.keys():
                state[key] = f.get_tensor(key)
    for name, source in tied.items():
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
        data = _read_json(index)
        weight_map = data.get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ValueError(f"{index} has no 'weight_map'")
        for key, fname in weight_map.items():
            _plain_name(fname, model_dir, f"{index} (tensor {key!r})")
        files = sorted(set(weight_map.values()))
        missing = []
        for fname in files:
            try:
                _tensor_file(model_dir, fname, str(index))
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
        _tensor_file(model_dir, found[0], str(model_dir))
        return found, None
    raise FileNotFoundError(
        f"{model_dir} has no {SINGLE_FILE} or {INDEX_FILE}"
        + (f" (several {TENSOR_SUFFIX} files {found} but no index)" if found else "")
    )


def _check_config(model_dir: Path, shapes: dict[str, tuple[int, ...]]) -> None:
    """Compare ``config.json`` (if present, and not a symbolic link) with the tensors: hidden size, vocabulary,
    number of layers."""
    path = model_dir / "config.json"
    if not _is_plain_file(path):
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
    headers = {fname: _read_header(model_dir / fname) for fname in files}
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
    with _atomic_dir(out_dir, overwrite) as tmp:
        for fname in files:
            plan: list[tuple[_Spec, str, str]] = []  # (output spec, source key, role)
            for key, e in headers[fname].items():
                if selected(key, e.shape):
                    n, k = e.shape
                    for buf, (bshape, bdtype) in quantized_shapes(n, k, config).items():
                        plan.append((_Spec(f"{key[: -len('.weight')]}.{buf}", bdtype, bshape), key, buf))
                elif key.endswith(".bias") and layers.get(key[: -len(".bias")], {}).get("bias"):
                    plan.append((_Spec(key, torch.float32, e.shape), key, "bias"))
                else:
                    plan.append((_Spec(key, e.dtype, e.shape), key, "copy"))
            routes = {p[0].name: p[1:] for p in plan}
            producer = _Producer(model_dir / fname, headers[fname], config, counts, progress, routes)
            specs = [p[0] for p in plan]
            file_sha[fname] = _write_safetensors(tmp / fname, specs, producer, {"format": "pt"})
            counts["out"] += (tmp / fname).stat().st_size
            new_map.update({s.name: fname for s in specs})
        if weight_map is not None:
            _write_json(tmp / INDEX_FILE, {"metadata": {"total_size": counts["out"]}, "weight_map": new_map})
        for extra in sorted(os.scandir(model_dir), key=lambda d: d.name):
            if extra.name.endswith(TENSOR_SUFFIX) or extra.name in (INDEX_FILE, METADATA_FILE):
                continue
            if extra.is_symlink():
                skipped.append(extra.name)
            elif extra.is_file(follow_symlinks=False):
                _copy_plain_file(Path(extra.path), tmp / extra.name)
        _write_json(tmp / METADATA_FILE, _metadata(layers, {}, file_sha))
    return QuantizeSummary(
        out_dir,
        counts["quantized"],
        counts["copied"],
        counts["in"],
        counts["out"],
        counts["largest"],
        tuple(skipped),
    )


def _check_weight_entry(path: Path, e: _Entry, config: MSDConfig) -> None:
    """A weight selected for quantization must be floating-point, non-empty and fit the config's grouping."""
    if e.dtype not in _WEIGHT_DTYPES:
        raise ValueError(
            f"tensor {e.name!r} in {path} is a 2-D .weight of dtype {_ST_DTYPES[e.dtype]}: only floating-point "
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
        entries: dict[str, _Entry],
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


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"duplicate names {dup[:4]}")
    return dict(pairs)


def _read_header(path: Path) -> dict[str, _Entry]:
    """Validate a safetensors file with the ``safetensors`` library, then read its offsets without mapping the
    data (plain reads keep the resident set low).

    ``safe_open`` rejects a truncated file, invalid JSON, negative or non-integer shapes, offsets that do not
    match shape × itemsize, and offsets that overlap, leave gaps or do not cover the data exactly. The same rules
    are checked again by :func:`_parse_header`, and the names, dtypes and shapes must agree with the library's.
    """
    from safetensors import safe_open

    if not path.is_file():
        raise FileNotFoundError(f"safetensors file {path} is missing")
    try:
        with safe_open(str(path), framework="pt") as f:
            library = {k: (f.get_slice(k).get_dtype(), tuple(f.get_slice(k).get_shape())) for k in f.keys()}
    except Exception as exc:  # SafetensorError: header length, JSON, offsets, size
        raise ValueError(f"{path} is not a valid safetensors file (truncated or corrupted): {exc}") from exc
    entries = _parse_header(path)
    ours = {name: (_ST_DTYPES[e.dtype], e.shape) for name, e in entries.items()}
    if ours != library:
        raise ValueError(f"{path} is corrupted: its header reads differently here and in the safetensors library")
    return entries


def _parse_header(path: Path) -> dict[str, _Entry]:
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
    entries: dict[str, _Entry] = {}
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
        entries[name] = _Entry(name, dtype, shape, 8 + n + begin, nbytes)
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
