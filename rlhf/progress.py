"""The progress bar of a phase that is not a training step (an evaluation, the reward statistics,
the reference's log-probs): it says what runs and over how many items, and disappears when done.
Importable from every layer, like atomic_io."""

from __future__ import annotations

from typing import Iterable


def phase_bar(iterable: Iterable, description: str, size: str, main_process: bool = True):
    """``iterable`` under a bar "description (size)", e.g. "rm eval (116 pairs)"; no bar when
    ``description`` is empty (the caller's --disable_tqdm) or on other processes than the main one."""
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=f"{description} ({size})", leave=False, disable=not description or not main_process)
