"""``Int8KVCache``: a ``transformers.Cache`` that stores K and V as INT8 codes and float32 scales, never a float copy.

Each layer (:class:`Int8KVLayer`, a ``transformers.cache_utils.CacheLayerMixin``) quantizes the float K/V that
``update`` receives once, appends the codes to pre-allocated int8 storage (grown geometrically, by
:attr:`Int8KVConfig.growth`, so appending is amortized O(1)) and never re-quantizes an old token. ``update``
returns :class:`Int8Keys` / :class:`Int8Values` views of the codes, which the attention registered by
:func:`lowbit.attention.use_msd_attention` reads without dequantizing them.

Granularity (:class:`Int8KVConfig`):

* V: per token, ``v[j, :] ≈ s_v[j]·q_v[j, :]`` with ``s = max|v[j]|/127``
  (:func:`lowbit.attention.int8_codes.quantize_rows`).
* K, ``k_granularity="token"`` (default): the same, one scale per token.
* K, ``k_granularity="channel"``: one scale per channel per block of ``k_block`` tokens (KIVI-style keys: an
  outlier channel gets its own scale). A block is quantized once, when its ``k_block``-th token arrives; the
  tokens of the unfinished block (fewer than ``k_block``, KIVI's residual) are held in float32 until then.
  That residual is the only float data the cache holds (at most ``k_block - 1`` tokens per head); cropping
  into a quantized block is not supported in this mode.

Storage per token and KV head: ``d_k + d_v`` code bytes and 8 scale bytes (token/token), so the cache is
``(d + 4)/(4d)`` of a float32 cache: 0.266 at ``d = 64``, 0.258 at ``d = 128``. :attr:`Int8KVCache.nbytes` counts
the allocated storage (codes, scales and residual, including the grown capacity);
:attr:`Int8KVCache.stored_nbytes` counts only the stored tokens.

Bad input raises: non-float or mismatched K/V, head counts or head dims other than the config's, an empty batch,
a batch size that changes, a ``layer_idx`` outside the config's layers, or more tokens than
``max_position_embeddings``. NaN/Inf in K or V is stored as a NaN scale for that token (the policy in
:mod:`lowbit.attention.hf_attention`: it propagates to the rows of that sequence that attend the token).

>>> from transformers import LlamaConfig
>>> cfg = LlamaConfig(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=1)
>>> cache = Int8KVCache(cfg)
>>> keys, values = cache.update(torch.randn(1, 2, 5, 16), torch.randn(1, 2, 5, 16), 0)
>>> cache.get_seq_length(), keys.codes.dtype, tuple(keys.codes.shape)
(5, torch.int8, (1, 2, 5, 16))
>>> cache.stored_nbytes  # 2 heads * 5 tokens * (16 + 16 code bytes + 2 * 4 scale bytes)
400
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from lowbit.attention.int8_codes import quantize_rows

try:  # the hf extra; the module imports without it so that doctest collection and `import lowbit.attention` work
    from transformers.cache_utils import Cache, CacheLayerMixin, get_layer_types_and_kwargs

    _TRANSFORMERS_ERROR: str | None = None
except ModuleNotFoundError as exc:  # pragma: no cover - exercised by tests/test_docs_snippets.py
    Cache = CacheLayerMixin = object  # type: ignore[assignment,misc]
    _TRANSFORMERS_ERROR = f"Int8KVCache needs transformers (pip install 'lowbit[hf]'): {exc}"

__all__ = ["Int8KVCache", "Int8KVConfig", "Int8KVLayer", "Int8Keys", "Int8Values"]

KGranularity = Literal["token", "channel"]
_HINT = "run lowbit.attention.use_msd_attention(model) so the model's attention reads INT8 K/V"


@dataclass(frozen=True)
class Int8KVConfig:
    """How :class:`Int8KVCache` quantizes and stores K/V.

    Attributes:
        k_granularity: ``"token"`` (one scale per key token) or ``"channel"`` (one scale per channel per
            ``k_block`` tokens, with a float residual for the unfinished block).
        k_block: tokens per key block in ``"channel"`` mode.
        reserve: tokens allocated beyond the first ``update`` (room for decoding without a copy).
        growth: capacity factor when the storage is full (geometric growth, > 1). The default 1.125 keeps the
            allocated bytes within 12.5% of the stored ones (<= 0.30x float32 at head dims 64 and 128) for about
            nine copies of the cache over a whole generation.
    """

    k_granularity: KGranularity = "token"
    k_block: int = 128
    reserve: int = 64
    growth: float = 1.125

    def __post_init__(self) -> None:
        if self.k_granularity not in ("token", "channel"):
            raise ValueError(f"k_granularity must be 'token' or 'channel', got {self.k_granularity!r}")
        if isinstance(self.k_block, bool) or not isinstance(self.k_block, int) or self.k_block < 1:
            raise ValueError(f"k_block must be an integer >= 1, got {self.k_block!r}")
        if isinstance(self.reserve, bool) or not isinstance(self.reserve, int) or self.reserve < 0:
            raise ValueError(f"reserve must be an integer >= 0, got {self.reserve!r}")
        if not self.growth > 1.0:
            raise ValueError(f"growth must be > 1, got {self.growth!r}")


class _NotATensor:
    """Guards the views against code that expects float K/V tensors (e.g. the ``sdpa`` attention)."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise AttributeError(
            f"{type(self).__name__} holds INT8 codes from Int8KVCache, not a float tensor (asked for .{name}); {_HINT}"
        )

    def __getitem__(self, item: Any) -> Any:
        raise TypeError(f"{type(self).__name__} holds INT8 codes from Int8KVCache, not a float tensor; {_HINT}")

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        raise TypeError(f"{getattr(func, '__name__', func)} got {cls.__name__} from Int8KVCache; {_HINT}")


