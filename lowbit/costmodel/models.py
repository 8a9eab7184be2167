"""Named model shapes for the cost tables (written here from the models' public configs; no downloads).

* Llama-3-8B (meta-llama/Meta-Llama-3-8B ``config.json``): hidden 4096, intermediate 14336, 32 layers,
  32 query heads, 8 KV heads, head dim 128.
* Qwen3-8B (Qwen/Qwen3-8B ``config.json``): hidden 4096, intermediate 12288, 36 layers, 32 query heads,
  8 KV heads, head dim 128.
* DeepSeek-V3 (deepseek-ai/DeepSeek-V3 ``config.json``): hidden 7168, 61 layers (3 dense, 58 MoE), MLA with
  ``q_lora_rank`` 1536, ``kv_lora_rank`` 512, 128 heads, ``qk_nope`` 128, ``qk_rope`` 64, ``v_head`` 128;
  MoE with 256 routed experts (top 8, intermediate 2048) and one shared expert; dense FFN 18432. The tables
  use one MoE layer. Decode attention is the absorbed MLA (one latent KV head, 576/512 dims,
  docs/methods/amla.md §5).

Routed experts: with ``M`` tokens and top-``k`` routing over ``E`` experts, [inferred] uniform routing
activates ``min(E, M·k)`` experts with ``ceil(M·k / active)`` tokens each.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lowbit.costmodel.kvcache import DecodeAttentionShape


@dataclass(frozen=True)
class LinearShape:
    """One weight matrix ``K × N`` of a layer, ``count`` times per layer; ``routed`` for MoE experts."""

    name: str
    k: int
    n: int
    count: int = 1
    routed: bool = False


@dataclass(frozen=True)
class ModelShape:
    """The linear layers of one transformer layer and its decode attention."""

    name: str
    layers: int
    linears: tuple[LinearShape, ...]
    attention: DecodeAttentionShape
    experts: int = 0
    top_k: int = 0

    def linears_at(self, m: int) -> list[tuple[LinearShape, int, int]]:
        """``(shape, m_per_matrix, matrices)`` for ``m`` tokens; routed experts use uniform routing [inferred]."""
        if isinstance(m, bool) or not isinstance(m, int) or m <= 0:
            raise ValueError(f"m must be a positive integer, got {m!r}")
        out = []
        for lin in self.linears:
            if lin.routed:
                active = min(self.experts, m * self.top_k)
                out.append((lin, math.ceil(m * self.top_k / active), active * lin.count))
            else:
                out.append((lin, m, lin.count))
        return out


_LLAMA_ATTN = DecodeAttentionShape("GQA 32/8 x128", heads_q=32, heads_kv=8, dim_qk=128, dim_v=128)

MODELS: dict[str, ModelShape] = {
    "llama-3-8b": ModelShape(
        name="llama-3-8b",
        layers=32,
        linears=(
            LinearShape("q_proj", 4096, 4096),
            LinearShape("k_proj", 4096, 1024),
            LinearShape("v_proj", 4096, 1024),
            LinearShape("o_proj", 4096, 4096),
            LinearShape("gate/up_proj", 4096, 14336, count=2),
            LinearShape("down_proj", 14336, 4096),
        ),
        attention=_LLAMA_ATTN,
    ),
    "qwen3-8b": ModelShape(
        name="qwen3-8b",
        layers=36,
        linears=(
            LinearShape("q_proj", 4096, 4096),
            LinearShape("k_proj", 4096, 1024),
            LinearShape("v_proj", 4096, 1024),
            LinearShape("o_proj", 4096, 4096),
            LinearShape("gate/up_proj", 4096, 12288, count=2),
            LinearShape("down_proj", 12288, 4096),
        ),
        attention=_LLAMA_ATTN,
    ),
    "deepseek-v3": ModelShape(
        name="deepseek-v3",
        layers=61,
        linears=(
            LinearShape("q_a_proj", 7168, 1536),
            LinearShape("q_b_proj", 1536, 128 * 192),
            LinearShape("kv_a_proj_with_mqa", 7168, 512 + 64),
            LinearShape("kv_b_proj (absorbed W_UK, W_UV)", 512, 128 * 256),
            LinearShape("o_proj", 128 * 128, 7168),
            LinearShape("shared expert gate/up", 7168, 2048, count=2),
            LinearShape("shared expert down", 2048, 7168),
            LinearShape("routed expert gate/up", 7168, 2048, count=2, routed=True),
            LinearShape("routed expert down", 2048, 7168, routed=True),
        ),
        attention=DecodeAttentionShape("absorbed MLA 128/1 576/512", 128, 1, 576, 512, shared_kv=True),
        experts=256,
        top_k=8,
    ),
}


def get_model(name: str) -> ModelShape:
    """A model shape by name (``llama-3-8b``, ``qwen3-8b``, ``deepseek-v3``)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {sorted(MODELS)}")
    return MODELS[name]
