"""How a linear layer is quantized and multiplied: the :class:`MSDConfig` dataclass.

``MSDConfig(weight="int8", passes=2, method="msd")`` is the paper's W8A16 setting (``docs/methods/msd.md``
§3): per-output-channel INT8 weights, the activation split into two INT8 components per token row, exact
INT8×INT8→INT32 GEMMs, FP32 recombination. ``weight="mxfp4"`` is W4A16 with OCP MXFP4 weights (E2M1 elements,
one E8M0 scale per 32 weights along K, 4.25 bits per weight) and the activation split into MXFP4 components
(§5). ``method="dequant"`` keeps the same quantized weights but runs the usual baseline: dequantize the weight
to the activation's float dtype on every call, then a float GEMM.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from lowbit.formats.constants import SCALE_RULES

__all__ = ["DECODE_OPS", "INT8_KERNELS", "METHODS", "STACKING", "WEIGHTS", "MSDConfig"]

WEIGHTS = ("int8", "mxfp4")
METHODS = ("msd", "dequant")
INT8_KERNELS = ("auto", "fbgemm", "onednn", "int_mm")
STACKING = ("auto", "stacked", "split")
DECODE_OPS = ("auto", "fused", "torch")
_SCALE_RULES = SCALE_RULES


@dataclass(frozen=True)
class MSDConfig:
    """Quantization and kernel settings of one :class:`lowbit.msd.MSDLinear` (or a whole model).

    Attributes:
        weight: ``"int8"`` (symmetric, per output channel, or per ``group_size`` along K) or ``"mxfp4"``
            (E2M1 elements in blocks of 32 along K with an E8M0 scale: 4.25 bits/weight).
        passes: activation components ``p`` (>= 1). INT8: error ``<= M/(2·127·254^(p-1))`` per token row,
            ``M/64516`` for p = 2. MXFP4: ``<= α/8^p`` per 32-block (``α/64`` for p = 2).
        method: ``"msd"`` (decompose the activation, integer GEMMs, never dequantize the weight) or
            ``"dequant"`` (the baseline: weight dequantized to the activation dtype each call, float GEMM).
        group_size: INT8 only: weight scale group along K (None = one scale per output channel). Groups run
            one GEMM per K-group (slower); the benchmarks use per-channel weights.
        kernel: INT8 GEMM backend: ``"fbgemm"`` (prepacked
            ``quantized::linear_with_input_q_dq_qweight_dq_output_fp32``),
            ``"onednn"`` (prepacked ``onednn::qlinear_pointwise``), ``"int_mm"`` (``torch._int_mm``, no prepack),
            or ``"auto"``: fbgemm prepacked (the only copy) for ``p·M <= 16`` rows (decode) and ``int_mm`` on the
            stored weight above, where it is exact (``docs/msd-inference.md``, "Kernel choice"). An unavailable
            backend raises; there is no silent fallback. ``MSDLinear.kernel_for(m)`` says which one runs.
        stacking: ``"stacked"`` (one GEMM over the ``p`` components stacked along M, the weight read once),
            ``"split"`` (``p`` GEMMs) or ``"auto"`` (measured once per layer and per M bucket, see
            :meth:`lowbit.msd.MSDLinear.tune`; both give bit-identical outputs).
        decode_op: INT8 decode steps (``M <= 16`` rows) on fbgemm: ``"fused"`` (lowbit's compiled operator,
            :mod:`lowbit.msd.native`: the same float32 steps and GEMM as one call; raises where it cannot be built
            or fails its self-check), ``"torch"`` (about a dozen torch calls from Python) or ``"auto"`` (fused
            where it builds and passes, else the torch calls, with one warning saying why). Both give the same
            bits; fused saves ~0.1-0.2 ms per layer and step. ``stacking="split"`` always runs the torch calls.
        act_scale_rule: MXFP4 activation scale rule, ``"ceil"`` (non-saturating, keeps the α/8^p bound) or ``"ocp"``.
        weight_scale_rule: MXFP4 weight scale rule, ``"ocp"`` (the OCP v1.0 spec, as MXFP4 checkpoints store it)
            or ``"ceil"``.

    >>> MSDConfig(weight="int8", passes=2).to_dict()["kernel"]
    'auto'
    """

    weight: str = "int8"
    passes: int = 2
    method: str = "msd"
    group_size: int | None = None
    kernel: str = "auto"
    stacking: str = "auto"
    act_scale_rule: str = "ceil"
    weight_scale_rule: str = "ocp"
    decode_op: str = "auto"

    def __post_init__(self) -> None:
        if self.weight not in WEIGHTS:
            raise ValueError(f"weight must be one of {WEIGHTS}, got {self.weight!r}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if isinstance(self.passes, bool) or not isinstance(self.passes, int) or not 1 <= self.passes <= 4:
            raise ValueError(f"passes must be an integer in [1, 4], got {self.passes!r}")
        if self.group_size is not None:
            if isinstance(self.group_size, bool) or not isinstance(self.group_size, int) or self.group_size < 1:
                raise ValueError(f"group_size must be None or a positive int, got {self.group_size!r}")
            if self.weight == "mxfp4":
                raise ValueError("group_size applies to weight='int8' only (MXFP4 blocks are 32 along K)")
        if self.kernel not in INT8_KERNELS:
            raise ValueError(f"kernel must be one of {INT8_KERNELS}, got {self.kernel!r}")
        if self.stacking not in STACKING:
            raise ValueError(f"stacking must be one of {STACKING}, got {self.stacking!r}")
        if self.decode_op not in DECODE_OPS:
            raise ValueError(f"decode_op must be one of {DECODE_OPS}, got {self.decode_op!r}")
        if self.decode_op == "fused" and self.kernel in ("onednn", "int_mm"):
            raise ValueError(f"decode_op='fused' runs on the fbgemm kernel; kernel={self.kernel!r} has no fused op")
        if self.act_scale_rule not in _SCALE_RULES:
            raise ValueError(f"act_scale_rule must be one of {_SCALE_RULES}, got {self.act_scale_rule!r}")
        if self.weight_scale_rule not in _SCALE_RULES:
            raise ValueError(f"weight_scale_rule must be one of {_SCALE_RULES}, got {self.weight_scale_rule!r}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (stored in quantized checkpoints)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MSDConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ValueError (a checkpoint from another version)."""
        if not isinstance(data, dict):
            raise TypeError(f"data must be a dict, got {type(data).__name__}")
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown MSDConfig fields {sorted(unknown)}; was this written by another lowbit version?")
        return cls(**data)

    @property
    def bits_per_weight(self) -> float:
        """Storage bits per weight: 8 for INT8 (plus one float32 scale per channel or group), 4.25 for MXFP4."""
        return 8.0 if self.weight == "int8" else 4.25
