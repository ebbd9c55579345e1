"""The supervised stages' examples: train/eval split, the comparisons that the reward model and
DPO share, each process's share of the batches, and moving a batch to the device."""

from __future__ import annotations

from typing import Any

import torch

from rlhf.data import load_comparisons, tokenize_comparisons


def holdout_split(items: list, fraction: float, seed: int) -> tuple[list, list]:
    """Deterministically hold out ``fraction`` of ``items`` for evaluation."""
    if fraction <= 0:
        return items, []
    order = torch.randperm(len(items), generator=torch.Generator().manual_seed(seed)).tolist()
    n_eval = max(1, int(round(fraction * len(items))))
    held = set(order[:n_eval])
    return [x for i, x in enumerate(items) if i not in held], [x for i, x in enumerate(items) if i in held]


def load_train_eval_pairs(config, tokenizer) -> tuple[list[dict], list[dict]]:
    """Tokenized comparisons (rankings expanded to pairs) of ``train_file``, and the held-out ones:
    ``eval_file`` if given, else ``eval_fraction`` of the training pairs."""

    def tokenize(path: str) -> list[dict]:
        pairs = load_comparisons(path, tokenizer=tokenizer, skip_bad_records=config.skip_bad_records)
        return tokenize_comparisons(pairs, tokenizer, max_length=config.max_length, truncation=config.truncation,
                                    skip_bad_records=config.skip_bad_records)

    train = tokenize(config.train_file)
    if config.eval_file:
        return train, tokenize(config.eval_file)
    return holdout_split(train, config.eval_fraction, config.seed)


def batches_for_this_process(batches: list[list[int]], accelerator) -> list[list[int]]:
    """Deal whole batches round-robin to the processes (batch k to process k mod N), dropping the
    tail so every process runs the same number of steps: N processes with batch B then see
    exactly the examples one process with batch N*B would, step by step."""
    n = accelerator.num_processes
    usable = len(batches) - len(batches) % n
    return batches[accelerator.process_index:usable:n]


def to_device(batch: dict[str, Any], device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
