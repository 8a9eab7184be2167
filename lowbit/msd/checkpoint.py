"""Quantized checkpoints: :func:`save_quantized` / :func:`load_quantized`, and the output folder they are built in.

The streaming converter of a Hugging Face folder (``lowbit quantize``),
:func:`lowbit.msd.convert.quantize_checkpoint`, writes the same layout through the same output folder rules.
The safetensors reading and writing is :mod:`lowbit.msd.safetensors_io`.

Layout of a quantized checkpoint directory (written under a temporary name and renamed into place, so a
failure never leaves a half-written directory):

* ``model.safetensors`` or shards ``<name>.safetensors`` with ``model.safetensors.index.json`` (the Hugging
  Face layout): every tensor of the model's ``state_dict``. Quantized layers hold their :class:`MSDLinear`
  buffers (``<layer>.qweight`` int8 + ``<layer>.weight_scale`` float32, or ``<layer>.weight_codes`` uint8 packed
  E2M1 + ``<layer>.weight_scale_exponents`` E8M0 for MXFP4) instead of ``<layer>.weight``.
* A **guard** per quantized layer: ``<layer>.weight`` stored as an empty int8 tensor (shape ``(0,)``, listed under
  ``guards`` in ``lowbit_quant.json``). Plain transformers, in a process that never registered lowbit's quantizer,
  would otherwise skip the unknown ``quantization_config`` with a warning and keep random linear weights; the
  guard's shape differs from the float weight's, so it stops with "size mismatch ... ignore_mismatched_sizes"
  instead of loading a silently wrong model. lowbit's loaders drop the guards.
* ``lowbit_quant.json``: format name and version, each quantized layer's :class:`MSDConfig`, shape and bias flag,
  tied (shared) tensors, and the SHA-256 of every tensor file (checked on load: a corrupted or truncated file is
  an error, never a silently different model).
* For ``lowbit quantize``: the other regular files of the source directory (``config.json``, tokenizer files)
  copied; symbolic links among them are neither read nor copied (listed in
  :attr:`lowbit.msd.convert.QuantizeSummary.skipped`).

Tensors are stored bit-exactly (``safetensors``), so ``load_quantized(save_quantized(model))`` reproduces every
buffer and parameter exactly (tested). The streaming writer writes one tensor at a time, so peak memory stays
near the largest tensor, not the model size.

Safety rules (crafted inputs must not read or write outside the given folders, and nothing is lost):

* A file name taken from an index or from ``lowbit_quant.json`` must be a plain ``*.safetensors`` name inside the
  folder (no separator, no ``..``, not absolute). Symbolic links are followed only for tensor files (shards) and
  the index, and only to regular files (the Hugging Face cache links snapshots to blobs).
* Headers are validated by the ``safetensors`` library (``safe_open``: offsets in order, contiguous, covering the
  file) and again by :func:`lowbit.msd.safetensors_io.parse_header`, before anything is written.
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
import os
import re
import secrets
import shutil
import socket
import stat
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lowbit.msd.config import MSDConfig
from lowbit.msd.linear import MSDLinear
from lowbit.msd.quantize_model import _set_submodule
from lowbit.msd.safetensors_io import (
    TensorSpec,
    is_plain_file,
    open_safetensors,
    read_json,
    sha256_file,
    tensor_file,
    write_json,
    write_safetensors,
)

__all__ = [
    "FORMAT",
    "INDEX_FILE",
    "METADATA_FILE",
    "SINGLE_FILE",
    "VERSION",
    "guard_specs",
    "load_quantized",
    "save_quantized",
]

FORMAT = "lowbit-msd"
VERSION = 1
METADATA_FILE = "lowbit_quant.json"
INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"


# ---------------------------------------------------------------------------------------------------------------
# output directories: built aside, moved in without replacing what was not checked
# ---------------------------------------------------------------------------------------------------------------


def resolve_out_dir(out_dir: str | os.PathLike[str]) -> Path:
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
    if any(True for _ in os.scandir(out_dir)) and not is_plain_file(out_dir / METADATA_FILE):
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
def atomic_checkpoint_dir(out_dir: Path, overwrite: bool) -> Iterator[Path]:
    """Yield a new temporary folder beside ``out_dir``; on success move it to ``out_dir``, on error delete it.

    Raises:
        FileExistsError: ``out_dir`` exists and ``overwrite`` is false, or it cannot be replaced (not an empty
            directory or lowbit checkpoint), or it was created or replaced by someone else during the run.
    """
    out_dir = resolve_out_dir(out_dir)
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


# ---------------------------------------------------------------------------------------------------------------
# guards: what makes plain transformers refuse the folder
# ---------------------------------------------------------------------------------------------------------------

GUARD_DTYPE = torch.int8


def guard_specs(layers: Iterable[str]) -> list[TensorSpec]:
    """One empty int8 tensor ``<layer>.weight`` per quantized layer (see the module docstring, "guard").

    >>> [(s.name, s.shape, s.nbytes) for s in guard_specs(["model.layers.0.mlp.up_proj"])]
    [('model.layers.0.mlp.up_proj.weight', (0,), 0)]
    """
    return [TensorSpec(f"{layer}.weight", GUARD_DTYPE, (0,)) for layer in layers]


def empty_guard(spec: TensorSpec) -> torch.Tensor:
    """The guard tensor's (empty) contents."""
    return torch.empty(spec.shape, dtype=spec.dtype)


