"""The formats study: round-trip errors of every scheme on Gaussian data and the "formats" report section.

It imports the library's :mod:`lowbit.formats` and adds what only the study needs: the round-trip error of each
scheme (:mod:`.roundtrip`) and the report section (:mod:`.report_section`: the format table, a live bit-exactness
check against ``ml_dtypes``, the representable values and the round-trip errors).
"""
