"""A small Llama trained on the spot, for accuracy figures that mean something (``bench_generate.py``).

Nothing is downloaded: the text is this Python's own standard library (the top-level ``*.py`` files of
``sysconfig.get_paths()["stdlib"]``, sorted by name; every 10th file is held out for evaluation, the rest is the
training text), the tokenizer is a byte-level BPE trained on the training text with ``tokenizers``, and the model
is a ``LlamaForCausalLM`` from a config (hidden 256, 4 layers, 4/2 heads of 64, intermediate 768, vocabulary
2048, untied ``lm_head``; 4.2 M parameters) trained with AdamW (bf16 autocast, float32 weights) on random
128-token windows of the training text, fixed seed, ``steps`` steps of 16 windows (160: 330 K tokens, 6-14 min
on the 2 loaded cores of the development machine). The result (about 17 MB) is cached under ``$LOWBIT_CACHE``
(default ``~/.cache/lowbit``)/``bench_generate/<key>``, where the key hashes the
recipe and the corpus (file names and sizes), so a changed recipe or Python retrains.

The held-out evaluation loss (mean next-token cross-entropy in nats over fixed windows of the held-out files) is
recorded with the unigram entropy of the held-out tokens under the training unigram distribution (the loss of a
model that learned only token frequencies) and ``ln(vocab)`` (uniform guess), so a reader sees it learned.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sysconfig
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the trained model (hashed into the cache key)."""

    vocab: int = 2048
    hidden: int = 256
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    head_dim: int = 64
    intermediate: int = 768
    seq: int = 128
    batch: int = 16
    steps: int = 160
    lr: float = 3e-3
    warmup: int = 20
    seed: int = 0
    eval_every: int = 10  # every 10th stdlib file (sorted) is held out


def cache_root() -> Path:
    return Path(os.environ.get("LOWBIT_CACHE", Path.home() / ".cache" / "lowbit")) / "bench_generate"


