"""Position ids for padded batches."""

from __future__ import annotations

import torch


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that count only real tokens, so a left-padded row sees the same positions
    as the same row right-padded."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # (B, T)
