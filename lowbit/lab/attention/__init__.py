"""Attention studies: the quantized-KV error table (dequant vs MSD), the AMLA error table, ``lowbit attention``
and the report section ``attention``. They import :mod:`lowbit.attention`; the library never imports them."""
