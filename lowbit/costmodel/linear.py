"""Closed-form latency and HBM traffic of a weight-quantized linear layer under dequant and under MSD.

[inferred] reconstruction of docs/methods/msd.md §10 (Multi-Scale Dequant, arXiv:2605.13915; the paper's own
model was not visible). A layer ``Y[M,N] = X[M,K] · W[K,N]`` with the weight in INT8 (W8A16, ``b_w = 1`` byte)
or MXFP4 (W4A16, ``b_w = 0.5 + 1/32``). Every kernel is a short sequence of *ops*; each op is a roofline
``max(bytes/BW, vector_ops/V, matrix_ops/P)`` and ops run one after another (no overlap between them):

* **dequant, decoupled** (Ascend AIV/AIC; a CPU that materialises the weight): op 1 on the vector unit
  reads ``Wq`` and writes a BF16 workspace (``KN·(b_w + 2)`` bytes, ``c_dq·KN`` vector ops); op 2 on the
  matrix unit reads it back and runs the BF16 GEMM (``2KN + 2MK + 2MN`` bytes, ``2MKN/P16``). Total
  traffic ``KN(b_w + 4) + 2MK + 2MN`` (msd.md §10); the cube waiting for the vector unit is the
  "Vector-Cube stall".
* **dequant, fused** (GPU, Marlin-style dequant in registers): one op, ``KN·b_w + 2MK + 2MN`` bytes,
  ``c_dq·KN`` vector ops overlapped with ``2MKN/P16``.
* **MSD** (both): op 1 decomposes the activation into ``p`` low-precision parts (``2MK`` read,
  ``p·MK·(1 + scale)`` written, ``p·c_dec·MK`` vector ops); op 2 runs the low-precision GEMM on the
  quantized weight (``KN·b_w`` once when the parts are stacked along M, ``p·KN·b_w`` otherwise, plus the
  parts read back and ``2MN`` written; ``p·2MKN/P_low`` with ``P_low = P8`` for INT8, ``P4`` for MXFP4).
  The recombination ``Σ s_i·acc_i`` runs in the GEMM epilogue and is not charged.

With ``P8 = 2·P16`` and ``p = 2`` the MSD matrix time equals the BF16 GEMM time (msd.md §3 "Cost"); in
decode the weight term dominates, so the traffic ratio tends to ``(b_w + 4)/b_w`` on decoupled hardware
(5x for INT8) and about 1x against a fused GPU kernel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lowbit.costmodel.hardware import Hardware

WeightFormat = Literal["int8", "mxfp4"]
Scheme = Literal["dequant", "msd"]

WEIGHT_BYTES: dict[str, float] = {"int8": 1.0, "mxfp4": 0.5 + 1.0 / 32.0}
"""Bytes per weight element: INT8 1; MXFP4 4 bits + one E8M0 byte per 32 (4.25 bits, msd.md §4)."""

SCHEME_LABEL = {"int8": "W8A16", "mxfp4": "W4A16 (MXFP4)"}


@dataclass(frozen=True)
class CostParams:
    """Op counts of the model, all [inferred] (no source gives them; change them to fit a kernel).

    Attributes:
        dequant_ops_int8: vector ops per INT8 weight: cast, scale multiply, cast to BF16.
        dequant_ops_mxfp4: vector ops per MXFP4 weight: unpack nibble, decode, multiply by 2^e.
        decompose_ops: vector ops per activation element and pass: |x|, max, divide, round, clip, residual.
        passes: MSD passes ``p``.
        stack_passes: MSD components stacked along M, so the weight is streamed once (msd.md §3).
        softmax_ops: vector ops per score in attention (max, subtract, exp, sum, scale).
    """

    dequant_ops_int8: float = 3.0
    dequant_ops_mxfp4: float = 4.0
    decompose_ops: float = 6.0
    passes: int = 2
    stack_passes: bool = True
    softmax_ops: float = 5.0

    def __post_init__(self) -> None:
        if isinstance(self.passes, bool) or not isinstance(self.passes, int) or self.passes < 1:
            raise ValueError(f"passes must be an integer >= 1, got {self.passes!r}")
        for name in ("dequant_ops_int8", "dequant_ops_mxfp4", "decompose_ops", "softmax_ops"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")

    def dequant_ops(self, weight: str) -> float:
        """Vector ops per weight element for ``weight``."""
        return self.dequant_ops_int8 if weight == "int8" else self.dequant_ops_mxfp4


DEFAULT_PARAMS = CostParams()


@dataclass(frozen=True)
class OpCost:
    """One op: its traffic and its three roofline times (seconds); ``latency`` is their maximum."""

    name: str
    bytes: float
    t_hbm: float
    t_vector: float
    t_matrix: float

    @property
    def latency(self) -> float:
        """``max(t_hbm, t_vector, t_matrix)``: the op's roofline time."""
        return max(self.t_hbm, self.t_vector, self.t_matrix)

    @property
    def bound(self) -> str:
        """Which resource bounds the op: ``"hbm"``, ``"vector"`` or ``"matrix"``."""
        times = {"hbm": self.t_hbm, "vector": self.t_vector, "matrix": self.t_matrix}
        return max(times, key=lambda k: times[k])


