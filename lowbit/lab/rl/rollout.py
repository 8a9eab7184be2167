"""The FP8 rollout engine of the AIS experiment: a fake-quantized weight copy that samples and records log μ.

Every Linear weight of the copy is fake-quantized (``docs/methods/ais.md`` §9)::

    s = amax / f_max        (per output channel = per row, or per tensor)
    q = fp8(x / s) · s      (round to nearest even, saturating; f_max = 448 for E4M3, 57344 for E5M2)

and, at the strongest doses, the input of every Linear is quantized the same way per token (dynamic
scales). The quantizer is the library's (:mod:`lowbit.rl.rollout_precision`, shared with
``lowbit.rl.trl.GRPOTrainer``); this module applies it to the lab's GPT. Embeddings and
LayerNorms stay in float32, as in FP8 serving engines. The copy is rebuilt from
the trainer's weights at every step (weight sync). Sampling is at temperature 1 over the full vocabulary
(no top-k/top-p: truncated supports bias every ratio, TRL #6789), and ``log μ`` of each sampled token is
recorded at sampling time.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import partial

import torch

from lowbit.lab.rl.model import GPT
from lowbit.lab.rl.task import EOS
from lowbit.rl.rollout_precision import PRECISIONS, fake_quant
from lowbit.rl.rollout_precision import RolloutPrecision as QuantStrength

__all__ = ["STRENGTHS", "QuantStrength", "Rollout", "fake_quant", "generate", "quantized_copy"]

#: Doses from mild to strong (docs/methods/ais.md §9 "Dose knob"); the library's table of rollout precisions.
STRENGTHS = PRECISIONS


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
