"""The supervised stages' examples: train/eval split, the comparisons that the reward model and
DPO share, what the stage says about its data at start, each process's share of the batches,
and moving a batch to the device."""

from __future__ import annotations

import warnings
from typing import Any, Callable

import torch
from accelerate import PartialState

from rlhf.data import (describe_formats, load_comparisons, main_format, tokenize_comparisons, truncation_message,
                       warn_if_template_unused)


def holdout_split(items: list, fraction: float, seed: int) -> tuple[list, list]:
    """Deterministically hold out ``fraction`` of ``items`` for evaluation."""
    if fraction <= 0:
        return items, []
    order = torch.randperm(len(items), generator=torch.Generator().manual_seed(seed)).tolist()
    n_eval = max(1, int(round(fraction * len(items))))
    held = set(order[:n_eval])
    return [x for i, x in enumerate(items) if i not in held], [x for i, x in enumerate(items) if i in held]


def load_train_eval(config, tokenizer, load: Callable[[str], list], tokenize: Callable[[list], list], unit: str
                    ) -> tuple[list[dict], list[dict], dict[str, Any]]:
    """Load and tokenize ``train_file`` and the held-out examples (``eval_file`` if given, else
    ``eval_fraction`` of the training ones), saying on the main process what was loaded: one line
    with the sizes and the format, a warning if the tokenizer's chat template goes unused, a
    warning per file with truncated examples. Returns ``(train, eval, data_info)``; ``data_info``
    holds "data_format" (in words), "prompt_format" (the most common record format, saved with
    the model so PPO can compare) and "truncated_examples"."""
    is_main = PartialState().is_main_process

    def load_and_tokenize(path: str) -> tuple[list, list]:
        records = load(path)
        if is_main:
            warn_if_template_unused(records, tokenizer, path)
        examples = tokenize(records)
        if is_main and examples.truncated:
            warnings.warn(truncation_message(path, examples.truncated, len(examples), config.max_length, unit),
                          UserWarning, stacklevel=3)
        return records, examples

    train_records, train = load_and_tokenize(config.train_file)
    truncated, total = train.truncated, len(train)
    if config.eval_file:
        _, eval_ = load_and_tokenize(config.eval_file)
        truncated += eval_.truncated
        held = f"eval_file {config.eval_file}: {len(eval_):,} {unit}"
    else:
        train, eval_ = holdout_split(train, config.eval_fraction, config.seed)
        held = (f"eval: {len(eval_):,} held out (eval_fraction {config.eval_fraction:g}), {len(train):,} left "
                "for training" if eval_ else "no evaluation (set --eval_file or --eval_fraction)")
    data_format = describe_formats(train_records)
    if is_main:
        print(f"train_file {config.train_file}: {total:,} {unit} ({data_format}); {held}", flush=True)
    info = {"data_format": data_format, "prompt_format": main_format(train_records), "truncated_examples": truncated}
    return train, eval_, info


def load_train_eval_pairs(config, tokenizer) -> tuple[list[dict], list[dict], dict[str, Any]]:
    """Tokenized comparisons (rankings expanded to pairs) of ``train_file``, the held-out ones and
    the data's summary, as :func:`load_train_eval` says; the fields are mapped as the config says."""

    def load(path: str) -> list:
        return load_comparisons(path, tokenizer=tokenizer, skip_bad_records=config.skip_bad_records,
                                apply_chat_template=config.apply_chat_template, prompt_field=config.prompt_field,
                                chosen_field=config.chosen_field, rejected_field=config.rejected_field)

    def tokenize(pairs: list) -> list:
        return tokenize_comparisons(pairs, tokenizer, max_length=config.max_length, truncation=config.truncation,
                                    skip_bad_records=config.skip_bad_records)

    return load_train_eval(config, tokenizer, load, tokenize, "pairs")


def batches_for_this_process(batches: list[list[int]], accelerator) -> list[list[int]]:
    """Deal whole batches round-robin to the processes (batch k to process k mod N), dropping the
    tail so every process runs the same number of steps: N processes with batch B then see
    exactly the examples one process with batch N*B would, step by step."""
    n = accelerator.num_processes
    usable = len(batches) - len(batches) % n
    return batches[accelerator.process_index:usable:n]


def to_device(batch: dict[str, Any], device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def with_model_limits(config, model):
    """``config`` with ``max_length`` resolved against the model's position limit (0: that limit;
    more: a ConfigError before any data is read). The saved config keeps what the user asked."""
    import dataclasses

    from rlhf.models.loading import resolve_max_length

    model_config = getattr(model, "config", None)
    return dataclasses.replace(config, max_length=resolve_max_length(config.max_length, model_config,
                                                                     config.model_name_or_path))
