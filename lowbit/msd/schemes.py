"""The weight schemes of :class:`lowbit.msd.MSDLinear`: one handler per ``(config.weight, config.method)``.

:data:`SCHEMES` maps a config to its handler class, as torchao maps a quantization config to the function that
handles it; :func:`scheme_for` looks it up. A handler knows one stored weight format and one way to multiply it:

* :class:`Int8Scheme` (``weight="int8"``, ``method="msd"``): buffers ``qweight`` int8 ``[N, K]`` and
  ``weight_scale`` float32 ``[N, G]`` (``G = 1`` per output channel, or ``K / group_size``), ``W = q ⊙ s_w``; the
  activation is split into ``p`` INT8 components per token row and multiplied in prepacked INT8 GEMMs
  (:func:`lowbit.msd.kernels.msd_int8_linear`), one per K-group.
* :class:`MXFP4Scheme` (``weight="mxfp4"``, ``method="msd"``): buffers ``weight_codes`` uint8 ``[N, Kp/2]`` (two
  E2M1 codes per byte, K padded to ``Kp``, a multiple of 32) and ``weight_scale_exponents`` uint8 ``[N, Kp/32]``
  (E8M0); the activation is split into MXFP4 components and the block products are emulated exactly on INT8
  GEMMs (:mod:`lowbit.msd.kernels_mx`).
* :class:`DequantScheme` (``method="dequant"``, either weight): the same buffers as the weight's MSD scheme,
  dequantized to the activation's dtype on every call, then ``F.linear`` (the usual weight-only baseline).

A handler instance belongs to one layer: it holds that layer's verified INT8 kernel profiles and its prepacked
weights. Buffers stay on the layer (``state_dict`` and checkpoints hold them under the names above).
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Any, ClassVar

import torch
from torch import nn

from lowbit.msd.config import MSDConfig
from lowbit.msd.isa import Int8Profile
from lowbit.msd.kernels import (
    DECODE_MAX_ROWS,
    FusedDecode,
    Int8Packed,
    choose_kernel,
    fused_decode_op,
    msd_int8_linear,
    pack_int8_weight,
    resolve_int8_kernels,
)
from lowbit.msd.kernels_mx import MX_BLOCK, MX_MAX_K, msd_mxfp4_linear, pack_mxfp4_weight

__all__ = [
    "SCHEMES",
    "BufferShapes",
    "DequantScheme",
    "Int8Scheme",
    "MSDScheme",
    "MXFP4Scheme",
    "Scheme",
    "scheme_for",
]

BufferShapes = dict[str, tuple[tuple[int, ...], torch.dtype]]


class Scheme:
    """Base of the handlers: storage (shapes, quantize, dequantize) and compute (prepack, forward, reference).

    Storage methods are classmethods of the config (they serve the streaming converter too); compute methods take
    the layer whose buffers they read.
    """

    method: ClassVar[str]
    fills: ClassVar[dict[str, float]] = {}  # initial value of each buffer of an empty layer

    def __init__(self, config: MSDConfig) -> None:
        self.config = config

    # --------------------------------------------------------------------------------------------- storage

    @classmethod
    def check_shape(cls, n: int, k: int, config: MSDConfig) -> None:
        """Raise ValueError if an ``[n, k]`` layer cannot be built with ``config``."""

    @classmethod
    def shapes(cls, n: int, k: int, config: MSDConfig) -> BufferShapes:
        """Shape and dtype of each quantized buffer for an ``[n, k]`` weight."""
        raise NotImplementedError

    @classmethod
    def empty(cls, n: int, k: int, config: MSDConfig) -> dict[str, torch.Tensor]:
        """The buffers of an empty ``[n, k]`` layer (codes 0, scales 1), filled by ``set_weight`` or a state dict."""
        return {
            name: torch.full(shape, cls.fills[name], dtype=dtype)
            for name, (shape, dtype) in cls.shapes(n, k, config).items()
        }

    @classmethod
    def quantize(cls, weight: torch.Tensor, config: MSDConfig) -> dict[str, torch.Tensor]:
        """The quantized buffers of a checked float weight ``[N, K]`` (finite, within float32's range)."""
        raise NotImplementedError

    @classmethod
    def weight_quantized(cls, layer: nn.Module) -> Any:
        """The layer's stored weight as a :mod:`lowbit.formats` object."""
        raise NotImplementedError

    @classmethod
    def dequantize(cls, layer: nn.Module) -> torch.Tensor:
        """The layer's weight in float32 (one correctly rounded float32 product per element)."""
        raise NotImplementedError

    # --------------------------------------------------------------------------------------------- compute

    @property
    def kernels(self) -> tuple[Int8Profile, ...]:
        """The INT8 kernel profiles this layer prepacks (none for the dequant baseline)."""
        return ()

    @property
    def kernel_name(self) -> str:
        """``MSDLinear.kernel``."""
        raise NotImplementedError

    def profile_for(self, m: int) -> Int8Profile:
        """The kernel profile for ``m`` token rows."""
        raise NotImplementedError

    def prepack(self, layer: nn.Module) -> None:
        """(Re)build the kernel-side weight copies from the layer's buffers."""

    def prepacked_bytes(self, layer: nn.Module) -> int:
        """Bytes of the kernel-side weight copies (estimate)."""
        return 0

    def forward(self, layer: Any, x: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """``y = x·Wᵀ + b`` for the checked input ``x`` (``x2`` is it as ``[M, K]``), shaped like ``x``."""
        raise NotImplementedError

    def reference(self, layer: Any, x2: torch.Tensor) -> torch.Tensor:
        """The exact float64 reference of ``x2 [M, K]`` without the bias."""
        raise NotImplementedError

    def tune(self, layer: Any, x2: torch.Tensor, repeats: int) -> dict[str, float]:
        """Seconds of the stacked and split variants on ``x2`` (INT8 MSD only)."""
        raise ValueError("tune() applies to weight='int8', method='msd' layers")


class MSDScheme(Scheme):
    """Common part of the MSD handlers: verified INT8 kernel profiles, chosen by the number of rows."""

    method = "msd"

    def __init__(self, config: MSDConfig) -> None:
        super().__init__(config)
        self._kernels = resolve_int8_kernels(config.kernel)

    @property
    def kernels(self) -> tuple[Int8Profile, ...]:
        return self._kernels

    @property
    def kernel_name(self) -> str:
        names = [p.kernel for p in self._kernels]
        return names[0] if len(names) == 1 else f"auto({'|'.join(names)})"

    def profile_for(self, m: int) -> Int8Profile:
        return choose_kernel(self._kernels, self.config.passes * m)

    def forward(self, layer: Any, x: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        # inference only: integer GEMMs carry no gradient (no_grad entered only when needed: ~5 µs at decode)
        if torch.is_grad_enabled():
            with torch.no_grad():
                y = self._run(layer, x2.detach(), self.profile_for(x2.shape[0]))
        else:
            y = self._run(layer, x2, self.profile_for(x2.shape[0]))
        if y.dtype != x.dtype:
            y = y.to(x.dtype)
        return y if x.dim() == 2 else y.reshape(*x.shape[:-1], layer.out_features)

    def _run(self, layer: Any, x2: torch.Tensor, profile: Int8Profile) -> torch.Tensor:
        raise NotImplementedError


@functools.cache
def _warn_fused_unavailable(reason: str) -> None:
    """One warning per process and reason (``decode_op="auto"``)."""
    warnings.warn(
        f"lowbit: the compiled MSD decode operator is unavailable ({reason}); INT8 decode steps run as torch calls "
        "(the same results, ~0.1-0.2 ms more per layer). MSDConfig(decode_op='torch') silences this.",
        RuntimeWarning,
        stacklevel=4,
    )


class Int8Scheme(MSDScheme):
    """INT8 weights per output channel (or per K-group), INT8 MSD activations (module docstring)."""

    fills: ClassVar[dict[str, float]] = {"qweight": 0, "weight_scale": 1.0}

    def __init__(self, config: MSDConfig) -> None:
        super().__init__(config)
        self._segments: dict[str, list[tuple[int, int, Int8Packed]]] = {}
        self._fused: FusedDecode | None = None
        self._fused_resolved = not self._wants_fused()
        if config.decode_op == "fused":
            if "fbgemm" not in (p.kernel for p in self._kernels):
                raise RuntimeError(
                    "decode_op='fused' runs on the fbgemm kernel, which is not exact on this CPU; "
                    "use decode_op='auto' or 'torch'"
                )
            self._resolve_fused()

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without the compiled operator (a C++ callable): it is looked up again on first use."""
        state = self.__dict__.copy()
        state["_fused"] = None
        state["_fused_resolved"] = not self._wants_fused()
        return state

    def _wants_fused(self) -> bool:
        """Whether decode steps may run the compiled operator (not with ``decode_op="torch"`` or forced split)."""
        return self.config.decode_op != "torch" and self.config.stacking != "split"

    def _resolve_fused(self) -> None:
        """Load the compiled decode operator (built on first use, :mod:`lowbit.msd.native`) for ``decode_op``
        ``"fused"`` (raise if unavailable) or ``"auto"`` (warn once per process and run the torch calls)."""
        op, reason = fused_decode_op()
        self._fused_resolved = True
        if op is None and self.config.decode_op == "fused":
            raise RuntimeError(f"decode_op='fused': the compiled MSD decode operator is unavailable: {reason}")
        if op is None:
            _warn_fused_unavailable(reason)
        self._fused = op

    @classmethod
    def check_shape(cls, n: int, k: int, config: MSDConfig) -> None:
        if config.group_size is not None and k % config.group_size:
            raise ValueError(f"group_size={config.group_size} does not divide in_features={k}")

    @classmethod
    def shapes(cls, n: int, k: int, config: MSDConfig) -> BufferShapes:
        groups = 1 if config.group_size is None else k // config.group_size
        return {"qweight": ((n, k), torch.int8), "weight_scale": ((n, groups), torch.float32)}

    @classmethod
    def quantize(cls, weight: torch.Tensor, config: MSDConfig) -> dict[str, torch.Tensor]:
        """``formats.quantize_int(W, 8, "channel")`` (or ``"group"``): ``s_w = float32(max|W_row|/127)``,
        ``q = RNE(W/s_w)``."""
        from lowbit import formats

        if config.group_size is None:
            wq = formats.quantize_int(weight, 8, "channel")
            return {"qweight": wq.q, "weight_scale": wq.scale.reshape(weight.shape[0], 1)}
        wq = formats.quantize_int(weight, 8, "group", group_size=config.group_size)
        return {"qweight": wq.q, "weight_scale": wq.scale.reshape(weight.shape[0], -1)}

    @classmethod
    def weight_quantized(cls, layer: Any) -> Any:
        from lowbit import formats

        group_size = layer.config.group_size
        if group_size is None:
            return formats.IntQuantized(layer.qweight, layer.weight_scale, 8, "channel", None)
        return formats.IntQuantized(layer.qweight, layer.weight_scale, 8, "group", group_size)

    @classmethod
    def dequantize(cls, layer: Any) -> torch.Tensor:
        n, k = layer.out_features, layer.in_features
        g = layer.weight_scale.shape[1]
        # Convert, then scale in place: the same float32 products as ``q * s`` with type promotion, 2-3x faster on
        # the CPU (the mixed-dtype broadcast takes a slow path), so the baseline is not handicapped.
        return layer.qweight.to(torch.float32).view(n, g, k // g).mul_(layer.weight_scale.unsqueeze(-1)).view(n, k)

    def prepack(self, layer: Any) -> None:
        """One prepacked K-segment per scale group (one segment for per-channel scales), per backend."""
        self._segments = {}
        k = layer.in_features
        step = k if self.config.group_size is None else self.config.group_size
        for kernel in (p.kernel for p in self._kernels):
            self._segments[kernel] = []
            for g, start in enumerate(range(0, k, step)):
                stop = min(k, start + step)
                packed = pack_int8_weight(layer.qweight[:, start:stop], layer.weight_scale[:, g], kernel)
                self._segments[kernel].append((start, stop, packed))

    def prepacked_bytes(self, layer: Any) -> int:
        """One byte per weight and prepacking backend (``int_mm`` runs on the stored weight: none)."""
        return sum(p.kernel != "int_mm" for p in self._kernels) * layer.out_features * layer.in_features

    def _run(self, layer: Any, x2: torch.Tensor, profile: Int8Profile) -> torch.Tensor:
        m = x2.shape[0]
        fbgemm_decode = m <= DECODE_MAX_ROWS and profile.kernel == "fbgemm"
        if fbgemm_decode and not self._fused_resolved:
            self._resolve_fused()
        # the fused operator stacks the components (split gives the same bits)
        stacked = (fbgemm_decode and self._fused is not None) or layer.stacking_for(m) == "stacked"
        segments = self._segments[profile.kernel]
        return msd_int8_linear(
            x2, segments, self.config.passes, stacked=stacked, bias=layer.bias, profile=profile, fused=self._fused
        )

    def reference(self, layer: Any, x2: torch.Tensor) -> torch.Tensor:
        """``lowbit.msd.matmul`` in float64 with the decomposition the fast path runs on this CPU: 8-bit, or
        7-bit with one more pass where the profile says so."""
        from lowbit.msd.multiply import matmul

        profile = self.profile_for(x2.shape[0])
        passes = profile.passes_for(self.config.passes)
        w = self.weight_quantized(layer)
        return matmul(x2, w, passes=passes, accumulate=torch.float64, int8_qmax=profile.qmax)

    def tune(self, layer: Any, x2: torch.Tensor, repeats: int) -> dict[str, float]:
        from lowbit.msd.kernels import time_stacking

        profile = self.profile_for(x2.shape[0])
        return time_stacking(x2, self._segments[profile.kernel], self.config.passes, repeats=repeats, profile=profile)


class MXFP4Scheme(MSDScheme):
    """OCP MXFP4 weights (E2M1, E8M0 scale per 32 along K), MXFP4 MSD activations (module docstring)."""

    fills: ClassVar[dict[str, float]] = {"weight_codes": 0, "weight_scale_exponents": 127}  # 127: scale 2^0

    def __init__(self, config: MSDConfig) -> None:
        super().__init__(config)
        self._packed: dict[str, tuple[Int8Packed, int]] = {}

    @classmethod
    def check_shape(cls, n: int, k: int, config: MSDConfig) -> None:
        if k > MX_MAX_K:
            raise ValueError(f"in_features={k} exceeds {MX_MAX_K}: the exact INT8 emulation would overflow int32")

    @classmethod
    def shapes(cls, n: int, k: int, config: MSDConfig) -> BufferShapes:
        kp = math.ceil(k / MX_BLOCK) * MX_BLOCK
        return {
            "weight_codes": ((n, kp // 2), torch.uint8),
            "weight_scale_exponents": ((n, kp // MX_BLOCK), torch.uint8),
        }

    @classmethod
    def quantize(cls, weight: torch.Tensor, config: MSDConfig) -> dict[str, torch.Tensor]:
        """``formats.quantize_mx(W, "e2m1", block=32, axis=-1, scale_rule=config.weight_scale_rule, pad=True)``."""
        from lowbit import formats

        rule = config.weight_scale_rule
        mx = formats.quantize_mx(weight, "e2m1", block=MX_BLOCK, axis=-1, scale_rule=rule, pad=True)
        return {"weight_codes": mx.codes, "weight_scale_exponents": mx.scale_exponents}

    @classmethod
    def weight_quantized(cls, layer: Any) -> Any:
        from lowbit import formats

        return formats.MXTensor(
            codes=layer.weight_codes,
            scale_exponents=layer.weight_scale_exponents,
            elem="e2m1",
            block=MX_BLOCK,
            axis=1,
            shape=(layer.out_features, layer.in_features),
            scale_rule=layer.config.weight_scale_rule,
        )

    @classmethod
    def dequantize(cls, layer: Any) -> torch.Tensor:
        """Element values times their block scales (exact in float32)."""
        from lowbit import formats
        from lowbit.formats.e8m0 import decode_e8m0

        n, k = layer.out_features, layer.in_features
        values = formats.decode_element(formats.unpack_nibbles(layer.weight_codes), "e2m1")
        scales = decode_e8m0(layer.weight_scale_exponents)
        return (values.view(n, scales.shape[1], MX_BLOCK) * scales.unsqueeze(-1)).view(n, -1)[:, :k]

    def prepack(self, layer: Any) -> None:
        """The weight's exponent bands stacked along N, per backend (``kernels_mx.pack_mxfp4_weight``)."""
        self._packed = {}
        self._packed = pack_mxfp4_weight(self.weight_quantized(layer), [p.kernel for p in self._kernels])

    def prepacked_bytes(self, layer: Any) -> int:
        """``B_w`` bytes per weight and backend (``B_w`` exponent bands)."""
        return sum(bands * layer.out_features * packed.k for packed, bands in self._packed.values())

    def _run(self, layer: Any, x2: torch.Tensor, profile: Int8Profile) -> torch.Tensor:
        packed, bands = self._packed[profile.kernel]
        return msd_mxfp4_linear(
            x2.to(torch.float32),
            packed,
            bands,
            layer.out_features,
            self.config.passes,
            profile=profile,
            scale_rule=self.config.act_scale_rule,
            bias=layer.bias,
        )

    def reference(self, layer: Any, x2: torch.Tensor) -> torch.Tensor:
        """``lowbit.msd.matmul`` in float64 with the config's passes and activation scale rule."""
        from lowbit.msd.multiply import matmul

        w = self.weight_quantized(layer)
        return matmul(x2, w, passes=self.config.passes, scale_rule=self.config.act_scale_rule, accumulate=torch.float64)


class DequantScheme(Scheme):
    """The baseline: the weight's MSD scheme stores it; each call dequantizes it to ``x.dtype`` and runs
    ``F.linear`` (``bf16(float32(q·s_w))`` for W8A16 bfloat16 activations, ``docs/methods/msd.md`` §8)."""

    method = "dequant"

    @classmethod
    def _storage(cls, config: MSDConfig) -> type[Scheme]:
        return SCHEMES[(config.weight, "msd")]

    @classmethod
    def check_shape(cls, n: int, k: int, config: MSDConfig) -> None:
        cls._storage(config).check_shape(n, k, config)

    @classmethod
    def shapes(cls, n: int, k: int, config: MSDConfig) -> BufferShapes:
        return cls._storage(config).shapes(n, k, config)

    @classmethod
    def empty(cls, n: int, k: int, config: MSDConfig) -> dict[str, torch.Tensor]:
        return cls._storage(config).empty(n, k, config)

    @classmethod
    def quantize(cls, weight: torch.Tensor, config: MSDConfig) -> dict[str, torch.Tensor]:
        return cls._storage(config).quantize(weight, config)

    @classmethod
    def weight_quantized(cls, layer: Any) -> Any:
        return cls._storage(layer.config).weight_quantized(layer)

    @classmethod
    def dequantize(cls, layer: Any) -> torch.Tensor:
        return cls._storage(layer.config).dequantize(layer)

    @property
    def kernel_name(self) -> str:
        return "dequant"

    def profile_for(self, m: int) -> Int8Profile:
        raise ValueError("method='dequant' layers run a float GEMM, not an INT8 kernel")

    def forward(self, layer: Any, x: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        w = layer.dequantized_weight(x.dtype)
        bias = None if layer.bias is None else layer.bias.to(x.dtype)
        return nn.functional.linear(x, w, bias)

    def reference(self, layer: Any, x2: torch.Tensor) -> torch.Tensor:
        """``x·deq(W)ᵀ`` exactly (``lowbit.msd.matmul_reference``)."""
        from lowbit.msd.multiply import matmul_reference

        return matmul_reference(x2, self.weight_quantized(layer))


SCHEMES: dict[tuple[str, str], type[Scheme]] = {
    ("int8", "msd"): Int8Scheme,
    ("mxfp4", "msd"): MXFP4Scheme,
    ("int8", "dequant"): DequantScheme,
    ("mxfp4", "dequant"): DequantScheme,
}


def scheme_for(config: MSDConfig) -> type[Scheme]:
    """The handler class of ``(config.weight, config.method)``.

    >>> scheme_for(MSDConfig(weight="mxfp4")).__name__, scheme_for(MSDConfig(method="dequant")).__name__
    ('MXFP4Scheme', 'DequantScheme')
    """
    return SCHEMES[(config.weight, config.method)]
