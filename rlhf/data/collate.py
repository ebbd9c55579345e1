"""Pad tokenized examples into tensors, and group examples of similar length into batches.

- :func:`collate_sft`: right padding; labels are -100 on padding so it carries no loss.
- :func:`collate_pairs`: the B chosen sequences then the B rejected ones in ONE (2B, T)
  batch, so a single forward pass scores both sides of every pair (as TRL's
  ``concatenated_forward`` does for DPO).
- :func:`collate_prompts`: LEFT padding, because generation appends after the last column
  and every prompt must end there.
"""

from __future__ import annotations

import random
from typing import Mapping, Sequence

import torch

from rlhf.data.tokenize import IGNORE_INDEX


def pad_sequences(sequences: Sequence[Sequence[int]], value: int, padding_side: str = "right") -> torch.Tensor:
    """Stack int lists into a (N, T) LongTensor, T the longest, filling with ``value``."""
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    width = max((len(s) for s in sequences), default=0)
    out = torch.full((len(sequences), width), value, dtype=torch.long)  # (N, T)
    for row, seq in enumerate(sequences):
        if len(seq):
            if padding_side == "right":
                out[row, :len(seq)] = torch.tensor(seq, dtype=torch.long)
            else:
                out[row, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
    return out


def collate_sft(examples: Sequence[Mapping], pad_token_id: int) -> dict[str, torch.Tensor]:
    """``input_ids``, ``attention_mask``, ``labels``, each (B, T), right padded."""
    ids = [e["input_ids"] for e in examples]
    return {
        "input_ids": pad_sequences(ids, pad_token_id),  # (B, T)
        "attention_mask": pad_sequences([[1] * len(s) for s in ids], 0),  # (B, T)
        "labels": pad_sequences([e["labels"] for e in examples], IGNORE_INDEX),  # (B, T)
    }


def collate_pairs(examples: Sequence[Mapping], pad_token_id: int, padding_side: str = "right",
                  labeler_weights: Mapping[str, float] | None = None) -> dict[str, torch.Tensor]:
    """One batch of 2B rows: rows ``[:B]`` are prompt + chosen, rows ``[B:]`` prompt + rejected.

    Returns ``input_ids``, ``attention_mask`` and ``response_mask`` (1 on response tokens,
    eos included), each (2B, T); ``margin`` (B,) with 0.0 where a pair has none; and, when
    ``labeler_weights`` is given or any example has a ``weight``, ``weights`` (B,): the pair's
    own weight (its record's, e.g. a new labeler's early label; 1.0 when None) times its
    labeler's weight (1.0 for a labeler not in the map, or no labeler). Without either the
    batch has no ``weights`` and the loss is the plain mean, exactly as before. Left padding
    puts every sequence's last token in the last column, which suits a reward model that reads
    the final position.
    """
    sequences, response_masks = [], []
    for side in ("chosen_ids", "rejected_ids"):
        for e in examples:
            sequences.append(list(e["prompt_ids"]) + list(e[side]))
            response_masks.append([0] * len(e["prompt_ids"]) + [1] * len(e[side]))
    batch = {
        "input_ids": pad_sequences(sequences, pad_token_id, padding_side),  # (2B, T)
        "attention_mask": pad_sequences([[1] * len(s) for s in sequences], 0, padding_side),  # (2B, T)
        "response_mask": pad_sequences(response_masks, 0, padding_side),  # (2B, T)
        "margin": torch.tensor([e.get("margin") or 0.0 for e in examples], dtype=torch.float32),  # (B,)
    }
    if labeler_weights is not None or any(e.get("weight") is not None for e in examples):
        weights = [pair_weight(e, labeler_weights) for e in examples]
        batch["weights"] = torch.tensor(weights, dtype=torch.float32)  # (B,)
    return batch


def pair_weight(example: Mapping, labeler_weights: Mapping[str, float] | None = None) -> float:
    """A pair's loss weight: record weight x labeler weight, each 1.0 when not given."""
    record = example.get("weight")
    labeler = 1.0 if labeler_weights is None else labeler_weights.get(example.get("labeler"), 1.0)
    return (1.0 if record is None else float(record)) * float(labeler)


def collate_prompts(examples: Sequence[Mapping], pad_token_id: int) -> dict[str, torch.Tensor]:
    """``input_ids`` and ``attention_mask``, each (B, T), LEFT padded for generation."""
    ids = [e["input_ids"] for e in examples]
    return {
        "input_ids": pad_sequences(ids, pad_token_id, "left"),  # (B, T)
        "attention_mask": pad_sequences([[1] * len(s) for s in ids], 0, "left"),  # (B, T)
    }


def length_grouped_batches(lengths: Sequence[int], batch_size: int, seed: int, shuffle: bool = True,
                           mega_batch_mult: int = 50) -> list[list[int]]:
    """Batches of indices whose examples have similar lengths, to cut padding.

    As Hugging Face's ``LengthGroupedSampler``: shuffle the indices (seeded), cut them into
    mega-batches of ``mega_batch_mult * batch_size``, sort each mega-batch by length
    (longest first) and cut it into batches. Randomness survives across mega-batches while
    padding within a batch shrinks. The batch holding the longest example goes first, so an
    out-of-memory error shows at step one, not hours in. Every index appears exactly once;
    the last batch may be smaller. Deterministic for a given seed.
    """
    if batch_size < 1 or mega_batch_mult < 1:
        raise ValueError("batch_size and mega_batch_mult must be positive")
    order = list(range(len(lengths)))
    if shuffle:
        random.Random(seed).shuffle(order)
    mega = batch_size * mega_batch_mult
    batches = []
    for start in range(0, len(order), mega):
        group = sorted(order[start:start + mega], key=lambda i: lengths[i], reverse=True)
        batches.extend(group[k:k + batch_size] for k in range(0, len(group), batch_size))
    if batches:
        longest = max(range(len(batches)), key=lambda b: lengths[batches[b][0]])
        batches[0], batches[longest] = batches[longest], batches[0]
    return batches