def corpus_files(recipe: Recipe) -> tuple[list[Path], list[Path]]:
    """(train files, held-out files): the top-level stdlib ``*.py`` files sorted by name, every ``eval_every``-th
    held out."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(stdlib.glob("*.py"))
    if len(files) < 2 * recipe.eval_every:
        raise RuntimeError(f"too few standard-library files under {stdlib} ({len(files)}) to train on")
    held = [f for i, f in enumerate(files) if i % recipe.eval_every == 0]
    train = [f for i, f in enumerate(files) if i % recipe.eval_every != 0]
    return train, held


def _read(files: list[Path]) -> list[str]:
    return [f.read_text(encoding="utf-8", errors="replace") for f in files]


def _key(recipe: Recipe, files: list[Path]) -> str:
    h = hashlib.sha256(json.dumps(asdict(recipe), sort_keys=True).encode())
    for f in files:
        h.update(f"{f.name}:{f.stat().st_size}\n".encode())
    return h.hexdigest()[:16]


def _train_tokenizer(texts: list[str], vocab: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def _stream(tok: Any, texts: list[str]) -> torch.Tensor:
    ids: list[int] = []
    for enc in tok.encode_batch(texts):
        ids.extend(enc.ids)
    return torch.tensor(ids, dtype=torch.long)


def _config(recipe: Recipe, vocab: int) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab,
        hidden_size=recipe.hidden,
        intermediate_size=recipe.intermediate,
        num_hidden_layers=recipe.layers,
        num_attention_heads=recipe.heads,
        num_key_value_heads=recipe.kv_heads,
        head_dim=recipe.head_dim,
        max_position_embeddings=4 * recipe.seq,
        tie_word_embeddings=False,
    )


def eval_windows(stream: torch.Tensor, length: int, count: int) -> torch.Tensor:
    """``count`` windows of ``length`` tokens at evenly spaced offsets of ``stream`` (deterministic), shape
    ``(count, length)``."""
    if stream.numel() < length * count:
        raise ValueError(f"held-out stream of {stream.numel()} tokens is too short for {count} x {length}")
    step = (stream.numel() - length) // max(count - 1, 1)
    return torch.stack([stream[i * step : i * step + length] for i in range(count)])


@torch.no_grad()
def mean_loss(model: torch.nn.Module, windows: torch.Tensor, batch: int = 8) -> float:
    """Mean next-token cross-entropy (nats) of ``model`` over ``windows`` (teacher forcing, full windows)."""
    total, n = 0.0, 0
    for i in range(0, windows.shape[0], batch):
        x = windows[i : i + batch]
        logits = model(x).logits[:, :-1].float()
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="sum"
        )
        total += float(loss)
        n += x[:, 1:].numel()
    return total / n


def unigram_loss(train: torch.Tensor, held: torch.Tensor, vocab: int) -> float:
    """Cross-entropy (nats) of ``held`` under the add-one-smoothed unigram distribution of ``train``."""
    counts = torch.bincount(train, minlength=vocab).double() + 1
    logp = (counts / counts.sum()).log()
    return float(-logp[held].mean())


def load_or_train(recipe: Recipe | None = None, log: Any = print) -> tuple[torch.nn.Module, Any, torch.Tensor, dict]:
    """(float32 model in eval mode, tokenizer, held-out token stream, meta) — trained once, then read from the cache.

    ``meta`` has the recipe, the cache key, the corpus (file counts and characters), the training time and loss
    curve, the held-out loss and its unigram / uniform baselines.
    """
    from tokenizers import Tokenizer
    from transformers import LlamaForCausalLM

    recipe = recipe or Recipe()
    train_files, held_files = corpus_files(recipe)
    key = _key(recipe, train_files + held_files)
    out = cache_root() / key
    if (out / "meta.json").exists():
        meta = json.loads((out / "meta.json").read_text())
        tok = Tokenizer.from_file(str(out / "tokenizer.json"))
        model = LlamaForCausalLM.from_pretrained(out / "model", dtype=torch.float32, attn_implementation="sdpa")
        held = _stream(tok, _read(held_files))
        meta["cached"] = True
        return model.eval(), tok, held, meta

    t0 = time.perf_counter()
    train_texts, held_texts = _read(train_files), _read(held_files)
    tok = _train_tokenizer(train_texts, recipe.vocab)
    train = _stream(tok, train_texts)
    held = _stream(tok, held_texts)
    vocab = tok.get_vocab_size()
    torch.manual_seed(recipe.seed)
    model = LlamaForCausalLM(_config(recipe, vocab)).float()
    model.config._attn_implementation = "sdpa"
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, betas=(0.9, 0.95), weight_decay=0.1)

    def lr_at(step: int) -> float:  # linear warm-up, cosine decay to 10 %
        if step < recipe.warmup:
            return recipe.lr * (step + 1) / recipe.warmup
        frac = (step - recipe.warmup) / max(recipe.steps - recipe.warmup, 1)
        return recipe.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * frac)))

    gen = torch.Generator().manual_seed(recipe.seed)
    curve: list[list[float]] = []
    model.train()
    for step in range(recipe.steps):
        starts = torch.randint(0, train.numel() - recipe.seq - 1, (recipe.batch,), generator=gen)
        x = torch.stack([train[s : s + recipe.seq] for s in starts.tolist()])
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # AMX/AVX512-BF16 matmuls, float32 master weights
            loss = model(x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 25 == 0 or step == recipe.steps - 1:
            curve.append([step, float(loss.detach())])
            log(f"  train step {step}: loss {float(loss.detach()):.3f} ({time.perf_counter() - t0:.0f} s)")
    model.eval()
    train_s = time.perf_counter() - t0
    windows = eval_windows(held, recipe.seq, 32)
    meta = {
        "recipe": asdict(recipe),
        "key": key,
        "vocab": vocab,
        "corpus": {
            "source": "top-level *.py of sysconfig stdlib (sorted; every eval_every-th file held out)",
            "stdlib": str(Path(sysconfig.get_paths()["stdlib"])),
            "train_files": len(train_files),
            "held_out_files": len(held_files),
            "train_tokens": int(train.numel()),
            "held_out_tokens": int(held.numel()),
        },
        "train_seconds": train_s,
        "train_threads": torch.get_num_threads(),
        "train_tokens_seen": recipe.steps * recipe.batch * recipe.seq,
        "loss_curve": curve,
        "held_out_loss": mean_loss(model, windows),
        "held_out_loss_windows": [int(windows.shape[0]), int(windows.shape[1])],
        "unigram_loss": unigram_loss(train, held, vocab),
        "uniform_loss": math.log(vocab),
    }
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out / "model")
    tok.save(str(out / "tokenizer.json"))
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    meta["cached"] = False
    return model, tok, held, meta
