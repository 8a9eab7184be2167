"""The AIS study: GRPO on a tiny GPT with FP8 fake-quantized rollouts, arm by arm (``lowbit rl``).

It imports the library's :mod:`lowbit.rl` (the corrections and the loss) and adds what only the experiment
needs: the addition task (:mod:`.task`), the tiny GPT (:mod:`.model`), the FP8 rollout engine (:mod:`.rollout`),
the GRPO loop and its arms (:mod:`.experiment`), saving and the final table (:mod:`.results`), the curves
(:mod:`.plots`), the ``lowbit rl`` command (:mod:`.command`) and the report section (:mod:`.report_section`).
"""
