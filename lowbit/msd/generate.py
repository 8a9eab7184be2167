"""Timed text generation with a quantized model (``lowbit generate``): :func:`timed_generate`.

``model.generate`` runs unchanged (greedy or sampled, any cache); a streamer records when each token arrives:

* **prefill**: from the call to the first new token (the prompt's forward pass and the first sampling step);
  ``prefill tokens/s = prompt tokens / prefill seconds``;
* **decode**: from the first new token to the last; ``decode tokens/s = (new tokens - 1) / decode seconds``
  (one forward pass over one token per step, reading the whole cache).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["GenerateSettings", "GenerateTiming", "timed_generate"]


@dataclass(frozen=True)
class GenerateSettings:
    """Decoding settings: greedy unless ``do_sample`` (then ``temperature`` and ``top_p`` apply, seeded).

    >>> GenerateSettings(do_sample=True, temperature=0.7).generate_kwargs()["temperature"]
    0.7
    """

    max_new_tokens: int = 64
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a positive int, got {self.max_new_tokens!r}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature!r}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")

    def generate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``model.generate`` (no early stop: exactly ``max_new_tokens`` unless EOS)."""
        kwargs: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "do_sample": self.do_sample}
        if self.do_sample:
            kwargs.update(temperature=self.temperature, top_p=self.top_p, top_k=0)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        return kwargs


@dataclass(frozen=True)
class GenerateTiming:
    """What :func:`timed_generate` measured (seconds) and produced."""

    prompt_tokens: int
    new_tokens: int
    prefill_s: float
    decode_s: float
    sequences: torch.Tensor = field(repr=False)

    @property
    def prefill_tokens_per_s(self) -> float:
        """Prompt tokens per second of prefill (batch rows counted once per token position and row)."""
        return self.prompt_tokens / self.prefill_s if self.prefill_s > 0 else float("inf")

    @property
    def decode_tokens_per_s(self) -> float:
        """New tokens after the first, per second of decode (nan when only one token was generated)."""
        steps = self.new_tokens - 1
        if steps <= 0:
            return float("nan")
        return steps / self.decode_s if self.decode_s > 0 else float("inf")


class _Clock:
    """A ``generate`` streamer that records when each new token arrives (the first ``put`` is the prompt)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.arrivals: list[float] = []
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self.arrivals.append(time.perf_counter())

    def end(self) -> None:
        pass


def timed_generate(
    model: Any,
    input_ids: torch.Tensor,
    settings: GenerateSettings,
    *,
    attention_mask: torch.Tensor | None = None,
    past_key_values: Any = None,
) -> GenerateTiming:
    """Run ``model.generate`` on ``input_ids [B, T]`` and time prefill and decode (module docstring).

    Raises:
        ValueError: an empty prompt, or a prompt plus ``max_new_tokens`` beyond the model's
            ``max_position_embeddings``.
    """
    if input_ids.dim() != 2 or input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
        raise ValueError(f"input_ids must be a non-empty [batch, tokens] tensor, got shape {tuple(input_ids.shape)}")
    limit = getattr(model.config.get_text_config(decoder=True), "max_position_embeddings", None)
    total = input_ids.shape[1] + settings.max_new_tokens
    if limit is not None and total > limit:
        raise ValueError(
            f"prompt ({input_ids.shape[1]} tokens) + max_new_tokens ({settings.max_new_tokens}) = {total} exceeds "
            f"the model's max_position_embeddings={limit}"
        )
    from transformers.generation.streamers import BaseStreamer

    clock = type("_GenerateClock", (_Clock, BaseStreamer), {})()
    kwargs = settings.generate_kwargs()
    if past_key_values is not None:
        kwargs["past_key_values"] = past_key_values
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    torch.manual_seed(settings.seed)
    clock.start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(input_ids, attention_mask=attention_mask, streamer=clock, **kwargs)
    end = time.perf_counter()
    arrivals = clock.arrivals or [end]
    new_tokens = out.shape[1] - input_ids.shape[1]
    return GenerateTiming(
        prompt_tokens=int(input_ids.numel()),
        new_tokens=int(new_tokens),
        prefill_s=arrivals[0] - clock.start,
        decode_s=arrivals[-1] - arrivals[0],
        sequences=out,
    )
