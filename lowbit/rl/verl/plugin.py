"""What verl's ``verl.plugins`` entry point loads (``pyproject.toml``: ``lowbit = "lowbit.rl.verl.plugin:installed"``).

``import verl`` loads every ``verl.plugins`` entry point (``verl/__init__.py``, unless
``VERL_USE_EXTERNAL_PLUGINS=none``) in every process that imports verl, Ray workers and the driver's
``TaskRunner`` included. Loading ``module:installed`` imports this module and then reads its attribute
``installed``; that read (the module ``__getattr__`` below) calls :func:`lowbit.rl.verl.install`. Installing
on the attribute read rather than at import time keeps it working when this module was imported before
verl (pytest's doctest collection imports every module; a second import would not run the module again).
verl swallows a plugin's error (logged at DEBUG), so :func:`lowbit.rl.verl.is_installed` says whether the
hook is in place.
"""

from __future__ import annotations

from lowbit.rl.verl.hook import install

__all__: list[str] = []


def __getattr__(name: str) -> bool:
    if name == "installed":
        install()
        return True
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
