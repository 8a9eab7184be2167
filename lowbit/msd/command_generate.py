"""``lowbit generate OUT_DIR --prompt "..."``: run a ``lowbit quantize`` checkpoint and time prefill and decode.

The model comes from :func:`lowbit.msd.from_pretrained`, the tokenizer from ``OUT_DIR`` (``lowbit quantize``
copies the source folder's tokenizer files). ``--kv int8`` keeps the KV cache as INT8 codes
(:class:`lowbit.attention.Int8KVCache`) read by lowbit's MSD attention (:func:`lowbit.attention.use_msd_attention`).
Timing rules: :mod:`lowbit.msd.generate`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``generate`` subcommand."""
    p = subparsers.add_parser(
        "generate",
        help="generate text with a lowbit quantize checkpoint; prints prefill and decode tokens/s",
        description="Load OUT_DIR (written by `lowbit quantize`) with its MSD linear layers and its tokenizer, "
        "generate from --prompt, and print the text and the prefill and decode speed separately.",
    )
    p.add_argument("out_dir", type=Path, help="checkpoint folder written by `lowbit quantize` (with its tokenizer)")
    p.add_argument("--prompt", required=True, help="the prompt text (encoded with the folder's tokenizer)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="tokens to generate (default 64)")
    p.add_argument(
        "--kv",
        choices=("float", "int8"),
        default="float",
        help="KV cache: float (transformers' default cache and attention) or int8 (lowbit Int8KVCache: INT8 codes "
        "+ float scales, read without dequantizing by lowbit's MSD attention) (default float)",
    )
    p.add_argument(
        "--do-sample",
        action="store_true",
        help="sample the next token (with --temperature and --top-p) instead of the greedy argmax",
    )
    p.add_argument(
        "--temperature", type=float, default=1.0, help="softmax temperature for --do-sample, > 0 (default 1.0)"
    )
    p.add_argument(
        "--top-p",
        type=float,
        default=1.0,
        help="nucleus sampling for --do-sample: keep the smallest set of tokens whose probability reaches TOP_P, "
        "in (0, 1] (default 1.0: all tokens)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed for --do-sample (default 0)")
    p.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice for this machine)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``lowbit generate``; prints the generated text and the speeds."""
    import torch
    from transformers import AutoTokenizer

    from lowbit.msd.generate import GenerateSettings, timed_generate
    from lowbit.msd.hf import from_pretrained

    settings = GenerateSettings(
        max_new_tokens=args.max_new_tokens,
        do_sample=args.do_sample,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
    )
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if not args.prompt:
        raise ValueError("--prompt is empty")
    model = from_pretrained(args.out_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(args.out_dir)
    except (OSError, ValueError, TypeError) as exc:
        raise ValueError(f"no usable tokenizer in {args.out_dir} (lowbit quantize copies the source's): {exc}") from exc
    enc = tokenizer(args.prompt, return_tensors="pt")
    if enc["input_ids"].shape[1] == 0:
        raise ValueError(f"the prompt {args.prompt!r} encodes to no tokens")
    cache = None
    if args.kv == "int8":
        from lowbit.attention import Int8KVCache, use_msd_attention

        use_msd_attention(model)
        cache = Int8KVCache(model.config)
    t = timed_generate(model, enc["input_ids"], settings, attention_mask=enc["attention_mask"], past_key_values=cache)
    new = t.sequences[0, enc["input_ids"].shape[1] :]
    print(args.prompt + tokenizer.decode(new, skip_special_tokens=True))
    mode = f"sampled (temperature {settings.temperature}, top-p {settings.top_p}, seed {settings.seed})"
    print(
        f"prefill: {t.prompt_tokens} tokens in {t.prefill_s * 1e3:.1f} ms = {t.prefill_tokens_per_s:.1f} tokens/s; "
        f"decode: {t.new_tokens} new tokens, {t.decode_tokens_per_s:.1f} tokens/s "
        f"({'greedy' if not settings.do_sample else mode}, KV cache {args.kv}"
        + (f", {cache.nbytes / 2**20:.2f} MiB" if cache is not None else "")
        + ")"
    )
    return 0
