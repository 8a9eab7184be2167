"""4-bit codes two per byte: the one nibble layout of INT4, MXFP4 (E2M1) and NVFP4.

Along the last axis, element ``2i`` goes to the low nibble and element ``2i+1`` to the high nibble of byte ``i``:

    byte_i = (c[2i] & 0xF) | (c[2i+1] & 0xF) << 4

The order matches ``torch.float4_e2m1fn_x2`` and the OCP/NVIDIA FP4 storage convention. INT4 values in
``[-8, 7]`` are stored as two's-complement nibbles (``-1`` -> ``0xF``); E2M1 codes in ``[0, 15]`` as they are
(sign in bit 3). :func:`unpack_nibbles` returns the codes (uint8), or with ``signed=True`` the sign-extended INT4
values (int8).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["pack_nibbles", "unpack_nibbles"]

_SIGNED = (torch.int8, torch.int16, torch.int32, torch.int64)


def _tensor(x: Any, name: str) -> torch.Tensor:
    """``x`` as a torch tensor on its own device (numpy arrays are converted); TypeError for anything else."""
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}")


def pack_nibbles(codes: Any) -> torch.Tensor:
    """Pack 4-bit values two per byte along the last axis (uint8 ``[..., 2n]`` -> uint8 ``[..., n]``).

    ``codes``: uint8 codes in ``[0, 15]`` (E2M1) or signed integers in ``[-8, 7]`` (INT4, two's complement).
    Layout in the module docstring.

    >>> pack_nibbles(torch.tensor([1, -1], dtype=torch.int8)).tolist()
    [241]
    >>> pack_nibbles(torch.tensor([0x1, 0x7, 0xA, 0x0], dtype=torch.uint8)).tolist()
    [113, 10]
    """
    t = _tensor(codes, "codes")
    if t.dtype == torch.uint8:
        lo, hi, kind = 0, 15, "4-bit codes"
    elif t.dtype in _SIGNED:
        lo, hi, kind = -8, 7, "INT4"
    else:
        raise TypeError(f"codes must be uint8 codes or a signed integer tensor (int8), got {t.dtype}")
    if t.dim() == 0 or t.shape[-1] % 2:
        raise ValueError(f"codes need an even-length last axis to pack two per byte, got shape {tuple(t.shape)}")
    if t.numel() and (int(t.min()) < lo or int(t.max()) > hi):
        raise ValueError(f"codes must lie in [{lo}, {hi}] for {kind}")
    n = t.to(torch.uint8) if t.dtype == torch.uint8 else (t.to(torch.int16) & 0xF).to(torch.uint8)
    return n[..., 0::2] | n[..., 1::2] << 4


def unpack_nibbles(packed: Any, *, signed: bool = False) -> torch.Tensor:
    """Inverse of :func:`pack_nibbles`: uint8 ``[..., n]`` -> ``[..., 2n]``, low nibble first.

    ``signed=False``: uint8 codes in ``[0, 15]``; ``signed=True``: int8 INT4 values in ``[-8, 7]`` (nibbles >= 8
    are sign-extended, ``v - 16``).

    >>> unpack_nibbles(torch.tensor([241], dtype=torch.uint8)).tolist()
    [1, 15]
    >>> unpack_nibbles(torch.tensor([241], dtype=torch.uint8), signed=True).tolist()
    [1, -1]
    """
    t = _tensor(packed, "packed")
    if t.dtype != torch.uint8:
        raise TypeError(f"packed must be a uint8 tensor, got {t.dtype}")
    if t.dim() == 0:
        raise ValueError("packed must have at least one dimension")
    nib = torch.stack((t & 0xF, t >> 4), dim=-1).reshape(*t.shape[:-1], 2 * t.shape[-1])
    if not signed:
        return nib
    nib = nib.to(torch.int16)
    return torch.where(nib >= 8, nib - 16, nib).to(torch.int8)