def make_op(hw: Hardware, name: str, *, nbytes: float, vector_ops: float = 0.0, matrix_time: float = 0.0) -> OpCost:
    """An :class:`OpCost` from bytes moved, vector ops and matrix time on ``hw``."""
    return OpCost(name, nbytes, nbytes / hw.bandwidth, vector_ops / hw.vector, matrix_time)


@dataclass(frozen=True)
class KernelCost:
    """A kernel as a sequence of ops; latency and traffic are sums over the ops."""

    scheme: str
    ops: tuple[OpCost, ...]

    @property
    def latency(self) -> float:
        """Sum of the ops' roofline times, seconds."""
        return sum(op.latency for op in self.ops)

    @property
    def bytes(self) -> float:
        """Total main-memory traffic, bytes."""
        return sum(op.bytes for op in self.ops)

    @property
    def t_vector(self) -> float:
        """Total vector time, seconds."""
        return sum(op.t_vector for op in self.ops)

    @property
    def t_matrix(self) -> float:
        """Total matrix time, seconds."""
        return sum(op.t_matrix for op in self.ops)


def _check_dims(m: int, k: int, n: int) -> None:
    for name, v in (("m", m), ("k", k), ("n", n)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")


def low_precision_peak(hw: Hardware, weight: str) -> float | None:
    """The matrix peak MSD uses for ``weight``: INT8 -> P8, MXFP4 -> P4 (None if not native on ``hw``)."""
    return hw.p8 if weight == "int8" else hw.p4


def linear_cost(
    hw: Hardware,
    m: int,
    k: int,
    n: int,
    *,
    weight: WeightFormat = "int8",
    scheme: Scheme = "dequant",
    params: CostParams = DEFAULT_PARAMS,
) -> KernelCost:
    """Latency and traffic of one ``M×K×N`` weight-only quantized linear layer (see the module docstring).

    Raises ``ValueError`` for an unknown ``weight``/``scheme`` and for MSD-MXFP4 on hardware without a native
    MXFP4 matrix unit (``hw.mxfp4_tflops == 0``).

    >>> from lowbit.costmodel.hardware import PRESETS
    >>> hw = PRESETS["ascend-910b"]
    >>> dq, msd = linear_cost(hw, 1, 4096, 4096), linear_cost(hw, 1, 4096, 4096, scheme="msd")
    >>> round(dq.bytes / msd.bytes, 2)  # (b_w + 4) / b_w = 5 on the weight; activations and parts pull it below
    4.99
    """
    _check_dims(m, k, n)
    if weight not in WEIGHT_BYTES:
        raise ValueError(f"weight must be one of {sorted(WEIGHT_BYTES)}, got {weight!r}")
    bw = WEIGHT_BYTES[weight]
    kn, mk, mn = float(k) * n, float(m) * k, float(m) * n
    if scheme == "dequant":
        gemm_time = 2.0 * m * k * n / hw.p16
        dq_ops = params.dequant_ops(weight) * kn
        if hw.decoupled:
            ops = (
                make_op(hw, "dequant W -> bf16 workspace", nbytes=kn * (bw + 2.0), vector_ops=dq_ops),
                make_op(hw, "bf16 GEMM", nbytes=2.0 * kn + 2.0 * mk + 2.0 * mn, matrix_time=gemm_time),
            )
        else:
            ops = (
                make_op(
                    hw,
                    "fused dequant + GEMM",
                    nbytes=kn * bw + 2.0 * mk + 2.0 * mn,
                    vector_ops=dq_ops,
                    matrix_time=gemm_time,
                ),
            )
        return KernelCost("dequant", ops)
    if scheme != "msd":
        raise ValueError(f"scheme must be 'dequant' or 'msd', got {scheme!r}")
    peak = low_precision_peak(hw, weight)
    if peak is None:
        raise ValueError(f"{hw.name} has no native MXFP4 matrix unit (mxfp4_tflops = 0): MSD-MXFP4 does not apply")
    p = params.passes
    scale_share = 0.0 if weight == "int8" else 1.0 / 32.0
    parts = p * mk * (1.0 if weight == "int8" else 0.5) * (1.0 + scale_share)
    weight_reads = 1 if params.stack_passes else p
    ops = (
        make_op(hw, f"decompose X into {p} parts", nbytes=2.0 * mk + parts, vector_ops=p * params.decompose_ops * mk),
        make_op(
            hw,
            f"{weight} GEMM x{p}",
            nbytes=weight_reads * kn * bw + parts + 2.0 * mn,
            matrix_time=p * 2.0 * m * k * n / peak,
        ),
    )
    return KernelCost("msd", ops)