def _drop_guards(state: dict[str, torch.Tensor], guards: Any, meta_path: Path) -> None:
    """Remove the listed guards from a loaded state; a listed guard that is not an empty int8 tensor is an error
    (a layer's weight must never be dropped by a crafted list)."""
    if not isinstance(guards, list) or not all(isinstance(g, str) for g in guards):
        raise ValueError(f"{meta_path}: 'guards' must be a list of tensor names")
    for name in guards:
        t = state.get(name)
        if t is None:
            raise ValueError(f"{meta_path} lists guard {name!r}, which the checkpoint lacks")
        if t.dtype != GUARD_DTYPE or tuple(t.shape) != (0,):
            raise ValueError(f"{meta_path} lists {name!r} as a guard but it is {t.dtype} {tuple(t.shape)}, not empty")
        del state[name]


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
    specs = [TensorSpec(n, t.dtype, tuple(t.shape)) for n, t in tensors.items()]
    guards = guard_specs(layers)
    clash = sorted({g.name for g in guards} & set(tensors))
    if clash:
        raise ValueError(f"quantized layers still hold float weights {clash[:4]}: not an MSDLinear state")
    with atomic_checkpoint_dir(Path(out_dir), overwrite) as tmp:
        sha = write_safetensors(
            tmp / SINGLE_FILE,
            specs + guards,
            lambda s: tensors[s.name] if s.name in tensors else empty_guard(s),
            {"format": "pt"},
        )
        meta = checkpoint_metadata(
            {n: _layer_entry(m) for n, m in layers.items()}, tied, {SINGLE_FILE: sha}, [g.name for g in guards]
        )
        write_json(tmp / METADATA_FILE, meta)
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
    meta = read_json(meta_path)
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
    paths = {fname: tensor_file(directory, fname, str(meta_path)) for fname in files}
    for fname, path in paths.items():
        sha = files[fname]
        if verify_checksums and sha256_file(path) != sha:
            raise ValueError(f"{path} is corrupted or truncated: its SHA-256 differs from the one in {METADATA_FILE}")
    for name, entry in layers.items():
        _install_layer(model, name, entry)
    state: dict[str, torch.Tensor] = {}
    for path in paths.values():
        with open_safetensors(path) as f:
            for key in f.keys():
                state[key] = f.get_tensor(key)
    _drop_guards(state, meta.get("guards", []), meta_path)
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


def checkpoint_metadata(
    layers: dict[str, Any], tied: dict[str, str], files: dict[str, str], guards: list[str]
) -> dict[str, Any]:
    """The ``lowbit_quant.json`` object (the layout is in the module docstring)."""
    return {"format": FORMAT, "version": VERSION, "layers": layers, "tied": tied, "files": files, "guards": guards}
