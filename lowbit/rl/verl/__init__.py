"""AIS in verl: a ``verl.plugins`` plugin that makes ``algorithm.rollout_correction.rollout_is=ais`` lowbit's.

With lowbit installed next to verl, ``import verl`` loads the entry point ``lowbit`` of the ``verl.plugins``
group (:mod:`lowbit.rl.verl.plugin`), which calls :func:`install`. From then on, verl's driver computes
``rollout_is_weights`` with :func:`lowbit.rl.correction` over the whole batch (α from the global batch,
:mod:`lowbit.rl.verl.driver`), and every verl policy loss multiplies them in. How the hook is installed:
:mod:`lowbit.rl.verl.hook`. verl's loss aggregation without verl: :mod:`lowbit.rl.verl.aggregate`.
Usage: ``docs/rl.md`` (section verl). Nothing here imports verl until :func:`install` is called.
"""

from lowbit.rl.verl.hook import install, is_installed

__all__ = ["install", "is_installed"]
