"""One timing loop for the whole project (benchmarks, report sections, calibration, ``MSDLinear.tune``).

Rule: ``warmup`` untimed calls (the first call of a kernel builds its oneDNN primitive or fills caches), then
``repeats`` samples; with ``min_seconds > 0`` each sample loops the call until that long has passed and records
the mean per call (for calls shorter than the timer's resolution or a scheduler slice). The result keeps every
sample, so callers quote the median *and* the spread: on a loaded machine times quantize to scheduler slices
(~4 ms) and a lone number misleads.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["NOISY_SPREAD", "Timing", "measure", "median_time"]

NOISY_SPREAD = 0.25  # (max - min) / median above this marks a timing as noisy


@dataclass(frozen=True)
class Timing:
    """Samples of one timed call, in seconds.

    >>> t = Timing((1.0, 1.1, 0.9))
    >>> t.median, round(t.spread, 3), t.noisy
    (1.0, 0.2, False)
    """

    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        """The median sample."""
        return statistics.median(self.samples)

    @property
    def best(self) -> float:
        """The fastest sample (for calibration, where the noise only ever adds time)."""
        return min(self.samples)

    @property
    def spread(self) -> float:
        """``(max - min) / median`` of the samples (0 for one sample)."""
        med = self.median
        return (max(self.samples) - min(self.samples)) / med if med > 0 else 0.0

    @property
    def noisy(self) -> bool:
        """The spread exceeds :data:`NOISY_SPREAD`."""
        return self.spread > NOISY_SPREAD

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary: median, best, spread, noisy flag and the samples."""
        return {
            "median_s": self.median,
            "best_s": self.best,
            "spread": self.spread,
            "noisy": self.noisy,
            "samples_s": list(self.samples),
        }


def measure(fn: Callable[[], Any], *, repeats: int = 7, warmup: int = 1, min_seconds: float = 0.0) -> Timing:
    """Time ``fn()`` (rule in the module docstring)."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        n, start = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds:
                break
        samples.append(elapsed / n)
    return Timing(tuple(samples))


def median_time(fn: Callable[[], Any], *, repeats: int = 7, warmup: int = 1, min_seconds: float = 0.0) -> float:
    """Median seconds of ``fn()``: ``measure(...).median``."""
    return measure(fn, repeats=repeats, warmup=warmup, min_seconds=min_seconds).median
