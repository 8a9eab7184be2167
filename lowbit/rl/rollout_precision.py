"""FP8 fake-quantized rollout engines: the quantizer behind ``lowbit rl`` and ``lowbit.rl.trl.GRPOTrainer``.

A rollout engine at precision p is the policy with every ``nn.Linear`` weight fake-quantized
(``docs/methods/ais.md`` §9)::

    s = amax / f_max        (per output channel = per row, or per tensor)
    q = fp8(x / s) · s      (round to nearest even, saturating; f_max = 448 for E4M3, 57344 for E5M2)

and, with ``activations=True``, the input of every Linear quantized the same way per token (dynamic scales).
The rounding is :func:`lowbit.formats.fp8_cast_native`. Embeddings and norms stay in their own precision, as
in FP8 serving engines.

:func:`fake_quantized` applies this to any ``torch.nn.Module`` for the duration of a ``with`` block by
*rebinding* each Linear's ``weight`` to a quantized tensor (the original Parameter objects are put back on
exit, bit for bit; nothing is modified in place, so a weight tied to an embedding is not touched and the
optimizer state is unaffected).

>>> import torch
>>> lin = torch.nn.Linear(4, 2, bias=False)
>>> with torch.no_grad():
...     _ = lin.weight.copy_(torch.tensor([[1.0, 0.3, -0.07, 2.0], [0.5, 0.25, 0.125, 0.0625]]))
>>> w = lin.weight
>>> with fake_quantized(lin, "fp8-e5m2"):
...     [round(v, 4) for v in lin.weight[0].tolist()]  # E5M2 keeps 2 mantissa bits
[1.0, 0.2857, -0.0714, 2.0]
>>> lin.weight is w
True
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from types import MappingProxyType

import torch

from lowbit.formats import ELEMENT_FORMATS, fp8_cast_native

__all__ = ["PRECISIONS", "RolloutPrecision", "fake_quant", "fake_quantized", "parse_rollout_precision"]

_FP8 = ("e4m3", "e5m2")


@dataclass(frozen=True)
class RolloutPrecision:
    """A rollout precision (a quantization dose): FP8 element (``e4m3``/``e5m2``), weight-scale granularity
    (``channel`` = one scale per output row, ``tensor``), and whether Linear inputs are quantized per token."""

    element: str = "e4m3"
    granularity: str = "channel"
    activations: bool = False

    def __post_init__(self) -> None:
        if self.element not in _FP8:
            raise ValueError(f"element must be one of {sorted(_FP8)}, got {self.element!r}")
        if self.granularity not in ("channel", "tensor"):
            raise ValueError(f"granularity must be 'channel' or 'tensor', got {self.granularity!r}")
        if not isinstance(self.activations, bool):
            raise TypeError(f"activations must be a bool, got {type(self.activations).__name__}")

    @property
    def name(self) -> str:
        """``<element>-<granularity>[-act]``, e.g. ``e5m2-tensor-act`` (the keys of :data:`PRECISIONS`)."""
        return f"{self.element}-{self.granularity}" + ("-act" if self.activations else "")


#: The doses of ``lowbit rl`` from mild to strong (docs/methods/ais.md §9 "Dose knob"), by name.
PRECISIONS: Mapping[str, RolloutPrecision] = MappingProxyType(
    {
        s.name: s
        for s in (
            RolloutPrecision("e4m3", "channel"),
            RolloutPrecision("e4m3", "tensor"),
            RolloutPrecision("e5m2", "channel"),
            RolloutPrecision("e5m2", "tensor"),
            RolloutPrecision("e4m3", "channel", activations=True),
            RolloutPrecision("e5m2", "channel", activations=True),
            RolloutPrecision("e5m2", "tensor", activations=True),
        )
    }
)


def parse_rollout_precision(spec: str | RolloutPrecision | None) -> RolloutPrecision | None:
    """``None``, a :class:`RolloutPrecision`, ``"fp8-e4m3"`` / ``"fp8-e5m2"`` (per-channel weights, no
    activation quantization, as FP8 serving engines do) or a dose name of :data:`PRECISIONS`.

    >>> parse_rollout_precision("fp8-e5m2").name, parse_rollout_precision("e5m2-tensor-act").activations
    ('e5m2-channel', True)
    """
    if spec is None or isinstance(spec, RolloutPrecision):
        return spec
    if isinstance(spec, str):
        if spec in ("fp8-e4m3", "fp8-e5m2"):
            return RolloutPrecision(spec.removeprefix("fp8-"), "channel")
        if spec in PRECISIONS:
            return PRECISIONS[spec]
    raise ValueError(
        f"rollout_precision must be None, a RolloutPrecision, 'fp8-e4m3', 'fp8-e5m2' or one of {sorted(PRECISIONS)}, "
        f"got {spec!r}"
    )


def fake_quant(x: torch.Tensor, element: str, *, dim: int | None) -> torch.Tensor:
    """``fp8(x/s)·s`` with ``s = amax/f_max`` taken over ``dim`` (kept) or the whole tensor (``dim=None``).

    >>> fake_quant(torch.tensor([1.0, 0.3, 448.0]), "e4m3", dim=None).tolist()
    [1.0, 0.3125, 448.0]
    """
    if element not in _FP8:
        raise ValueError(f"element must be one of {sorted(_FP8)}, got {element!r}")
    fmax = ELEMENT_FORMATS[element].max_normal
    amax = x.abs().amax() if dim is None else x.abs().amax(dim=dim, keepdim=True)
    s = torch.where(amax > 0, amax / fmax, torch.ones_like(amax))
    # The fast path of lowbit.formats (torch's RNE cast, tested bit-exact against fp8_cast there).
    return fp8_cast_native(x / s, element, saturate=True).to(x.dtype) * s


@contextmanager
def fake_quantized(
    model: torch.nn.Module, precision: str | RolloutPrecision, *, generation_only: bool = True
) -> Iterator[torch.nn.Module]:
    """Within the block, ``model`` runs as the FP8 rollout engine of ``precision``; on exit it is restored.

    Every ``nn.Linear`` (also the LM head) gets ``weight`` rebound to a detached fake-quantized tensor; with
    ``precision.activations`` a forward pre-hook fake-quantizes its input per token (last dimension). The
    original Parameter objects are put back and the hooks removed on exit, even after an exception.
    ``generation_only`` (default) runs the block under ``torch.no_grad()``: the engine only samples.
    """
    p = parse_rollout_precision(precision)
    if p is None:
        raise ValueError("fake_quantized needs a precision, got None")
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    originals = [m.weight for m in linears]
    dim = 1 if p.granularity == "channel" else None
    hooks = []
    try:
        with torch.no_grad():
            for m, w in zip(linears, originals, strict=True):
                q = fake_quant(w.detach(), p.element, dim=dim)
                m.weight = torch.nn.Parameter(q, requires_grad=False)
        if p.activations:

            def quantize_input(_module: torch.nn.Module, args: tuple) -> tuple:
                x, *rest = args
                return (fake_quant(x, p.element, dim=-1), *rest)

            hooks = [m.register_forward_pre_hook(quantize_input) for m in linears]
        if generation_only:
            with torch.no_grad():
                yield model
        else:
            yield model
    finally:
        for h in hooks:
            h.remove()
        for m, w in zip(linears, originals, strict=True):
            m.weight = w
