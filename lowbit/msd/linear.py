"""``MSDLinear``: a drop-in ``nn.Linear`` replacement with quantized weights and MSD (or dequant) GEMMs.

``docs/methods/msd.md`` §2-§3, §5. For ``y = x·Wᵀ + b`` with the weight stored quantized:

* ``MSDConfig(weight="int8", method="msd")``: ``W = q ⊙ s_w`` (INT8 codes, float32 scale per output channel or
  per K-group). The activation is split per token row into ``p`` INT8 components (``x ≈ Σ_i s_i·q_i``,
  ``|x - x̂| <= M/(2·127·254^(p-1))``), each multiplied with ``q`` in a prepacked VNNI INT8 GEMM
  (:mod:`lowbit.msd.kernels`), recombined in float32.
* ``MSDConfig(weight="mxfp4", method="msd")``: OCP MXFP4 weights (4.25 bits/weight), the activation split into
  MXFP4 components with :func:`lowbit.msd.decompose` (non-saturating ceil rule, ``|x - x̂| <= α/8^p``), block
  products emulated exactly with INT8 GEMMs (:mod:`lowbit.msd.kernels_mx`).
* ``method="dequant"``: the same stored weights, dequantized on every call to the activation's dtype (float32 or
  bfloat16), then ``F.linear``: the usual weight-only baseline.

Each ``(weight, method)`` pair is one handler of :mod:`lowbit.msd.schemes` (storage shapes, quantization,
prepacking, forward, reference), chosen from :data:`lowbit.msd.schemes.SCHEMES`; ``MSDLinear`` holds the buffers
and the checks common to all. The exact reference of every layer is :meth:`MSDLinear.reference_forward`
(``lowbit.msd.matmul`` in float64). Quantized tensors are buffers (``state_dict`` holds them bit-exactly); the
prepacked kernel weights are rebuilt from them (:meth:`MSDLinear.prepack`, run automatically after
``load_state_dict``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lowbit.formats import FLOAT_DTYPES
from lowbit.msd.config import MSDConfig
from lowbit.msd.isa import Int8Profile
from lowbit.msd.kernels_mx import MX_BLOCK
from lowbit.msd.schemes import BufferShapes, Scheme, scheme_for

__all__ = [
    "DEFAULT_STACK_MAX_ROWS",
    "MX_BLOCK",
    "QUANTIZE_CHUNK_ELEMENTS",
    "MSDLinear",
    "quantize_weight",
    "quantized_shapes",
]

# [measured, docs/msd-inference.md] below this many stacked rows (p·M) one GEMM over the stacked components beats
# p GEMMs (the weight is streamed once); above it the two variants tie within noise. MSDLinear.tune measures it.
DEFAULT_STACK_MAX_ROWS = 1024
# quantize_weight quantizes weights in row blocks of at most this many elements (peak temporaries ~24 bytes each)
QUANTIZE_CHUNK_ELEMENTS = 1 << 24


class MSDLinear(nn.Module):
    """``y = x·Wᵀ + b`` with a quantized ``W`` ``[out_features, in_features]`` (see the module docstring).

    Build one with :meth:`from_linear`; :func:`lowbit.msd.quantize_model` swaps every selected ``nn.Linear``.

    >>> import torch
    >>> lin = torch.nn.Linear(64, 8)
    >>> layer = MSDLinear.from_linear(lin, MSDConfig(weight="int8", passes=2))
    >>> x = torch.randn(3, 64)
    >>> bool(((layer(x) - lin(x)).abs().max() < 0.05))
    True
    """

    def __init__(self, in_features: int, out_features: int, *, bias: bool = True, config: MSDConfig | None = None):
        super().__init__()
        config = MSDConfig() if config is None else config
        if not isinstance(config, MSDConfig):
            raise TypeError(f"config must be an MSDConfig, got {type(config).__name__}")
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.in_features = in_features
        self.out_features = out_features
        self.config = config
        handler = scheme_for(config)
        handler.check_shape(out_features, in_features, config)
        for name, tensor in handler.empty(out_features, in_features, config).items():
            self.register_buffer(name, tensor)
        self.register_buffer("bias", torch.zeros(out_features, dtype=torch.float32) if bias else None)
        self._plan: dict[int, str] = {}
        self._scheme: Scheme = handler(config)  # resolves the INT8 kernels: raises where none is exact
        self.register_load_state_dict_post_hook(_prepack_after_load)

    # ----------------------------------------------------------------------------------------------- building

    @classmethod
    def from_linear(cls, linear: nn.Linear, config: MSDConfig | None = None) -> MSDLinear:
        """Quantize ``linear.weight`` with :mod:`lowbit.formats` and return an equivalent MSDLinear.

        INT8: ``formats.quantize_int(W, 8, "channel")`` (or ``"group"``): ``s_w = float32(max|W_row|/127)``,
        ``q = RNE(W/s_w)``. MXFP4: ``formats.quantize_mx(W, "e2m1", block=32, axis=-1,
        scale_rule=config.weight_scale_rule, pad=True)``.
        """
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be a torch.nn.Linear, got {type(linear).__name__}")
        config = MSDConfig() if config is None else config
        layer = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, config=config)
        layer.set_weight(linear.weight.detach())
        if linear.bias is not None:
            layer.bias.copy_(linear.bias.detach().to(torch.float32))
        return layer

    @torch.no_grad()
    def set_weight(self, weight: torch.Tensor) -> None:
        """Quantize a float weight ``[out_features, in_features]`` into this layer's buffers and prepack."""
        if tuple(weight.shape) != (self.out_features, self.in_features):
            raise ValueError(f"weight must be [{self.out_features}, {self.in_features}], got {tuple(weight.shape)}")
        tensors = quantize_weight(weight, self.config)
        for name, t in tensors.items():
            getattr(self, name).copy_(t)
        self.prepack()

    @torch.no_grad()
    def prepack(self) -> None:
        """(Re)build the kernel-side weight copies from the quantized buffers (no-op for ``method="dequant"``)."""
        self._plan = {}
        self._scheme.prepack(self)

    # ----------------------------------------------------------------------------------------------- views

    def weight_quantized(self) -> Any:
        """The stored weight as a :mod:`lowbit.formats` object (``IntQuantized`` or ``MXTensor``)."""
        return self._scheme.weight_quantized(self)

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``W = q ⊙ s_w`` (or the MXFP4 values times their block scales) in ``dtype``, as the dequant baseline
        computes it on every call: one float32 product (correctly rounded, so equal to the float64 product rounded
        to float32; exact for MXFP4), then a cast to ``dtype`` (``bf16(float32(q·s_w))`` for W8A16, msd.md §8).
        ``torch.float64`` gives the exact product."""
        if dtype == torch.float64:
            return self.weight_quantized().dequantize(torch.float64)
        w = self._scheme.dequantize(self)
        return w if dtype == torch.float32 else w.to(dtype)

    @property
    def kernel(self) -> str:
        """The GEMM backends of this layer: ``"fbgemm"``, ``"onednn"``, ``"int_mm"``, ``"auto(fbgemm|int_mm)"`` (MSD,
        see :meth:`kernel_for`) or ``"dequant"``."""
        return self._scheme.kernel_name

    def kernel_for(self, m: int) -> str:
        """The backend that runs for ``m`` token rows (``"dequant"`` for the baseline)."""
        if self.config.method == "dequant":
            return "dequant"
        return self.profile_for(m).kernel

    def profile_for(self, m: int) -> Int8Profile:
        """The verified kernel profile (:mod:`lowbit.msd.isa`) that runs for ``m`` token rows: backend, component
        range (8-bit, or 7-bit with one more pass on CPUs without VNNI) and activation zero point.

        Raises:
            ValueError: a ``method="dequant"`` layer (it runs a float GEMM).
        """
        return self._scheme.profile_for(m)

    @property
    def plan(self) -> dict[int, str]:
        """Measured stacking choices by M bucket (power of two), filled by :meth:`tune` (a copy)."""
        return dict(self._plan)

    def stacking_for(self, m: int) -> str:
        """``"stacked"`` or ``"split"`` for ``m`` token rows: the config's choice, else the tuned plan, else the
        measured default (stacked while ``p·m <= DEFAULT_STACK_MAX_ROWS``)."""
        if self.config.stacking != "auto":
            return self.config.stacking
        bucket = _bucket(m)
        if bucket in self._plan:
            return self._plan[bucket]
        return "stacked" if self.config.passes * m <= DEFAULT_STACK_MAX_ROWS else "split"

    def memory_bytes(self) -> dict[str, int]:
        """Bytes of the stored quantized weight (checkpoint) and of the kernels' prepacked copies (estimate: one
        byte per weight for INT8 with fbgemm, onednn or ``kernel="auto"`` (one prepacked backend; its ``int_mm``
        for large M multiplies the stored weight), none with ``int_mm``; one byte per weight and exponent band
        for MXFP4; none for the dequant baseline)."""
        stored = sum(b.numel() * b.element_size() for n, b in self.named_buffers() if n != "bias")
        return {"stored": stored, "prepacked": self._scheme.prepacked_bytes(self)}

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"weight={c.weight}, method={c.method}, passes={c.passes}, kernel={self.kernel}"
        )

    # ----------------------------------------------------------------------------------------------- compute

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [..., in_features]`` (float32/bfloat16/float16 on the CPU) -> ``[..., out_features]`` in x's dtype.

        Inference only: the MSD path returns a tensor without gradient history.
        """
        x2 = self._check_input(x)
        return self._scheme.forward(self, x, x2)

    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The exact reference in float64: ``lowbit.msd.matmul`` (``method="msd"``, the same decomposition as the
        fast path on this CPU: passes, component range (:meth:`profile_for`) and scale rule)
        or ``lowbit.msd.dequant_matmul``'s exact counterpart (``x·deq(W)ᵀ`` for ``method="dequant"``)."""
        x2 = self._check_input(x)
        y = self._scheme.reference(self, x2)
        if self.bias is not None:
            y = y + self.bias.to(torch.float64)
        return y.reshape(*x.shape[:-1], self.out_features)

    @torch.no_grad()
    def tune(
        self, ms: tuple[int, ...] = (1, 8, 32, 128, 512, 2048), *, repeats: int = 3
    ) -> dict[int, dict[str, float]]:
        """Measure stacked vs split for each M (random activations) and keep the faster per M bucket.

        Both variants give bit-identical outputs; only speed differs. Returns ``{M: {"stacked": s, "split": s}}``.

        Raises:
            ValueError: not a ``weight="int8"``, ``method="msd"`` layer.
        """
        if self.config.method == "dequant" or self.config.weight != "int8":
            raise ValueError("tune() applies to weight='int8', method='msd' layers")
        gen = torch.Generator().manual_seed(0)
        timings = {}
        for m in ms:
            x = torch.randn(m, self.in_features, generator=gen)
            t = self._scheme.tune(self, x, repeats)
            self._plan[_bucket(m)] = min(t, key=t.__getitem__)
            timings[m] = t
        return timings

    def _check_input(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.dtype not in FLOAT_DTYPES:
            raise TypeError(f"x must be a floating tensor, got dtype {x.dtype}")
        if x.device.type != "cpu":
            raise ValueError(f"MSDLinear runs on the CPU, got x on {x.device}")
        if x.dim() < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"x must have last dimension in_features={self.in_features}, got shape {tuple(x.shape)}")
        return x if x.dim() == 2 else x.reshape(-1, self.in_features)


