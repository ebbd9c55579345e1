"""Which prompts each PPO step samples: every process walks its own shuffled pass over the
prompts, so processes generate different rollouts and a resumed run continues where it was."""

from __future__ import annotations

import torch

from rlhf.config.base import ConfigError


class PromptSampler:
    def __init__(self, num_prompts: int, batch_size: int, seed: int, rank: int = 0):
        if num_prompts == 0:
            raise ConfigError("no prompts to sample from: the prompts file gave none (all were skipped?)")
        self.num_prompts, self.batch_size = num_prompts, batch_size
        self.seed, self.rank = seed, rank
        self.epoch, self.position = 0, 0

    def _order(self) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.rank * 7919 + self.epoch)
        return torch.randperm(self.num_prompts, generator=generator).tolist()

    def next_batch(self) -> list[int]:
        """``batch_size`` prompt indices, continuing into the next shuffled pass when one runs out."""
        indices, order = [], self._order()
        while len(indices) < self.batch_size:
            if self.position >= self.num_prompts:
                self.epoch, self.position = self.epoch + 1, 0
                order = self._order()
            take = min(self.batch_size - len(indices), self.num_prompts - self.position)
            indices += order[self.position:self.position + take]
            self.position += take
        return indices

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
