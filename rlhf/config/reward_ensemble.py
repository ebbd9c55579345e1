"""Options of ``rlhf rm-ensemble``: K reward models, each trained as ``rlhf rm`` with its own seed."""

from __future__ import annotations

from dataclasses import dataclass, field

from rlhf.config.base import ConfigError
from rlhf.config.reward import RewardConfig


@dataclass
class RewardEnsembleConfig(RewardConfig):
    """Every ``rlhf rm`` option, applied to each member; member k trains with seed ``seed + k``
    into ``output_dir/member_k``."""

    output_dir: str = field(
        default="runs/rm_ensemble",
        metadata={"help": "Where the members go (output_dir/member_0, member_1, ...) and ensemble.json, which names "
                  "them for `rlhf ppo --reward_model_path` (comma-separated)."},
    )
    num_models: int = field(default=3, metadata={"help": "K, the number of members (Coste et al. 2024 use 5)."})
    bootstrap: bool = field(
        default=False,
        metadata={"help": "Also give each member its own bootstrap sample of the training records (drawn with "
                  "replacement, as many as there are): members then differ in data as well as in initialisation "
                  "and order. Without eval_file, a seeded eval_fraction of the records is held out first, the same "
                  "for every member, so no member is evaluated on records it trained on."},
    )

    def validate(self) -> None:
        super().validate()
        if self.num_models < 1:
            raise ConfigError(f"num_models must be at least 1, got {self.num_models}")
