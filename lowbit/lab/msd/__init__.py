"""MSD studies: the effective-bits table and the 6.6 search (``lowbit bits``), the matmul accuracy study, the
synthetic activation distributions they run on, and the report sections ``msd`` and ``msd-linear``.

They measure :mod:`lowbit.msd` (the method, ``docs/methods/msd.md``) and import it; the library never imports them.
"""