def quantize_weight(weight: torch.Tensor, config: MSDConfig) -> dict[str, torch.Tensor]:
    """The buffers of an :class:`MSDLinear` for a float weight ``[N, K]`` (used by ``from_linear`` and the
    streaming ``lowbit quantize``): INT8 ``{"qweight", "weight_scale"}``, MXFP4 ``{"weight_codes",
    "weight_scale_exponents"}``. Rows are quantized independently, so any row chunking gives identical bytes; this
    function quantizes blocks of at most :data:`QUANTIZE_CHUNK_ELEMENTS` elements (the quantizers work in float64:
    a whole ``128256 x 2048`` ``lm_head`` at once peaked at +6.3 GB over its float32 weight, ~24 bytes a weight).

    Raises:
        ValueError: NaN/Inf in the weight, values beyond float32's range, or a group size that does not divide K.
    """
    if weight.dim() != 2:
        raise ValueError(f"weight must be 2-D [N, K], got shape {tuple(weight.shape)}")
    n, k = weight.shape
    scheme = scheme_for(config)
    rows = max(1, QUANTIZE_CHUNK_ELEMENTS // max(1, k))
    if n <= rows:
        _check_weight_values(weight)
        return scheme.quantize(weight, config)
    out = {name: torch.empty(shape, dtype=dtype) for name, (shape, dtype) in scheme.shapes(n, k, config).items()}
    for start in range(0, n, rows):
        block = weight[start : start + rows]
        _check_weight_values(block)
        for name, t in scheme.quantize(block, config).items():
            out[name][start : start + rows].copy_(t)
    return out


def _check_weight_values(weight: torch.Tensor) -> None:
    if not bool(torch.isfinite(weight).all()):
        raise ValueError("weight contains NaN or Inf; it cannot be quantized")
    top = float(torch.linalg.vector_norm(weight, ord=float("inf"))) if weight.numel() else 0.0
    if top > torch.finfo(torch.float32).max:
        raise ValueError(
            f"weight values reach {top:.3g}, beyond float32's range: the float32 scales (INT8 max|W|/127, MXFP4 "
            "E8M0 exponents) cannot represent them"
        )


def quantized_shapes(n: int, k: int, config: MSDConfig) -> BufferShapes:
    """Shape and dtype of each buffer :func:`quantize_weight` returns for an ``[n, k]`` weight (the constructor
    registers the same buffers).

    >>> quantized_shapes(4, 40, MSDConfig(weight="mxfp4"))["weight_codes"]
    ((4, 32), torch.uint8)
    """
    return scheme_for(config).shapes(n, k, config)


def _bucket(m: int) -> int:
    return 1 << max(0, (m - 1).bit_length())


def _prepack_after_load(module: nn.Module, incompatible_keys: Any) -> None:
    if isinstance(module, MSDLinear):
        module.prepack()
