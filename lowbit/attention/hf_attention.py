"""``use_msd_attention(model)``: lowbit's MSD attention over INT8 K/V as a transformers attention implementation.

It registers :func:`msd_attention_forward` under :data:`ATTENTION_NAME` with ``transformers.AttentionInterface``
**and** transformers' ``sdpa_mask`` under the same name with ``transformers.masking_utils.AttentionMaskInterface``
(without a mask function for the name, transformers builds no mask at all and padding is silently attended), then
switches the model with ``model.set_attn_implementation``.

With an :class:`~lowbit.attention.hf_cache.Int8KVCache`, ``cache.update`` hands the attention the INT8 views and
:func:`~lowbit.attention.msd_kv_attention.int8_kv_attention` reads the codes directly. Without it (``use_cache=False``
or another cache) the float K/V of the call are quantized per token with the same rule and the same kernel runs,
so a model gives the same numbers whichever cache fed it.

Masks: transformers' boolean ``[B, 1, Lq, S]`` mask (True: attend), or None, which means causal (as ``sdpa``:
when ``Lq > 1`` and the module is causal) with the queries aligned to the end of the keys. Fully masked query rows
(left padding) return 0. The NaN policy is that of :mod:`lowbit.attention.msd_kv_attention` (per row).

<!-- the example builds a 1-layer random Llama offline -->
>>> import torch
>>> from transformers import AutoModelForCausalLM, LlamaConfig
>>> from lowbit.attention.hf_cache import Int8KVCache
>>> cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4,
...                   num_key_value_heads=2, vocab_size=100)
>>> model = AutoModelForCausalLM.from_config(cfg).eval()
>>> _ = use_msd_attention(model)
>>> model.config._attn_implementation
'lowbit_msd'
>>> out = model.generate(torch.tensor([[1, 2, 3]]), past_key_values=Int8KVCache(model.config),
...                      max_new_tokens=2, do_sample=False)
>>> tuple(out.shape)
(1, 5)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lowbit.attention.hf_cache import Int8Keys, Int8Values
from lowbit.attention.int8_codes import quantize_rows
from lowbit.attention.int8_gemm import GemmBackend, resolve_backend
from lowbit.attention.msd_kv_attention import int8_kv_attention

__all__ = ["ATTENTION_NAME", "MSDAttentionConfig", "msd_attention_forward", "use_msd_attention"]

ATTENTION_NAME = "lowbit_msd"
_CONFIG_ATTR = "lowbit_msd_attention"


@dataclass(frozen=True)
class MSDAttentionConfig:
    """How the MSD attention runs.

    Attributes:
        passes: MSD components for Q and for the probabilities (2: ``<= M/64516`` per element, msd.md §3).
        gemm: ``"auto"`` (``torch._int_mm`` where :mod:`lowbit.msd.isa` verifies it exact, else exact float32
            chunks), ``"int_mm"`` (raise where it is not exact) or ``"float-chunks"``.
        query_block: query positions per tile in prefill.
    """

    passes: int = 2
    gemm: GemmBackend = "auto"
    query_block: int = 128

    def __post_init__(self) -> None:
        for name in ("passes", "query_block"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        resolve_backend(self.gemm)  # validates the name (and raises for 'int_mm' where it is not exact)


_DEFAULT = MSDAttentionConfig()


def _as_int8(key: Any, value: Any) -> tuple[Int8Keys, Int8Values]:
    if isinstance(key, Int8Keys) and isinstance(value, Int8Values):
        return key, value
    if isinstance(key, Tensor) and isinstance(value, Tensor):
        for name, t in (("key", key), ("value", value)):
            if not t.is_floating_point():
                raise TypeError(f"{name} must be a floating-point tensor, got {t.dtype}")
        kc, ks = quantize_rows(key)
        vc, vs = quantize_rows(value)
        bad = bool(torch.isnan(ks).any()) or bool(torch.isnan(vs).any())
        return Int8Keys(kc, ks, "token", 1, None, bad), Int8Values(vc, vs, bad)
    raise TypeError(
        f"msd attention needs Int8KVCache views or float tensors for key/value, got {type(key).__name__} and "
        f"{type(value).__name__}"
    )


def msd_attention_forward(
    module: nn.Module,
    query: Tensor,
    key: Int8Keys | Tensor,
    value: Int8Values | Tensor,
    attention_mask: Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[Tensor, None]:
    """The transformers attention-function signature: returns ``([B, Lq, Hq, Dv] in query's dtype, None)``.

    Raises on non-float queries and on dropout > 0 (inference only).
    """
    if not isinstance(query, Tensor) or not query.is_floating_point():
        raise TypeError(f"query must be a floating-point tensor, got {getattr(query, 'dtype', type(query).__name__)}")
    if dropout:
        raise ValueError(f"the MSD attention is for inference; dropout must be 0, got {dropout}")
    cfg: MSDAttentionConfig = getattr(module, _CONFIG_ATTR, None) or _DEFAULT
    keys, values = _as_int8(key, value)
    scale = float(scaling) if scaling is not None else query.shape[-1] ** -0.5
    is_causal = kwargs.get("is_causal")
    causal = bool(getattr(module, "is_causal", True) if is_causal is None else is_causal) and query.shape[2] > 1
    out = int8_kv_attention(
        query,
        keys,
        values,
        scale=scale,
        mask=attention_mask,
        causal=causal,
        passes=cfg.passes,
        backend=resolve_backend(cfg.gemm),
        query_block=cfg.query_block,
    )
    return out.to(query.dtype).transpose(1, 2).contiguous(), None


def use_msd_attention(model: nn.Module, config: MSDAttentionConfig | None = None) -> nn.Module:
    """Register the MSD attention and its mask function under ``"lowbit_msd"`` and switch ``model`` to it.

    ``config`` is stored on the model's attention modules (those with a ``layer_idx``), so two models can use
    different settings. Returns ``model``.
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    if not hasattr(model, "set_attn_implementation"):
        raise TypeError(f"use_msd_attention needs a transformers PreTrainedModel, got {type(model).__name__}")
    cfg = config or _DEFAULT
    AttentionInterface.register(ATTENTION_NAME, msd_attention_forward)
    AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)
    model.set_attn_implementation(ATTENTION_NAME)
    if model.config._attn_implementation != ATTENTION_NAME:
        raise RuntimeError(
            f"{type(model).__name__} did not switch to {ATTENTION_NAME!r} (it uses "
            f"{model.config._attn_implementation!r}); it may not support the AttentionInterface"
        )
    for m in model.modules():
        if hasattr(m, "layer_idx") and hasattr(m, "head_dim"):
            setattr(m, _CONFIG_ATTR, cfg)
    return model
