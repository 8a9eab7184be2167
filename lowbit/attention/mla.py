"""DeepSeek-V3 absorbed-MLA decode shapes and softmax scale (docs/methods/amla.md §5).

Absorbed decode attention is MQA with one latent KV head: Q is ``[B, 128, S_q, 512 + 64]``, K is the
latent cache (512) concatenated with the rope cache (64), and V is the same 512-d latent (the first 512
dims of K). The softmax scale is ``qk_head_dim^-0.5 · mscale²`` with
``mscale = 0.1 · mscale_arg · ln(rope_factor) + 1`` (deepseek-ai/DeepSeek-V3 ``inference/model.py``),
about 0.1352.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor


@dataclass(frozen=True)
class MLADecodeShape:
    """Absorbed-MLA decode attention sizes of one model (DeepSeek-V3 defaults)."""

    heads: int = 128
    kv_lora_rank: int = 512
    qk_rope_head_dim: int = 64
    qk_nope_head_dim: int = 128
    v_head_dim: int = 128
    rope_factor: float = 40.0
    mscale_arg: float = 1.0

    @property
    def dim_qk(self) -> int:
        """Query/key dim of the absorbed attention: latent + rope (576)."""
        return self.kv_lora_rank + self.qk_rope_head_dim

    @property
    def dim_v(self) -> int:
        """Value dim of the absorbed attention: the latent (512)."""
        return self.kv_lora_rank

    @property
    def softmax_scale(self) -> float:
        """``(qk_nope + qk_rope)^-0.5 · mscale²`` with ``mscale = 0.1·mscale_arg·ln(rope_factor) + 1``."""
        mscale = 0.1 * self.mscale_arg * math.log(self.rope_factor) + 1.0
        return (self.qk_nope_head_dim + self.qk_rope_head_dim) ** -0.5 * mscale * mscale

    def flops_per_key(self, seq_q: int = 1) -> int:
        """FLOPs per key for all heads: ``2·heads·seq_q·(dim_qk + dim_v)`` (amla.md §5)."""
        return 2 * self.heads * seq_q * (self.dim_qk + self.dim_v)


DEEPSEEK_V3_MLA = MLADecodeShape()

Pattern = Literal["gaussian", "ramp", "jump"]


def mla_decode_inputs(
    shape: MLADecodeShape,
    seq_k: int,
    *,
    seq_q: int = 1,
    batch: int = 1,
    pattern: Pattern = "ramp",
    seed: int = 0,
) -> tuple[Tensor, Tensor, Tensor]:
    """bf16-representable float32 ``(q, k, v)`` for absorbed MLA decode; ``v`` is a view of ``k[..., :512]``.

    Patterns of the running maximum (the thing AMLA's rescale follows):
    ``"gaussian"``: N(0,1) latent and rope, the max settles after a few blocks;
    ``"ramp"``: a score bias growing linearly by 12 (natural-log units) over the sequence, so the
    reference keeps moving (amla.md §6 uses such a ramp);
    ``"jump"``: a bias step of +25 halfway, a max jump above ``30·ln 2 ≈ 20.8`` in one block that trips the
    kernel's ``Δn >= -30`` clamp (amla.md §7 item 5).
    """
    if seq_k <= 0 or seq_q <= 0 or batch <= 0:
        raise ValueError(f"seq_k, seq_q and batch must be positive, got {seq_k}, {seq_q}, {batch}")
    if pattern not in ("gaussian", "ramp", "jump"):
        raise ValueError(f"pattern must be 'gaussian', 'ramp' or 'jump', got {pattern!r}")
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, shape.heads, seq_q, shape.dim_qk, generator=g)
    k = torch.randn(batch, 1, seq_k, shape.dim_qk, generator=g)
    pos = torch.arange(seq_k, dtype=torch.float32)
    if pattern == "ramp":
        bias = 12.0 * pos / max(seq_k - 1, 1)
    elif pattern == "jump":
        bias = torch.where(pos >= seq_k // 2, torch.tensor(25.0), torch.tensor(0.0))
    else:
        bias = torch.zeros(seq_k)
    # The score bias rides on the last rope dim: q[..., -1] = 1, k[..., -1] = bias / scale.
    q[..., -1] = 1.0
    k[..., -1] = bias / shape.softmax_scale
    q = q.to(torch.bfloat16).to(torch.float32)
    k = k.to(torch.bfloat16).to(torch.float32)
    return q, k, k[..., : shape.dim_v]
