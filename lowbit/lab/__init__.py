"""The lab: studies, experiments, calibration and the report (``lowbit report``).

The library (``lowbit.formats``, ``lowbit.tokenize``, ``lowbit.msd``, ``lowbit.attention``, ``lowbit.costmodel``,
``lowbit.rl``) holds what a user imports: each method, its exact reference, its fast path and its user-facing
CLI command. Everything that *measures* the library (the papers' tables, accuracy studies, the RL experiment,
the cost-model calibration, the report sections) lives here, one subpackage per capability. The lab imports the
library; the library never imports the lab (``tests/lab/test_layering.py``).
"""
