"""lowbit's compiled operator: the MSD INT8 decode step (``csrc/msd_decode.cpp``) as one torch call.

At decode (``M <= 16`` token rows) an INT8 MSD linear is bound by streaming the weight once; the dozen small torch
calls around the GEMM (row maximum, the components, the recombination) cost ~0.1-0.2 ms of Python and dispatch per
layer, 10-30 % of a 4096 x 4096 layer. ``lowbit_msd::decode`` and ``decode_gemv`` do the same float32 operations in
C++ and return the same bits (``tests/msd/test_native.py``; the rule is in the source's header comment). For a few
activation rows (``comps·M <= kernels.GEMV_MAX_ROWS``) layers call ``decode_gemv``, which multiplies with lowbit's
own INT8 GEMV over the stored row-major weight, reading each weight row once for all components (AVX-512 VNNI, AVX2
or portable C++, chosen at run time; all give the same int32 sums); above that ``decode``, on fbgemm's GEMM.

It is compiled on first use with torch's own extension builder (``torch.utils.cpp_extension.load``: a C++
compiler and ``ninja``, a dependency of lowbit), once per source, torch and Python version, into
``$LOWBIT_CACHE_DIR/native`` (default ``$XDG_CACHE_HOME/lowbit/native``, else ``~/.cache/lowbit/native``);
later processes load the built library in milliseconds. :func:`decode_op_status` says whether it loaded and why
not. ``MSDConfig(decode_op="auto")`` (the default) uses it when it loads and passes its self-check, and otherwise
warns once and runs the torch-call path, which gives the same bits, only slower; ``decode_op="fused"`` raises
instead, ``decode_op="torch"`` never builds it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

SOURCE = Path(__file__).resolve().parent / "csrc" / "msd_decode.cpp"
# -ffp-contract=off: no fused multiply-add (GCC contracts a*b+c by default in GNU mode); no -ffast-math, no
# -march: every float32 operation stays one IEEE operation, as in the torch path.
CFLAGS = ("-O3", "-ffp-contract=off", "-fno-fast-math", "-fopenmp")
# -fopenmp: at::parallel_for is inlined from ATen's headers and runs on OpenMP only when the caller is compiled with
# it; the library links libgomp.so.1, which resolves to the copy torch has already loaded (one thread pool).
LDFLAGS = ("-fopenmp",)
_LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class NativeStatus:
    """Whether the compiled decode operator loaded in this process.

    Attributes:
        available: it loaded (the self-check of :func:`lowbit.msd.kernels.fused_decode_op` is separate).
        reason: where it was built, or why it could not be built or loaded (the compiler's last lines).
        build_dir: its build directory (None when no cache directory could be chosen).
    """

    available: bool
    reason: str
    build_dir: str | None


def cache_root() -> Path:
    """``$LOWBIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/lowbit``, else ``~/.cache/lowbit``.

    >>> import os
    >>> os.environ.get("LOWBIT_CACHE_DIR") is not None or cache_root().name == "lowbit"
    True
    """
    if os.environ.get("LOWBIT_CACHE_DIR"):
        return Path(os.environ["LOWBIT_CACHE_DIR"])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "lowbit"


def extension_name() -> str:
    """``lowbit_msd_decode_<hash>``: the hash covers the source, the flags and the torch and Python versions, so a
    changed source or an upgraded torch builds a fresh library instead of loading a stale one."""
    digest = hashlib.sha256()
    digest.update(SOURCE.read_bytes())
    digest.update(" ".join(CFLAGS + LDFLAGS).encode())
    digest.update(f"{torch.__version__}|{sys.version_info[:2]}|{torch.compiled_with_cxx11_abi()}".encode())
    return f"lowbit_msd_decode_{digest.hexdigest()[:16]}"


@contextlib.contextmanager
def _ninja_on_path() -> Iterator[None]:
    """Put the ``ninja`` wheel's binary on PATH while building, when no ``ninja`` is on PATH (a venv's ``bin`` is
    not on PATH when its python is run by path); PATH is restored afterwards."""
    if shutil.which("ninja") is not None:
        yield
        return
    try:
        import ninja  # the PyPI wheel (a lowbit dependency)
    except ImportError:
        yield
        return
    old = os.environ.get("PATH", "")
    os.environ["PATH"] = f"{ninja.BIN_DIR}{os.pathsep}{old}"
    try:
        yield
    finally:
        os.environ["PATH"] = old


@functools.cache
def decode_op_status() -> NativeStatus:
    """Build (first time) and load the operator; never raises. Cached for the process."""
    if not SOURCE.is_file():
        return NativeStatus(False, f"the source {SOURCE} is missing from this installation", None)
    name = extension_name()
    try:
        build_dir = cache_root() / "native" / name
        build_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        return NativeStatus(False, f"cannot create the build directory: {err}", None)
    if hasattr(torch.ops, "lowbit_msd") and hasattr(torch.ops.lowbit_msd, "decode"):
        return NativeStatus(True, "already loaded in this process", str(build_dir))
    built = any(build_dir.glob(f"{name}*.so"))
    if not built:
        _LOG.warning(
            "lowbit: compiling the fused MSD decode operator into %s (once per torch version, ~40 s on 2 cores)",
            build_dir,
        )
    try:
        from torch.utils import cpp_extension

        with _ninja_on_path():
            cpp_extension.load(
                name=name,
                sources=[str(SOURCE)],
                extra_cflags=list(CFLAGS),
                extra_ldflags=list(LDFLAGS),
                build_directory=str(build_dir),
                is_python_module=False,
                verbose=False,
            )
    except Exception as err:  # compiler or ninja missing, build or load error: reported, never raised here
        text = " ".join(str(err).split())
        return NativeStatus(False, f"building it failed: {type(err).__name__}: {text[-600:]}", str(build_dir))
    return NativeStatus(True, f"built in {build_dir}" if not built else f"loaded from {build_dir}", str(build_dir))


def _bound(name: str) -> Callable[..., Any] | None:
    """The bound ``torch.ops.lowbit_msd.<name>`` operator (the C++ callable, skipping the Python overload
    wrapper's ~10 µs), or None when :func:`decode_op_status` says it is unavailable."""
    if not decode_op_status().available:
        return None
    overload = getattr(torch.ops.lowbit_msd, name).default
    return getattr(overload, "_op", overload)


def decode_op() -> Callable[..., Any] | None:
    """``lowbit_msd::decode(x, packed_fbgemm_weight, comps, qmax, zero_point, bias)``: the whole decode step on
    fbgemm's GEMM (the rule is in the source's header comment), or None where unavailable."""
    return _bound("decode")


def decode_gemv_op() -> Callable[..., Any] | None:
    """``lowbit_msd::decode_gemv(x, rows, row_sums, scale, comps, qmax, zero_point, bias, isa)``: the same step,
    the same bits, on lowbit's own GEMV over the stored INT8 weight ``rows`` [N, K], or None where unavailable."""
    return _bound("decode_gemv")


def gemv_int8_op() -> Callable[..., Any] | None:
    """``lowbit_msd::gemv_int8(a, rows, row_sums, scale, zero_point, isa)``: ``float32(float32(Σ (a - zp)·q) ·
    scale)`` per activation row of ``a`` (uint8 ``[R, K]``) and weight row of ``rows`` (int8 ``[N, K]``), the
    decode operator's GEMV alone (for tests and benchmarks), or None where unavailable."""
    return _bound("gemv_int8")


GEMV_ISAS = {0: "portable", 1: "avx2", 2: "avx512_vnni"}


def gemv_isas() -> tuple[int, ...]:
    """The GEMV instruction sets this CPU runs (codes of :data:`GEMV_ISAS`, lowest first; empty where the operator
    is unavailable). Every one gives the same integer sums."""
    if not decode_op_status().available:
        return ()
    return tuple(range(int(torch.ops.lowbit_msd.gemv_max_isa()) + 1))
