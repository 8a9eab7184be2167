"""LoPT studies: the benchmark and report texts (:mod:`.corpus`), the lossy naive cut-and-concatenate baseline
and its count of wrong tokens (:mod:`.naive`), and the report section ``tokenize``.

They measure :mod:`lowbit.tokenize` (the method, ``docs/methods/lopt.md``) and import it; the library never
imports them.
"""
