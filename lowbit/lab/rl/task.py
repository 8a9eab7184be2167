"""The synthetic task of the AIS experiment: multi-digit addition with the answer in reversed digit order.

``"123+456="`` -> ``"975"`` + EOS (579 written least-significant digit first, padded to d+1 digits), the
format small transformers learn fastest (docs/methods/ais.md §9). The reward is 1 for an exactly correct answer
followed by EOS, else 0. A pair (a, b) is held out for testing when ``(a·10^d + b) mod 13 == 0``, so the training
sampler never draws a test prompt. Character-level vocabulary: digits 0-9, ``+``, ``=`` and EOS ``;``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["EOS", "VOCAB", "AdditionTask"]

VOCAB = "0123456789+=;"
PLUS, EQUALS, EOS = 10, 11, 12
_HELD_OUT_MOD = 13


@dataclass(frozen=True)
class AdditionTask:
    """``digits``-digit addition; prompts have ``2·digits + 2`` tokens, answers ``digits + 1`` digits + EOS."""

    digits: int = 3

    def __post_init__(self) -> None:
        if not 1 <= self.digits <= 6:
            raise ValueError(f"digits must lie in [1, 6], got {self.digits}")

    @property
    def prompt_len(self) -> int:
        return 2 * self.digits + 2

    @property
    def answer_len(self) -> int:
        """Answer digits plus EOS: the most tokens a response may take."""
        return self.digits + 2

    @property
    def vocab_size(self) -> int:
        return len(VOCAB)

    def _is_test(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a * 10**self.digits + b) % _HELD_OUT_MOD == 0

    def _digits(self, x: torch.Tensor, n: int) -> torch.Tensor:
        """Least-significant digit first, ``n`` digits per number, shape (B, n)."""
        powers = 10 ** torch.arange(n, dtype=torch.long)
        return (x.unsqueeze(-1) // powers) % 10

    def _encode(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        d = self.digits
        msd_first = torch.arange(d - 1, -1, -1)
        da, db = self._digits(a, d)[:, msd_first], self._digits(b, d)[:, msd_first]
        n = a.shape[0]
        return torch.cat([da, torch.full((n, 1), PLUS), db, torch.full((n, 1), EQUALS)], dim=1)

    def sample_train(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` training prompts (B, prompt_len) and their target answers (B, answer_len), never a test pair."""
        hi = 10**self.digits
        a_out, b_out, have = [], [], 0
        while have < n:
            a = torch.randint(0, hi, (2 * n,), generator=generator)
            b = torch.randint(0, hi, (2 * n,), generator=generator)
            keep = ~self._is_test(a, b)
            a_out.append(a[keep])
            b_out.append(b[keep])
            have += int(keep.sum())
        a, b = torch.cat(a_out)[:n], torch.cat(b_out)[:n]
        return self._encode(a, b), self.answers(a, b)

    def test_set(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``n`` held-out pairs in a fixed pseudo-random order (the same for every run)."""
        g = torch.Generator().manual_seed(12345)
        hi = 10**self.digits
        a = torch.randint(0, hi, (60 * n,), generator=g)
        b = torch.randint(0, hi, (60 * n,), generator=g)
        keep = self._is_test(a, b)
        a, b = a[keep][:n], b[keep][:n]
        if a.shape[0] < n:
            raise ValueError(f"n={n} is more test prompts than this task provides")
        return self._encode(a, b), self.answers(a, b)

    def answers(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Reversed digits of a+b (d+1 of them) followed by EOS."""
        s = self._digits(a + b, self.digits + 1)
        return torch.cat([s, torch.full((a.shape[0], 1), EOS)], dim=1)

    def reward(self, responses: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """1.0 where the response equals the target token for token (answer and EOS), else 0.0."""
        if responses.shape != targets.shape:
            raise ValueError(f"responses {tuple(responses.shape)} and targets {tuple(targets.shape)} differ in shape")
        return (responses == targets).all(dim=1).to(torch.float32)

    def decode(self, tokens: torch.Tensor) -> str:
        """Token ids to text."""
        return "".join(VOCAB[int(t)] for t in tokens)
