"""OCP Microscaling (MX v1.0) block formats: MXFP8 (e4m3, e5m2), MXFP6 (e2m3, e3m2), MXFP4 (e2m1).

A block of ``block`` consecutive elements along ``axis`` (32 in the spec; any even size here, e.g. 16 for reuse)
shares one E8M0 scale ``X = 2^shared_exp``; each element stores ``P_i = round_to_element(x_i / X)``, and the
block decodes to ``X · P_i`` (OCP MX v1.0 §6; ``docs/methods/msd.md`` §4, on the Multi-Scale Dequant paper,
arXiv:2605.13915). Steps, each one function below:

1. ``amax`` of each block (:func:`_block_amax`);
2. the shared exponent by the scale rule, ``"ocp"`` or ``"ceil"`` (:mod:`lowbit.formats.e8m0`);
3. elements ``x / X`` rounded to nearest-even and saturated to ``±max_normal`` (:func:`_quantize_elements`);
4. codes packed two per byte for e2m1 (:func:`lowbit.formats.nibbles.pack_nibbles`).

Special blocks (a documented choice; the spec leaves conversion of non-finite inputs to the implementation):

* **NaN or ±Inf anywhere in a block** -> scale code ``0xFF`` (NaN) and element codes 0 for that block; the block
  dequantizes to NaN in every position (spec §6.3: a NaN scale makes the whole block NaN). Other blocks are
  unaffected. Inf is not kept: no element type but e5m2 could hold it, and a scale of ``2^128`` does not exist.
* **All-zero block** -> shared exponent -127 (code 0, ``X = 2^-127``), codes 0 (+0; -0.0 inputs keep the sign
  bit), dequantizes to exact zeros.
* **Scale clamping**: the exponent is clamped to [-127, 127]. At -127, tiny blocks lose elements below
  ``2^-127 · min_subnormal / 2`` to zero; at 127 (only float64 inputs above ~2^135) elements saturate.
* Subnormal float32 inputs are used as they are (no flush to zero).

``pad=True`` pads the blocked axis with zeros up to a multiple of ``block``; the codes and scales then cover the
padded length and :meth:`MXTensor.dequantize` / :meth:`MXTensor.element_values` crop back to ``shape``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from lowbit.formats.constants import SCALE_RULES
from lowbit.formats.e8m0 import decode_e8m0, encode_e8m0, shared_exponent
from lowbit.formats.elements import ElementFormat, decode_element, element_format, encode_checked
from lowbit.formats.inputs import as_working_float, check_name, pow2, split_blocks
from lowbit.formats.nibbles import pack_nibbles, unpack_nibbles

__all__ = ["MX_FORMATS", "MXTensor", "quantize_mx"]

# The OCP names of the MX formats and their element type.
MX_FORMATS: dict[str, str] = {
    "mxfp8_e4m3": "e4m3",
    "mxfp8_e5m2": "e5m2",
    "mxfp6_e2m3": "e2m3",
    "mxfp6_e3m2": "e3m2",
    "mxfp4_e2m1": "e2m1",
}


# ----------------------------------------------------------------------------------------------- MXTensor


@dataclass(frozen=True)
class MXTensor:
    """An MX-quantized tensor.

    * ``codes``: uint8 element codes in the layout of the input, the blocked ``axis`` padded to a multiple of
      ``block``; for e2m1 two codes per byte along ``axis`` (that axis is halved, low nibble first).
    * ``scale_exponents``: E8M0 codes (uint8, bias 127, 0xFF = NaN), shape = the input's shape with ``axis``
      replaced by the number of blocks ``ceil(shape[axis] / block)``.
    * ``shape``: the original shape; ``axis`` is stored non-negative; ``scale_rule`` as given.
    """

    codes: torch.Tensor
    scale_exponents: torch.Tensor
    elem: str
    block: int
    axis: int
    shape: tuple[int, ...]
    scale_rule: str

    @property
    def format(self) -> ElementFormat:
        """The element format."""
        return element_format(self.elem)

    @property
    def bits_per_element(self) -> float:
        """Storage cost including the shared scale: ``bits + 8 / block`` (4.25 for MXFP4 with block 32)."""
        return self.format.bits + 8 / self.block

    def unpacked_codes(self) -> torch.Tensor:
        """Element codes one per byte (uint8), padded shape (e2m1 unpacked)."""
        if self.format.bits != 4:
            return self.codes
        moved = self.codes.movedim(self.axis, -1)
        return unpack_nibbles(moved).movedim(-1, self.axis)

    def _crop(self, t: torch.Tensor) -> torch.Tensor:
        return t.narrow(self.axis, 0, self.shape[self.axis])

    def element_values(self) -> torch.Tensor:
        """Element values ``P_i`` before scaling (float32, shape ``shape``); 0 in NaN blocks (their codes are 0)."""
        return self._crop(decode_element(self.unpacked_codes(), self.format))

    def scales(self) -> torch.Tensor:
        """Block scales ``X = 2^(e - 127)`` (float32, NaN for 0xFF), shape of ``scale_exponents``.

        To broadcast against the data, view the data as ``[..., n_blocks, block, ...]`` along ``axis`` and
        ``scales().unsqueeze(axis + 1)``; or use ``scales().repeat_interleave(block, axis)``.
        """
        return decode_e8m0(self.scale_exponents)

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``X · P_i`` in the original shape, computed exactly in float64 and rounded once to ``dtype``.

        Exact in float32 and bfloat16 for every MX element (products of a <=4-bit significand and a power of
        two within range); NaN blocks give NaN everywhere.
        """
        values = decode_element(self.unpacked_codes(), self.format).to(torch.float64)
        scale = decode_e8m0(self.scale_exponents).to(torch.float64).repeat_interleave(self.block, dim=self.axis)
        return self._crop(values * scale).to(dtype)


