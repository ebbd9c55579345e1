"""Forward passes over rows that share their first columns (GRPO's G answers to one prompt).

The keys and values of a shared prompt are the same in every row that starts with it, so they are
computed once per distinct prompt and handed to its rows through the model's KV cache; the rest
of each row then runs over them. With 32-token prompts, 32-token responses and groups of 4 this
is 636 token positions per forward instead of 1,024, with the same outputs up to float rounding
and the same gradients: the prompt's pass receives the sum of its rows' gradients, as it would
row by row. Rows may come in any order (a shuffled minibatch).

It applies when at most half the rows have a prompt of their own, and the model can run on a
cache: a plain or PEFT model, without gradient checkpointing (which drops the cache in training),
and not compiled (each pass would compile anew). Not under a distributed wrapper either (DDP,
FSDP, DeepSpeed): their forward passes communicate (all-gathers, DDP's buffer broadcast), and
whether a batch repeats its prompts differs between processes, which would then run different
numbers of passes and wait on each other for ever. So a trainer's policy shares its prompts in a
single process only; the frozen roles (reference, reward model) and generation, which never
communicate, share them in every run. Otherwise ``prefix_groups`` returns None and callers run
the ordinary forward.
"""

from __future__ import annotations

import inspect
import warnings

import torch

from rlhf.models.positions import position_ids_from_mask

WRAPPERS = ("DistributedDataParallel", "FullyShardedDataParallel", "DeepSpeedEngine", "OptimizedModule")
_NO_CACHE = "_rlhf_cannot_share_prefix"  # set on a model whose forward turned out to ignore a given cache


class PrefixNotShared(RuntimeError):
    """The model cannot run over a shared prefix's cache (it returned none, failed on it or ignored
    it); the caller runs the full forward instead."""


def prefix_groups(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, prefix_length: int):
    """Which distinct prefix each row starts with: ``(first, index)``, the first row of each distinct
    prefix (U,) and each row's prefix among them (B,); None when sharing does not apply (no prefix,
    an unsupported model, or more than half the rows distinct, where it would save little)."""
    B, T = input_ids.shape
    if prefix_length < 1 or prefix_length >= T or B < 2 or not _supports_cache(model):
        return None
    key = torch.cat([input_ids[:, :prefix_length], attention_mask[:, :prefix_length].to(input_ids.dtype)], dim=1)
    _, index = torch.unique(key, dim=0, return_inverse=True)  # (B,) in 0..U-1
    U = int(index.max()) + 1
    if 2 * U > B:
        return None
    rows = torch.arange(B, device=index.device)
    first = torch.full((U,), B, dtype=rows.dtype, device=index.device).scatter_reduce(0, index, rows, "amin")
    return first, index


def shared_prefix_forward(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, prefix_length: int,
                          groups: tuple[torch.Tensor, torch.Tensor], **kwargs):
    """The model's output for columns ``prefix_length:`` of every row (B, T - prefix_length, ...), the
    first ``prefix_length`` columns having run once per distinct prefix (``groups`` from
    ``prefix_groups``). Positions and the attention over the prefix are those of the full forward,
    left padding included. ``kwargs`` go to the second pass. Raises ``PrefixNotShared`` (with a
    warning, and marks the model so that ``prefix_groups`` says None from then on) if the model
    cannot run over the cache or ignored it: the caller then runs the full forward."""
    P = prefix_length
    cache_argument = prefix_cache(model, input_ids, attention_mask, P, groups)
    (cache,) = cache_argument.values()
    try:
        output = model(input_ids=input_ids[:, P:], attention_mask=attention_mask,
                       position_ids=position_ids_from_mask(attention_mask)[:, P:], use_cache=False, **cache_argument,
                       **kwargs)
    except (RuntimeError, TypeError, ValueError) as error:  # e.g. a mask of past + new tokens it cannot take
        raise _not_shared(model, f"its forward over the cache failed ({type(error).__name__}: {error})") from error
    if cache.get_seq_length() != input_ids.shape[1]:
        raise _not_shared(model, "it did not attend to the cache")
    return output


def forward_sharing_prefix(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, prefix_length: int,
                           **kwargs):
    """``shared_prefix_forward`` where it applies (``prefix_groups``) and the model can run it; None
    otherwise, and the caller runs its ordinary full forward."""
    groups = prefix_groups(model, input_ids, attention_mask, prefix_length)
    if groups is None:
        return None
    try:
        return shared_prefix_forward(model, input_ids, attention_mask, prefix_length, groups, **kwargs)
    except PrefixNotShared:
        return None


def prefix_cache(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, prefix_length: int,
                 groups: tuple[torch.Tensor, torch.Tensor]) -> dict:
    """The KV cache of every row's first ``prefix_length`` columns, computed once per distinct prefix,
    as the keyword argument the model's forward (and ``generate``) takes it by: ``{name: cache}``."""
    first, index = groups
    P = prefix_length
    positions = position_ids_from_mask(attention_mask)  # (B, T)
    parameters = _forward_parameters(model)
    name = "cache" if "cache" in parameters else "past_key_values"  # renamed in transformers 5
    head = {"logits_to_keep": 1} if "logits_to_keep" in parameters else {}  # a causal LM: no logits over the prefix
    prefix = model(input_ids=input_ids[first, :P], attention_mask=attention_mask[first, :P],
                   position_ids=positions[first, :P], use_cache=True, **head)  # U rows
    cache = _output_cache(prefix)
    if cache is None or not hasattr(cache, "batch_select_indices"):
        raise _not_shared(model, "it returned no KV cache")
    cache.batch_select_indices(index)  # U rows -> B rows (differentiable indexing)
    return {name: cache}


def _supports_cache(model) -> bool:
    name = type(model).__name__
    if name in WRAPPERS or name.startswith("FSDP") or getattr(model, _NO_CACHE, False):  # FSDP2: FSDP<class name>
        return False
    base = _unwrapped(model)
    checkpointing = getattr(base, "is_activation_checkpointing", None)  # recent transformers; before, the old name
    if checkpointing is None:
        checkpointing = getattr(base, "is_gradient_checkpointing", False)
    return not (checkpointing and getattr(model, "training", False))


def _not_shared(model, why: str) -> PrefixNotShared:
    """Mark the model so that it is not tried again, warn once, and say why."""
    setattr(model, _NO_CACHE, True)
    message = f"{type(model).__name__} cannot run a shared prefix once ({why}); it runs every row in full from now on"
    warnings.warn(message, stacklevel=3)
    return PrefixNotShared(message)


def _forward_parameters(model) -> set[str]:
    """The keywords of the model's forward (a PEFT model's: its base model's, which it passes them to)."""
    base = _unwrapped(model)
    return set(inspect.signature(base.forward).parameters)


def _unwrapped(model):
    """The transformers model under PEFT, whose forward and settings count."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _output_cache(output):
    cache = output.get("cache") if hasattr(output, "get") else None
    return cache if cache is not None else getattr(output, "past_key_values", None)