@dataclass(frozen=True, eq=False)
class Int8Keys(_NotATensor):
    """The keys of one layer, ``[batch, heads_kv, seq, head_dim]`` as codes (views of the cache storage).

    Attributes:
        codes: int8 ``[b, h, n_q, d]``: the quantized tokens (all of them in ``"token"`` mode; the full blocks in
            ``"channel"`` mode).
        scales: float32, ``[b, h, n_q]`` (token) or ``[b, h, n_q / block, d]`` (channel).
        granularity: ``"token"`` or ``"channel"``.
        block: tokens per scale block (channel mode; 1 in token mode).
        residual: float32 ``[b, h, r, d]`` tokens of the unfinished block (channel mode), else None.
        has_nonfinite: some stored token held NaN/Inf (its scale is NaN).
    """

    codes: Tensor
    scales: Tensor
    granularity: str
    block: int
    residual: Tensor | None
    has_nonfinite: bool

    @property
    def seq_len(self) -> int:
        """Tokens held (quantized plus residual)."""
        return self.codes.shape[2] + (0 if self.residual is None else self.residual.shape[2])


@dataclass(frozen=True, eq=False)
class Int8Values(_NotATensor):
    """The values of one layer: int8 ``codes [b, h, seq, d_v]`` and float32 per-token ``scales [b, h, seq]``."""

    codes: Tensor
    scales: Tensor
    has_nonfinite: bool

    @property
    def seq_len(self) -> int:
        """Tokens held."""
        return self.codes.shape[2]


def _check_states(name: str, t: Any, heads: int, head_dim: int | None) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor (the cache quantizes float K/V), got {t.dtype}")
    if t.dim() != 4:
        raise ValueError(f"{name} must be [batch, heads_kv, seq, head_dim], got shape {tuple(t.shape)}")
    if t.shape[0] == 0:
        raise ValueError(f"{name} has an empty batch (batch size 0)")
    if t.shape[1] != heads:
        raise ValueError(
            f"{name} has {t.shape[1]} KV heads but the cache was built for a config with num_key_value_heads={heads}"
        )
    if head_dim is not None and t.shape[3] != head_dim:
        raise ValueError(f"{name} has head dim {t.shape[3]} but the cache was built for head_dim={head_dim}")


