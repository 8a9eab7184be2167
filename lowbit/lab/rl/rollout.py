"""The FP8 rollout engine of the AIS experiment: a fake-quantized weight copy that samples and records log μ.

Every Linear weight of the copy is fake-quantized (``docs/methods/ais.md`` §9)::

    s = amax / f_max        (per output channel = per row, or per tensor)
    q = fp8(x / s) · s      (round to nearest even, saturating; f_max = 448 for E4M3, 57344 for E5M2)

and, at the strongest doses, the input of every Linear is quantized the same way per token (dynamic
scales). The rounding is :func:`lowbit.formats.fp8_cast_native` (RNE, saturating). Embeddings and
LayerNorms stay in float32, as in FP8 serving engines. The copy is rebuilt from
the trainer's weights at every step (weight sync). Sampling is at temperature 1 over the full vocabulary
(no top-k/top-p: truncated supports bias every ratio, TRL #6789), and ``log μ`` of each sampled token is
recorded at sampling time.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from types import MappingProxyType

import torch

from lowbit.formats import ELEMENT_FORMATS, fp8_cast_native
from lowbit.lab.rl.model import GPT
from lowbit.lab.rl.task import EOS

__all__ = ["STRENGTHS", "QuantStrength", "Rollout", "fake_quant", "generate", "quantized_copy"]

_FP8 = ("e4m3", "e5m2")


@dataclass(frozen=True)
class QuantStrength:
    """A quantization dose: FP8 element (``e4m3``/``e5m2``), weight-scale granularity, activation quantization."""

    element: str = "e4m3"
    granularity: str = "channel"
    activations: bool = False

    def __post_init__(self) -> None:
        if self.element not in _FP8:
            raise ValueError(f"element must be one of {sorted(_FP8)}, got {self.element!r}")
        if self.granularity not in ("channel", "tensor"):
            raise ValueError(f"granularity must be 'channel' or 'tensor', got {self.granularity!r}")

    @property
    def name(self) -> str:
        return f"{self.element}-{self.granularity}" + ("-act" if self.activations else "")


#: Doses from mild to strong (docs/methods/ais.md §9 "Dose knob").
STRENGTHS: Mapping[str, QuantStrength] = MappingProxyType(
    {
        s.name: s
        for s in (
            QuantStrength("e4m3", "channel"),
            QuantStrength("e4m3", "tensor"),
            QuantStrength("e5m2", "channel"),
            QuantStrength("e5m2", "tensor"),
            QuantStrength("e4m3", "channel", activations=True),
            QuantStrength("e5m2", "channel", activations=True),
            QuantStrength("e5m2", "tensor", activations=True),
        )
    }
)


def fake_quant(x: torch.Tensor, element: str, *, dim: int | None) -> torch.Tensor:
    """``fp8(x/s)·s`` with ``s = amax/f_max`` taken over ``dim`` (kept) or the whole tensor (``dim=None``)."""
    if element not in _FP8:
        raise ValueError(f"element must be one of {sorted(_FP8)}, got {element!r}")
    fmax = ELEMENT_FORMATS[element].max_normal
    amax = x.abs().amax() if dim is None else x.abs().amax(dim=dim, keepdim=True)
    s = torch.where(amax > 0, amax / fmax, torch.ones_like(amax))
    # The fast path of lowbit.formats (torch's RNE cast, tested bit-exact against fp8_cast there and here).
    return fp8_cast_native(x / s, element, saturate=True).to(x.dtype) * s


@dataclass(frozen=True)
class Rollout:
    """A sampled batch: full sequences (B, P+R), responses (B, R), valid mask (B, R), log μ (B, R)."""

    sequences: torch.Tensor
    responses: torch.Tensor
    mask: torch.Tensor
    logp: torch.Tensor


def quantized_copy(model: GPT, strength: QuantStrength) -> GPT:
    """A detached copy of ``model`` with every Linear weight fake-quantized to FP8."""
    q = copy.deepcopy(model)
    with torch.no_grad():
        for mod in q.modules():
            if isinstance(mod, torch.nn.Linear):
                dim = 1 if strength.granularity == "channel" else None
                mod.weight.copy_(fake_quant(mod.weight, strength.element, dim=dim))
    q.requires_grad_(False)
    return q


@torch.no_grad()
def generate(
    model: GPT,
    prompts: torch.Tensor,
    max_new: int,
    generator: torch.Generator,
    *,
    strength: QuantStrength | None = None,
    greedy: bool = False,
) -> Rollout:
    """Sample ``max_new`` tokens after ``prompts`` at temperature 1 (or greedily); stop each row at EOS.

    With ``strength.activations`` every Linear input is fake-quantized per token. Tokens after a row's EOS
    are set to EOS and masked out; ``logp`` holds log μ of each sampled token (0 where masked).
    """
    act = partial(fake_quant, element=strength.element, dim=-1) if strength and strength.activations else None
    seq = prompts
    b = prompts.shape[0]
    done = torch.zeros(b, dtype=torch.bool)
    toks, logps, masks = [], [], []
    for _ in range(max_new):
        logits = model(seq, act_quant=act)[:, -1].float()
        logprobs = torch.log_softmax(logits, dim=-1)
        if greedy:
            nxt = logprobs.argmax(-1)
        else:
            nxt = torch.multinomial(logprobs.exp(), 1, generator=generator).squeeze(-1)
        lp = logprobs.gather(-1, nxt.unsqueeze(-1)).squeeze(-1)
        nxt = torch.where(done, torch.full_like(nxt, EOS), nxt)
        masks.append(~done)
        logps.append(torch.where(done, torch.zeros_like(lp), lp))
        toks.append(nxt)
        done = done | (nxt == EOS)
        seq = torch.cat([seq, nxt.unsqueeze(-1)], dim=1)
    return Rollout(seq, torch.stack(toks, 1), torch.stack(masks, 1), torch.stack(logps, 1))
