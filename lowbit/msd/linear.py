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

The exact reference of every layer is :meth:`MSDLinear.reference_forward` (``lowbit.msd.matmul`` in float64).
Quantized tensors are buffers (``state_dict`` holds them bit-exactly); the prepacked kernel weights are rebuilt
from them (:meth:`MSDLinear.prepack`, run automatically after ``load_state_dict``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from lowbit.msd.config import MSDConfig
from lowbit.msd.isa import FULL_QMAX, Int8Profile
from lowbit.msd.kernels import (
    Int8Packed,
    choose_kernel,
    encode_activations,
    gemm_with_profile,
    msd_int8_linear,
    pack_int8_weight,
    resolve_int8_kernels,
    time_stacking,
)
from lowbit.msd.kernels_mx import MX_MAX_K, mx_bands

__all__ = ["DEFAULT_STACK_MAX_ROWS", "MX_BLOCK", "MSDLinear"]

MX_BLOCK = 32
# [measured, docs/msd-inference.md] below this many stacked rows (p·M) one GEMM over the stacked components beats
# p GEMMs (the weight is streamed once); above it the two variants tie within noise. MSDLinear.tune measures it.
DEFAULT_STACK_MAX_ROWS = 1024
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


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
        n, k = out_features, in_features
        if config.weight == "int8":
            if config.group_size is not None and k % config.group_size:
                raise ValueError(f"group_size={config.group_size} does not divide in_features={k}")
            groups = 1 if config.group_size is None else k // config.group_size
            self.register_buffer("qweight", torch.zeros(n, k, dtype=torch.int8))
            self.register_buffer("weight_scale", torch.ones(n, groups, dtype=torch.float32))
        else:
            if k > MX_MAX_K:
                raise ValueError(f"in_features={k} exceeds {MX_MAX_K}: the exact INT8 emulation would overflow int32")
            kp = math.ceil(k / MX_BLOCK) * MX_BLOCK
            self.register_buffer("weight_codes", torch.zeros(n, kp // 2, dtype=torch.uint8))
            self.register_buffer("weight_scale_exponents", torch.full((n, kp // MX_BLOCK), 127, dtype=torch.uint8))
        self.register_buffer("bias", torch.zeros(n, dtype=torch.float32) if bias else None)
        self._int8: dict[str, list[tuple[int, int, Int8Packed]]] = {}
        self._mx: dict[str, tuple[Int8Packed, int]] = {}
        self._plan: dict[int, str] = {}
        self._kernels: tuple[Int8Profile, ...] = (
            () if config.method == "dequant" else resolve_int8_kernels(config.kernel)
        )
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
        self._int8, self._mx = {}, {}
        if self.config.method == "dequant":
            return
        if self.config.weight == "int8":
            k = self.in_features
            step = k if self.config.group_size is None else self.config.group_size
            for kernel in (p.kernel for p in self._kernels):
                self._int8[kernel] = []
                for g, start in enumerate(range(0, k, step)):
                    stop = min(k, start + step)
                    packed = pack_int8_weight(self.qweight[:, start:stop], self.weight_scale[:, g], kernel)
                    self._int8[kernel].append((start, stop, packed))
            return
        mx = self.weight_quantized()
        values = _pad_k(mx.element_values().to(torch.float32))
        scales = mx.scales().to(torch.float64)
        if not bool(torch.isfinite(scales).all()):
            raise ValueError("the MXFP4 weight has NaN block scales (0xFF); it cannot be multiplied")
        ints, band_scale = mx_bands(values, scales, MX_BLOCK)
        flat_scale = band_scale.reshape(-1)
        if bool(((flat_scale < 2.0**-149) | (flat_scale > 2.0**127)).any()):
            raise ValueError("MXFP4 weight band scales leave the float32 range; the kernel scale would not be exact")
        for kernel in (p.kernel for p in self._kernels):
            packed = pack_int8_weight(ints.reshape(-1, ints.shape[-1]), flat_scale.to(torch.float32), kernel)
            self._mx[kernel] = (packed, ints.shape[0])

    # ----------------------------------------------------------------------------------------------- views

    def weight_quantized(self) -> Any:
        """The stored weight as a :mod:`lowbit.formats` object (``IntQuantized`` or ``MXTensor``)."""
        from lowbit import formats

        if self.config.weight == "int8":
            if self.config.group_size is None:
                return formats.IntQuantized(self.qweight, self.weight_scale, 8, "channel", None)
            return formats.IntQuantized(self.qweight, self.weight_scale, 8, "group", self.config.group_size)
        return formats.MXTensor(
            codes=self.weight_codes,
            scale_exponents=self.weight_scale_exponents,
            elem="e2m1",
            block=MX_BLOCK,
            axis=1,
            shape=(self.out_features, self.in_features),
            scale_rule=self.config.weight_scale_rule,
        )

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``W = q ⊙ s_w`` (or the MXFP4 values times their block scales) in ``dtype``, as the dequant baseline
        computes it on every call: one float32 product (correctly rounded, so equal to the float64 product rounded
        to float32; exact for MXFP4), then a cast to ``dtype`` (``bf16(float32(q·s_w))`` for W8A16, msd.md §8).
        ``torch.float64`` gives the exact product."""
        from lowbit import formats

        if dtype == torch.float64:
            return self.weight_quantized().dequantize(torch.float64)
        n, k = self.out_features, self.in_features
        if self.config.weight == "int8":
            g = self.weight_scale.shape[1]
            # Convert, then scale in place: the same float32 products as ``q * s`` with type promotion, 2-3x
            # faster on the CPU (the mixed-dtype broadcast takes a slow path), so the baseline is not handicapped.
            w = self.qweight.to(torch.float32).view(n, g, k // g).mul_(self.weight_scale.unsqueeze(-1)).view(n, k)
        else:
            values = formats.decode_element(formats.unpack_nibbles(self.weight_codes), "e2m1")
            scales = formats.e8m0.decode_e8m0(self.weight_scale_exponents)
            w = (values.view(n, scales.shape[1], MX_BLOCK) * scales.unsqueeze(-1)).view(n, -1)[:, :k]
        return w if dtype == torch.float32 else w.to(dtype)

    @property
    def kernel(self) -> str:
        """The GEMM backends of this layer: ``"fbgemm"``, ``"onednn"``, ``"int_mm"``, ``"auto(fbgemm|onednn)"`` (MSD,
        see :meth:`kernel_for`) or ``"dequant"``."""
        if self.config.method == "dequant":
            return "dequant"
        names = [p.kernel for p in self._kernels]
        return names[0] if len(names) == 1 else f"auto({'|'.join(names)})"

    def kernel_for(self, m: int) -> str:
        """The backend that runs for ``m`` token rows (``"dequant"`` for the baseline)."""
        if self.config.method == "dequant":
            return "dequant"
        return self.profile_for(m).kernel

    def profile_for(self, m: int) -> Int8Profile:
        """The verified kernel profile (:mod:`lowbit.msd.isa`) that runs for ``m`` token rows: backend, component
        range (8-bit, or 7-bit with one more pass on CPUs without VNNI) and activation zero point."""
        if self.config.method == "dequant":
            raise ValueError("method='dequant' layers run a float GEMM, not an INT8 kernel")
        return choose_kernel(self._kernels, self.config.passes * m)

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
        byte per weight and backend; ``kernel="auto"`` keeps two, fbgemm for decode and onednn for larger M)."""
        stored = sum(b.numel() * b.element_size() for n, b in self.named_buffers() if n != "bias")
        if self.config.method == "dequant":
            compute = 0
        elif self.config.weight == "int8":
            compute = len(self._kernels) * self.out_features * self.in_features
        else:
            compute = sum(bw * self.out_features * packed.k for packed, bw in self._mx.values())
        return {"stored": stored, "prepacked": compute}

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
        if self.config.method == "dequant":
            w = self.dequantized_weight(x.dtype)
            bias = None if self.bias is None else self.bias.to(x.dtype)
            return nn.functional.linear(x, w, bias)
        x2 = x2.detach()  # inference only: integer GEMMs carry no gradient
        with torch.no_grad():
            m = x2.shape[0]
            profile = self.profile_for(m)
            if self.config.weight == "int8":
                stacked = self.stacking_for(m) == "stacked"
                segments = self._int8[profile.kernel]
                y = msd_int8_linear(x2, segments, self.config.passes, stacked=stacked, bias=self.bias, profile=profile)
            else:
                y = self._mx_forward(x2.to(torch.float32), profile)
        return y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)

    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The exact reference in float64: ``lowbit.msd.matmul`` (``method="msd"``, the same decomposition as the
        fast path on this CPU: passes, component range (:meth:`profile_for`) and scale rule)
        or ``lowbit.msd.dequant_matmul``'s exact counterpart (``x·deq(W)ᵀ`` for ``method="dequant"``)."""
        from lowbit.msd import matmul, matmul_reference

        x2 = self._check_input(x)
        w = self.weight_quantized()
        if self.config.method == "dequant":
            y = matmul_reference(x2, w)
        elif self.config.weight == "int8":
            # the decomposition the fast path runs here: 8-bit, or 7-bit with one more pass on CPUs without VNNI
            profile = self.profile_for(x2.shape[0])
            passes = profile.passes_for(self.config.passes)
            y = matmul(x2, w, passes=passes, accumulate=torch.float64, int8_qmax=profile.qmax)
        else:
            y = matmul(
                x2, w, passes=self.config.passes, scale_rule=self.config.act_scale_rule, accumulate=torch.float64
            )
        if self.bias is not None:
            y = y + self.bias.to(torch.float64)
        return y.reshape(*x.shape[:-1], self.out_features)

    @torch.no_grad()
    def tune(
        self, ms: tuple[int, ...] = (1, 8, 32, 128, 512, 2048), *, repeats: int = 3
    ) -> dict[int, dict[str, float]]:
        """Measure stacked vs split for each M (random activations) and keep the faster per M bucket.

        Both variants give bit-identical outputs; only speed differs. Returns ``{M: {"stacked": s, "split": s}}``.
        """
        if self.config.method == "dequant" or self.config.weight != "int8":
            raise ValueError("tune() applies to weight='int8', method='msd' layers")
        gen = torch.Generator().manual_seed(0)
        timings = {}
        for m in ms:
            x = torch.randn(m, self.in_features, generator=gen)
            profile = self.profile_for(m)
            t = time_stacking(x, self._int8[profile.kernel], self.config.passes, repeats=repeats, profile=profile)
            self._plan[_bucket(m)] = min(t, key=t.__getitem__)
            timings[m] = t
        return timings

    def _check_input(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"x must be a floating tensor, got dtype {x.dtype}")
        if x.device.type != "cpu":
            raise ValueError(f"MSDLinear runs on the CPU, got x on {x.device}")
        if x.dim() < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"x must have last dimension in_features={self.in_features}, got shape {tuple(x.shape)}")
        return x.reshape(-1, self.in_features)

    def _mx_forward(self, x32: torch.Tensor, profile: Int8Profile) -> torch.Tensor:
        from lowbit.msd import decompose

        m, n = x32.shape[0], self.out_features
        if m == 0:  # an MoE expert that received no tokens
            y0 = torch.zeros(0, n, dtype=torch.float32)
            return y0 if self.bias is None else y0 + self.bias
        packed, bw = self._mx[profile.kernel]
        d = decompose(x32, "mxfp4", passes=self.config.passes, group=MX_BLOCK, scale_rule=self.config.act_scale_rule)
        values = _pad_k(torch.cat(d.components, dim=0))
        scales = torch.cat(d.scales, dim=0)
        # activation bands within the profile's range: |c'| <= 96 (4 levels) for 8-bit, <= 48 (3 levels) for 7-bit
        levels = 4 if profile.qmax == FULL_QMAX else 3
        ints, a_scale = mx_bands(values, scales, MX_BLOCK, levels=levels)  # [Ba, p·M, Kp], [Ba, p·M]
        ba = ints.shape[0]
        a = encode_activations(ints.reshape(-1, ints.shape[-1]).to(torch.float32), profile)
        out = gemm_with_profile(a, packed, profile)  # [Ba·p·M, Bw·N]
        out = out.reshape(ba * self.config.passes, m, bw, n).sum(dim=2)
        a_scale = a_scale.reshape(ba * self.config.passes, m, 1)
        in_range = bool(((a_scale == 0) | ((a_scale >= 2.0**-126) & (a_scale <= 2.0**127))).all())
        acc = torch.float32 if in_range else torch.float64  # float32 scaling by a power of two is exact in range
        y = (out.to(acc) * a_scale.to(acc)).sum(dim=0).to(torch.float32)
        bad = ~torch.isfinite(torch.stack(d.scales)).all(dim=0).all(dim=-1)
        if bool(bad.any()):
            y[bad] = float("nan")
        if self.bias is not None:
            y = y + self.bias
        return y


def quantize_weight(weight: torch.Tensor, config: MSDConfig) -> dict[str, torch.Tensor]:
    """The buffers of an :class:`MSDLinear` for a float weight ``[N, K]`` (used by ``from_linear`` and the
    streaming ``lowbit quantize``): INT8 ``{"qweight", "weight_scale"}``, MXFP4 ``{"weight_codes",
    "weight_scale_exponents"}``. Rows are quantized independently, so any row chunking gives identical bytes.

    Raises:
        ValueError: NaN/Inf in the weight, values beyond float32's range, or a group size that does not divide K.
    """
    from lowbit import formats

    if weight.dim() != 2:
        raise ValueError(f"weight must be 2-D [N, K], got shape {tuple(weight.shape)}")
    if not bool(torch.isfinite(weight).all()):
        raise ValueError("weight contains NaN or Inf; it cannot be quantized")
    top = float(weight.abs().max()) if weight.numel() else 0.0
    if top > torch.finfo(torch.float32).max:
        raise ValueError(
            f"weight values reach {top:.3g}, beyond float32's range: the float32 scales (INT8 max|W|/127, MXFP4 "
            "E8M0 exponents) cannot represent them"
        )
    if config.weight == "int8":
        if config.group_size is None:
            wq = formats.quantize_int(weight, 8, "channel")
            return {"qweight": wq.q, "weight_scale": wq.scale.reshape(weight.shape[0], 1)}
        wq = formats.quantize_int(weight, 8, "group", group_size=config.group_size)
        return {"qweight": wq.q, "weight_scale": wq.scale.reshape(weight.shape[0], -1)}
    mx = formats.quantize_mx(weight, "e2m1", block=MX_BLOCK, axis=-1, scale_rule=config.weight_scale_rule, pad=True)
    return {"weight_codes": mx.codes, "weight_scale_exponents": mx.scale_exponents}


def quantized_shapes(n: int, k: int, config: MSDConfig) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Shape and dtype of each buffer :func:`quantize_weight` returns for an ``[n, k]`` weight."""
    if config.weight == "int8":
        groups = 1 if config.group_size is None else k // config.group_size
        return {"qweight": ((n, k), torch.int8), "weight_scale": ((n, groups), torch.float32)}
    kp = math.ceil(k / MX_BLOCK) * MX_BLOCK
    return {"weight_codes": ((n, kp // 2), torch.uint8), "weight_scale_exponents": ((n, kp // MX_BLOCK), torch.uint8)}


def _pad_k(t: torch.Tensor) -> torch.Tensor:
    pad = -t.shape[-1] % MX_BLOCK
    return nn.functional.pad(t, (0, pad)) if pad else t


def _bucket(m: int) -> int:
    return 1 << max(0, (m - 1).bit_length())


def _prepack_after_load(module: nn.Module, incompatible_keys: Any) -> None:
    if isinstance(module, MSDLinear):
        module.prepack()