class Int8KVLayer(CacheLayerMixin):
    """One attention layer's INT8 K/V (see the module docstring)."""

    is_sliding = False

    def __init__(
        self, num_kv_heads: int, head_dim: int, max_positions: int | None, config: Int8KVConfig | None = None
    ) -> None:
        if _TRANSFORMERS_ERROR is not None:
            raise ImportError(_TRANSFORMERS_ERROR)
        super().__init__()
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.max_positions = max_positions
        self.config = config or Int8KVConfig()
        self.is_croppable = self.config.k_granularity == "token"
        self._clear()

    def _clear(self) -> None:
        self.length = 0  # tokens held (quantized + residual)
        self.batch: int | None = None
        self.v_dim: int | None = None
        self.k_codes = self.k_scales = self.v_codes = self.v_scales = None
        self.k_residual: Tensor | None = None
        self.n_quantized_k = 0  # key tokens in k_codes (channel mode: full blocks only)
        self.has_nonfinite = False
        self.is_initialized = False

    # -- transformers hooks ------------------------------------------------------------------------------------
    def lazy_initialization(self, key_states: Tensor, value_states: Tensor) -> None:
        """Record batch size, dims, dtype and device (storage is allocated by the first append)."""
        self.dtype, self.device = key_states.dtype, key_states.device
        self.batch = key_states.shape[0]
        self.v_dim = value_states.shape[-1]
        self.is_initialized = True

    def update(
        self, key_states: Tensor, value_states: Tensor, *args: Any, **kwargs: Any
    ) -> tuple[Int8Keys, Int8Values]:
        """Quantize the new float K/V ``[b, h_kv, n, d]`` once, append them, return views of all stored codes."""
        _check_states("key_states", key_states, self.num_kv_heads, self.head_dim)
        _check_states("value_states", value_states, self.num_kv_heads, self.v_dim)
        if key_states.shape[:3] != value_states.shape[:3]:
            raise ValueError(
                f"key_states {tuple(key_states.shape)} and value_states {tuple(value_states.shape)} differ in "
                "batch, heads or sequence length"
            )
        if self.batch is not None and self.length > 0 and key_states.shape[0] != self.batch:
            raise ValueError(f"batch size changed from {self.batch} to {key_states.shape[0]} within one cache")
        n = key_states.shape[2]
        if self.max_positions is not None and self.length + n > self.max_positions:
            raise ValueError(
                f"sequence of {self.length + n} tokens exceeds max_position_embeddings={self.max_positions} of the "
                "config the cache was built for"
            )
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self.batch = key_states.shape[0]
        if n > 0:
            self._append(key_states, value_states)
        return self.views()

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        """``(kv_length, kv_offset)`` for the mask: the stored tokens plus the query, from position 0."""
        return self.length + query_length, 0

    def get_seq_length(self) -> int:
        """Tokens held."""
        return self.length

    def get_max_length(self) -> int:
        """-1: the cache grows (bounded only by ``max_position_embeddings``)."""
        return -1

    def reset(self) -> None:
        """Drop every stored token."""
        self._clear()

    def offload(self) -> None:
        """Move the storage to the CPU."""
        self._move(torch.device("cpu"))

    def prefetch(self) -> None:
        """Move the storage back to the layer's device."""
        if self.is_initialized:
            self._move(self.device)

    def crop(self, tokens_to_remove: int) -> None:
        """Remove ``-tokens_to_remove`` tokens from the end (transformers' convention: a negative count)."""
        if tokens_to_remove > 0:
            raise ValueError(f"crop takes a negative number of tokens to remove, got {tokens_to_remove}")
        drop = min(-tokens_to_remove, self.length)
        if drop == 0:
            return
        if self.config.k_granularity == "channel":
            residual = 0 if self.k_residual is None else self.k_residual.shape[2]
            if drop > residual:
                raise NotImplementedError(
                    "Int8KVCache with per-channel keys cannot crop into a quantized key block "
                    f"(k_block={self.config.k_block}); use k_granularity='token' for cropping"
                )
            self.k_residual = self.k_residual[:, :, : residual - drop]
        else:
            self.n_quantized_k -= drop
        self.length -= drop

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Reorder the batch for beam search (the codes move; nothing is re-quantized)."""
        self._select(lambda t: t.index_select(0, beam_idx.to(t.device)))

    def batch_repeat_interleave(self, repeats: int) -> None:
        """Repeat every sequence ``repeats`` times along the batch."""
        self._select(lambda t: t.repeat_interleave(repeats, dim=0))

    def batch_select_indices(self, indices: Tensor) -> None:
        """Keep only ``indices`` of the batch."""
        self._select(lambda t: t[indices])

    # -- storage -----------------------------------------------------------------------------------------------
    def views(self) -> tuple[Int8Keys, Int8Values]:
        """The stored K and V as :class:`Int8Keys` / :class:`Int8Values` (views, no copy)."""
        nq, n = self.n_quantized_k, self.length
        cfg = self.config
        if self.k_codes is None:
            b, h, d, dv = self.batch or 0, self.num_kv_heads, self.head_dim, self.v_dim or self.head_dim
            k_codes, v_codes = torch.empty(b, h, 0, d, dtype=torch.int8), torch.empty(b, h, 0, dv, dtype=torch.int8)
            k_scales = torch.empty(b, h, 0) if cfg.k_granularity == "token" else torch.empty(b, h, 0, d)
            v_scales = torch.empty(b, h, 0)
        else:
            k_codes, v_codes, v_scales = self.k_codes[:, :, :nq], self.v_codes[:, :, :n], self.v_scales[:, :, :n]
            n_scales = nq if cfg.k_granularity == "token" else nq // cfg.k_block
            k_scales = self.k_scales[:, :, :n_scales]
        block = 1 if cfg.k_granularity == "token" else cfg.k_block
        residual = self.k_residual if cfg.k_granularity == "channel" else None
        keys = Int8Keys(k_codes, k_scales, cfg.k_granularity, block, residual, self.has_nonfinite)
        return keys, Int8Values(v_codes, v_scales, self.has_nonfinite)

    def _capacity(self) -> int:
        return 0 if self.v_codes is None else self.v_codes.shape[2]

    def _ensure_capacity(self, needed: int, like: Tensor) -> None:
        cap = self._capacity()
        if needed <= cap:
            return
        new_cap = max(needed + (self.config.reserve if cap == 0 else 0), int(cap * self.config.growth))
        if self.max_positions is not None:
            new_cap = max(needed, min(new_cap, self.max_positions))
        b, h, d, dv = like.shape[0], self.num_kv_heads, self.head_dim, self.v_dim
        dev = like.device
        cfg = self.config
        k_codes = torch.empty(b, h, new_cap, d, dtype=torch.int8, device=dev)
        v_codes = torch.empty(b, h, new_cap, dv, dtype=torch.int8, device=dev)
        v_scales = torch.empty(b, h, new_cap, dtype=torch.float32, device=dev)
        if cfg.k_granularity == "token":
            k_scales = torch.empty(b, h, new_cap, dtype=torch.float32, device=dev)
        else:
            k_scales = torch.empty(b, h, -(-new_cap // cfg.k_block), d, dtype=torch.float32, device=dev)
        if cap:
            nq, n = self.n_quantized_k, self.length
            k_codes[:, :, :nq] = self.k_codes[:, :, :nq]
            v_codes[:, :, :n] = self.v_codes[:, :, :n]
            v_scales[:, :, :n] = self.v_scales[:, :, :n]
            ns = nq if cfg.k_granularity == "token" else nq // cfg.k_block
            k_scales[:, :, :ns] = self.k_scales[:, :, :ns]
        self.k_codes, self.k_scales, self.v_codes, self.v_scales = k_codes, k_scales, v_codes, v_scales

    def _append(self, key_states: Tensor, value_states: Tensor) -> None:
        n, start = key_states.shape[2], self.length
        self._ensure_capacity(start + n, key_states)
        v_codes, v_scales = quantize_rows(value_states)
        self.v_codes[:, :, start : start + n] = v_codes
        self.v_scales[:, :, start : start + n] = v_scales
        if self.config.k_granularity == "token":
            k_codes, k_scales = quantize_rows(key_states)
            self.k_codes[:, :, start : start + n] = k_codes
            self.k_scales[:, :, start : start + n] = k_scales
            self.n_quantized_k = start + n
            bad = bool(torch.isnan(k_scales).any()) or bool(torch.isnan(v_scales).any())
        else:
            bad = self._append_channel_keys(key_states) or bool(torch.isnan(v_scales).any())
        self.has_nonfinite = self.has_nonfinite or bad
        self.length = start + n

    def _append_channel_keys(self, key_states: Tensor) -> bool:
        """Channel mode: append to the residual; quantize every block it completes (per channel). Returns whether a
        quantized block holds a non-finite value (NaN scale); residual NaNs propagate through float products."""
        blk = self.config.k_block
        k = key_states.to(torch.float32)
        pending = k if self.k_residual is None or self.k_residual.shape[2] == 0 else torch.cat([self.k_residual, k], 2)
        full = pending.shape[2] // blk * blk
        bad = bool((~torch.isfinite(pending)).any()) if pending.numel() else False
        if full:
            b, h, _, d = pending.shape
            blocks = pending[:, :, :full].reshape(b, h, full // blk, blk, d).transpose(-1, -2)  # [b, h, nb, d, blk]
            codes, scales = quantize_rows(blocks)  # per channel of each block
            nq = self.n_quantized_k
            self.k_codes[:, :, nq : nq + full] = codes.transpose(-1, -2).reshape(b, h, full, d)
            self.k_scales[:, :, nq // blk : (nq + full) // blk] = scales
            self.n_quantized_k = nq + full
        self.k_residual = pending[:, :, full:].clone()
        return bad

    def _tensors(self) -> list[str]:
        return ["k_codes", "k_scales", "v_codes", "v_scales", "k_residual"]

    def _move(self, device: torch.device) -> None:
        for name in self._tensors():
            t = getattr(self, name)
            if t is not None:
                setattr(self, name, t.to(device, non_blocking=True))

    def _select(self, fn: Any) -> None:
        if self.length == 0 or self.k_codes is None:
            return
        for name in self._tensors():
            t = getattr(self, name)
            if t is not None:
                setattr(self, name, fn(t))
        self.batch = self.v_codes.shape[0]

    @property
    def nbytes(self) -> int:
        """Bytes allocated: codes and scales at their capacity, plus the float residual (channel mode)."""
        return sum(getattr(self, n).nbytes for n in self._tensors() if getattr(self, n) is not None)

    @property
    def stored_nbytes(self) -> int:
        """Bytes of the stored tokens only (codes, their scales, the residual)."""
        if self.k_codes is None:
            return 0
        nq, n = self.n_quantized_k, self.length
        blk = self.config.k_block
        total = self.k_codes[:, :, :nq].nbytes + self.v_codes[:, :, :n].nbytes + self.v_scales[:, :, :n].nbytes
        if self.config.k_granularity == "token":
            total += self.k_scales[:, :, :nq].nbytes
        else:
            total += self.k_scales[:, :, : nq // blk].nbytes
            total += 0 if self.k_residual is None else self.k_residual.nbytes
        return total


class Int8KVCache(Cache):
    """A ``transformers.Cache`` holding every layer's K/V as INT8 codes and float32 scales (module docstring).

    Args:
        config: the model's ``PretrainedConfig`` (decoder text config is used): layer count, KV heads, head dim
            and ``max_position_embeddings``. Only models whose layers are all full attention are supported.
        kv_config: granularity and growth (:class:`Int8KVConfig`).
    """

    def __init__(self, config: Any, kv_config: Int8KVConfig | None = None) -> None:
        if _TRANSFORMERS_ERROR is not None:
            raise ImportError(_TRANSFORMERS_ERROR)
        text = config.get_text_config(decoder=True)
        layer_types, _ = get_layer_types_and_kwargs(text)
        other = set(layer_types) - {"full_attention"}
        if other:
            raise ValueError(f"Int8KVCache supports only full-attention layers; this config also has {sorted(other)}")
        heads = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        max_pos = getattr(text, "max_position_embeddings", None)
        self.kv_config = kv_config or Int8KVConfig()
        layers = [Int8KVLayer(heads, head_dim, max_pos, self.kv_config) for _ in range(text.num_hidden_layers)]
        super().__init__(layers=layers)

    def update(
        self, key_states: Tensor, value_states: Tensor, layer_idx: int, *args: Any, **kwargs: Any
    ) -> tuple[Int8Keys, Int8Values]:
        """Append the new float K/V of ``layer_idx`` (quantized once); returns INT8 views of the whole layer."""
        if isinstance(layer_idx, bool) or not isinstance(layer_idx, int) or not 0 <= layer_idx < len(self.layers):
            raise IndexError(
                f"layer_idx {layer_idx!r} is outside this Int8KVCache, built for a config with {len(self.layers)} "
                "layers"
            )
        return super().update(key_states, value_states, layer_idx, *args, **kwargs)

    @property
    def nbytes(self) -> int:
        """Bytes the cache has allocated (codes, scales, residual), over every layer."""
        return sum(layer.nbytes for layer in self.layers)

    @property
    def stored_nbytes(self) -> int:
        """Bytes of the stored tokens only, over every layer."""
        return sum(layer.stored_nbytes for layer in self.layers)
