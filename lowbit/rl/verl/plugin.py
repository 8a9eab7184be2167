"""The module verl's ``verl.plugins`` entry point loads (``pyproject.toml``): it installs the hook on import.

``import verl`` loads every ``verl.plugins`` entry point (``verl/__init__.py``, unless
``VERL_USE_EXTERNAL_PLUGINS=none``), in every process that imports verl, Ray workers and the driver's
``TaskRunner`` included. verl swallows a plugin's import error (logged at DEBUG), so
:func:`lowbit.rl.verl.is_installed` says whether the hook is in place. Imported without verl having been
imported (e.g. by pytest's doctest collection), this module does nothing; call :func:`lowbit.rl.verl.install`.
"""

from __future__ import annotations

import sys

from lowbit.rl.verl.hook import install

if "verl" in sys.modules:
    install()