# ------------------------------------------------------------------------------------------ the quantizer


def _block_amax(xb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Largest magnitude of each block ``[..., n_blocks, block]`` and whether the block is all finite."""
    ok = torch.isfinite(xb)
    amax = xb.abs().masked_fill_(~ok, 0.0).amax(dim=-1)
    return amax.to(torch.float64), ok.all(dim=-1)


def _quantize_elements(xb: torch.Tensor, shared_exp: torch.Tensor, f: ElementFormat) -> torch.Tensor:
    """Codes of ``x / 2^shared_exp``: power-of-two division, RNE, saturation to ``±max_normal`` (spec §6.3).

    The division is exact in the working type (float32 for inputs of 32 bits or fewer) except where a quotient
    falls below the float32 normal range; such a quotient is below 2^-126, far under half the smallest element
    subnormal (>= 2^-17), so it rounds to a signed zero either way.
    """
    scale = pow2(shared_exp).to(xb.dtype)  # exact: 2^-127 is a float32 subnormal
    return encode_checked(xb / scale.unsqueeze(-1), f, saturate=True)


def quantize_mx(
    x: Any,
    elem: str,
    block: int = 32,
    axis: int = -1,
    scale_rule: str = "ocp",
    pad: bool = False,
) -> MXTensor:
    """Quantize ``x`` to an MX format with element ``elem`` in blocks of ``block`` along ``axis``.

    ``scale_rule="ocp"`` is the OCP spec (``X = 2^(floor(log2 amax) - emax_elem)``, elements saturate);
    ``"ceil"`` is the non-saturating ``X = 2^ceil(log2(amax / max_normal))`` that MSD needs
    (``docs/methods/msd.md`` §5).
    See the module docstring for NaN/Inf, all-zero blocks and clamping.

    >>> mx = quantize_mx(torch.tensor([1.0, 7.0, -0.3, 0.0]), "e2m1", block=4)
    >>> mx.scale_exponents.tolist(), mx.dequantize().tolist()
    ([127], [1.0, 6.0, -0.5, 0.0])
    >>> quantize_mx(torch.tensor([1.0, 7.0, -0.3, 0.0]), "e2m1", block=4, scale_rule="ceil").dequantize().tolist()
    [1.0, 8.0, -0.0, 0.0]
    """
    f = element_format(elem)
    check_name(scale_rule, SCALE_RULES, "scale_rule")
    if isinstance(block, bool) or not isinstance(block, int) or block < 1:
        raise ValueError(f"block must be a positive int, got {block!r}")
    if f.bits == 4 and block % 2:
        raise ValueError(f"block must be even for {f.name} (two codes per byte), got {block}")
    xw = as_working_float(x, "x")
    xm, xb, axis = split_blocks(xw, axis, block, pad, f"block={block}")

    amax, finite = _block_amax(xb)
    exp = shared_exponent(amax, f, scale_rule)
    bad = ~finite.unsqueeze(-1)
    codes = _quantize_elements(xb.masked_fill(bad, 0.0), exp, f).masked_fill_(bad, 0).reshape(xm.shape)
    if f.bits == 4:
        codes = pack_nibbles(codes)
    scale_codes = encode_e8m0(exp, nan=~finite)
    return MXTensor(
        codes=codes.movedim(-1, axis).contiguous(),
        scale_exponents=scale_codes.movedim(-1, axis).contiguous(),
        elem=f.name,
        block=block,
        axis=axis,
        shape=tuple(xw.shape),
        scale_rule=scale_rule,
    )
