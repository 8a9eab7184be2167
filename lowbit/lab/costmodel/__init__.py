"""Cost-model studies: the CPU calibration, the predicted-vs-measured check (``lowbit cost-check``) and the report
section ``costmodel``. They import :mod:`lowbit.costmodel`; the library never imports them."""
