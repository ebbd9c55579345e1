"""Tiny randomly initialised causal LMs built from a config, for tests and benchmarks."""

from __future__ import annotations

import torch


def build_tiny_causal_lm(vocab_size: int, n_layer: int = 2, n_embd: int = 32, n_head: int = 2,
                         n_positions: int = 256, seed: int = 0, pad_token_id: int | None = None,
                         eos_token_id: int | None = None, dropout: float = 0.0):
    """A GPT-2-architecture model with random weights drawn from ``seed``; dropout off by default
    so that two forward passes of the same batch agree exactly."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=vocab_size, n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_positions=n_positions,
        resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout,
        bos_token_id=eos_token_id, eos_token_id=eos_token_id, pad_token_id=pad_token_id,
    )
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = GPT2LMHeadModel(config)
    finally:
        torch.random.set_rng_state(generator_state)
    return model


def build_tiny_model_for_tokenizer(tokenizer, seed: int = 0, **kwargs):
    """A tiny random model whose vocabulary and special ids match ``tokenizer``."""
    return build_tiny_causal_lm(
        vocab_size=len(tokenizer), seed=seed, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, **kwargs,
    )
