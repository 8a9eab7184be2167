"""A tiny decoder-only GPT for the AIS experiment, in the spirit of nanoGPT (pre-LN, learned positions).

Every Linear goes through :meth:`GPT.linear`, which applies an optional activation quantizer to its
input: that is how the FP8 rollout copy fake-quantizes activations (:mod:`lowbit.lab.rl.rollout`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GPT", "GPTConfig"]

ActQuant = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class GPTConfig:
    """Model size; the defaults give about 0.1M parameters."""

    vocab_size: int = 13
    block_size: int = 16
    n_layer: int = 2
    n_head: int = 4
    d_model: int = 64

    def __post_init__(self) -> None:
        if self.d_model % self.n_head:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_head ({self.n_head})")
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "d_model"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


class _Block(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.fc = nn.Linear(cfg.d_model, 4 * cfg.d_model)
        self.out = nn.Linear(4 * cfg.d_model, cfg.d_model)
        self.n_head = cfg.n_head


class GPT(nn.Module):
    """Token + position embeddings, ``n_layer`` pre-LN blocks, final LayerNorm, untied LM head."""

    def __init__(self, cfg: GPTConfig, *, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos = nn.Embedding(cfg.block_size, cfg.d_model)
        self.blocks = nn.ModuleList(_Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size)
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02 / (2 * cfg.n_layer) ** 0.5 if name.endswith(("proj.weight", "out.weight")) else 0.02
                nn.init.normal_(p, 0.0, std, generator=generator)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    @staticmethod
    def linear(layer: nn.Linear, x: torch.Tensor, act_quant: ActQuant | None) -> torch.Tensor:
        """``layer(x)`` with the input passed through ``act_quant`` first (when given)."""
        return F.linear(x if act_quant is None else act_quant(x), layer.weight, layer.bias)

    def forward(self, idx: torch.Tensor, *, act_quant: ActQuant | None = None) -> torch.Tensor:
        """Logits (B, T, vocab) for token ids ``idx`` (B, T), T <= block_size."""
        b, t = idx.shape
        if t > self.cfg.block_size:
            raise ValueError(f"sequence length {t} exceeds block_size {self.cfg.block_size}")
        x = self.tok(idx) + self.pos(torch.arange(t, device=idx.device))
        for blk in self.blocks:
            h = blk.ln1(x)
            q, k, v = self.linear(blk.qkv, h, act_quant).split(self.cfg.d_model, dim=-1)
            hd = self.cfg.d_model // blk.n_head
            q, k, v = (z.view(b, t, blk.n_head, hd).transpose(1, 2) for z in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, -1)
            x = x + self.linear(blk.proj, y, act_quant)
            h = F.gelu(self.linear(blk.fc, blk.ln2(x), act_quant))
            x = x + self.linear(blk.out, h, act_quant)
        return self.linear(self.head, self.ln_f(x), act_quant)
