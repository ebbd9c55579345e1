"""Options of Direct Preference Optimization and its variants."""

from __future__ import annotations

from dataclasses import dataclass, field

from rlhf.config.base import ConfigError, TrainingConfig
from rlhf.config.data_fields import (APPLY_CHAT_TEMPLATE_HELP, CHOSEN_FIELD_HELP, PROMPT_FIELD_HELP,
                                    REJECTED_FIELD_HELP, validate_field_names)

LOSS_TYPES = ("sigmoid", "ipo", "hinge")


@dataclass
class DPOConfig(TrainingConfig):
    """Optimise the policy directly on comparisons against a frozen reference (Rafailov et al. 2023)."""

    output_dir: str = field(default="runs/dpo", metadata={"help": "Where this stage writes its model, metrics and checkpoints."})
    model_name_or_path: str = field(default="", metadata={"help": "The starting policy: normally the SFT checkpoint."})
    ref_model_path: str = field(default="", metadata={"help": "Frozen reference; empty: the starting policy."})
    train_file: str = field(default="", metadata={"help": "Comparisons or rankings, in any format `rlhf rm` reads."})
    eval_file: str = field(default="", metadata={"help": "Held-out comparisons; empty: hold out eval_fraction of train_file."})
    eval_fraction: float = field(default=0.1, metadata={"help": "Fraction of train_file held out when eval_file is empty."})
    loss_type: str = field(
        default="sigmoid",
        metadata={"help": "sigmoid (DPO; with label_smoothing > 0 conservative DPO), ipo (on length-averaged "
                  "log-probs), or hinge (SLiC)."},
    )
    beta: float = field(default=0.1, metadata={"help": "Strength of the implicit KL constraint to the reference."})
    label_smoothing: float = field(
        default=0.0,
        metadata={"help": "Assumed probability that a label is flipped (conservative DPO; sigmoid loss only)."},
    )
    precompute_ref_log_probs: bool = field(
        default=False,
        metadata={"help": "Compute the reference's log-probs once before training and free the reference model."},
    )
    group_by_length: bool = field(
        default=True,
        metadata={"help": "Batch pairs of similar length together so little compute goes to padding."},
    )
    learning_rate: float = field(default=5e-6, metadata={"help": "Peak learning rate of AdamW."})
    warmup_ratio: float = field(default=0.1, metadata={"help": "Fraction of the optimizer steps spent warming up linearly from 0."})
    prompt_field: str = field(default="prompt", metadata={"help": PROMPT_FIELD_HELP})
    chosen_field: str = field(default="chosen", metadata={"help": CHOSEN_FIELD_HELP})
    rejected_field: str = field(default="rejected", metadata={"help": REJECTED_FIELD_HELP})
    apply_chat_template: bool = field(default=False, metadata={"help": APPLY_CHAT_TEMPLATE_HELP})

    def validate(self) -> None:
        super().validate()
        if not self.model_name_or_path:
            raise ConfigError("dpo needs --model_name_or_path (normally the SFT checkpoint)")
        if not self.train_file:
            raise ConfigError("dpo needs --train_file (comparisons or rankings)")
        if self.loss_type not in LOSS_TYPES:
            raise ConfigError(f"loss_type must be one of {', '.join(LOSS_TYPES)}, got {self.loss_type!r}")
        if self.label_smoothing and self.loss_type != "sigmoid":
            raise ConfigError("label_smoothing applies to the sigmoid loss only")
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ConfigError(f"label_smoothing must be in [0, 0.5), got {self.label_smoothing}")
        if self.beta <= 0:
            raise ConfigError(f"beta must be > 0, got {self.beta}")
        validate_field_names(self, ("prompt_field", "chosen_field", "rejected_field"))
