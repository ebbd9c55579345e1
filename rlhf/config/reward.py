"""Stage 2 options: the reward model."""

from __future__ import annotations

from dataclasses import dataclass, field

from rlhf.config.base import ConfigError, TrainingConfig, parse_name_values
from rlhf.config.data_fields import (APPLY_CHAT_TEMPLATE_HELP, CHOSEN_FIELD_HELP, PROMPT_FIELD_HELP,
                                    REJECTED_FIELD_HELP, validate_field_names)


@dataclass
class RewardConfig(TrainingConfig):
    """Train a scalar reward on pairwise comparisons with the Bradley-Terry loss."""

    output_dir: str = field(default="runs/rm", metadata={"help": "Where this stage writes its model, metrics and checkpoints."})
    model_name_or_path: str = field(
        default="",
        metadata={"help": "Local causal LM to start the backbone from: normally the SFT checkpoint (InstructGPT 3.5)."},
    )
    train_file: str = field(
        default="",
        metadata={"help": "Comparisons ({prompt, chosen, rejected}, HH-RLHF {chosen, rejected}, conversational) "
                  "or rankings ({prompt, responses, ranking}), expanded to K(K-1)/2 pairs. An optional per-record "
                  "'weight' (a number >= 0, e.g. from rlhf label export) weights the record's pairs in the loss."},
    )
    eval_file: str = field(default="", metadata={"help": "Held-out comparisons; empty: hold out eval_fraction of train_file."})
    eval_fraction: float = field(default=0.1, metadata={"help": "Fraction of train_file held out when eval_file is empty."})
    use_margin: bool = field(default=True, metadata={"help": "Subtract each pair's 'margin' inside the loss when the data has one (Llama 2)."})
    center_rewards_coefficient: float = field(
        default=0.0,
        metadata={"help": "Weight of mean((r_chosen + r_rejected)^2), which keeps rewards near zero mean (0 disables)."},
    )
    labeler_weights: str = field(
        default="",
        metadata={"help": "Per-labeler loss weights as name=weight,name=weight (others 1.0), e.g. to down-weight "
                  "low-agreement labelers in a hand-made file; multiplied with each record's 'weight' (an "
                  "rlhf label export already carries the labeler's weight in it: don't pass both)."},
    )
    calibration_bins: int = field(default=5, metadata={"help": "Bins of predicted confidence for the calibration table."})
    stats_max_pairs: int = field(
        default=256,
        metadata={"help": "Training pairs (a seeded random sample) scored after training for the reward mean/std "
                  "saved with the model (PPO normalises with them); a few hundred give the std to a few percent."},
    )
    group_by_length: bool = field(
        default=True,
        metadata={"help": "Batch pairs of similar length together so little compute goes to padding."},
    )
    learning_rate: float = field(default=5e-5, metadata={"help": "Peak learning rate of AdamW."})
    warmup_ratio: float = field(default=0.05, metadata={"help": "Fraction of the optimizer steps spent warming up linearly from 0."})
    prompt_field: str = field(default="prompt", metadata={"help": PROMPT_FIELD_HELP})
    chosen_field: str = field(default="chosen", metadata={"help": CHOSEN_FIELD_HELP})
    rejected_field: str = field(default="rejected", metadata={"help": REJECTED_FIELD_HELP})
    apply_chat_template: bool = field(default=False, metadata={"help": APPLY_CHAT_TEMPLATE_HELP})

    def validate(self) -> None:
        super().validate()
        if not self.model_name_or_path:
            raise ConfigError("rm needs --model_name_or_path (normally the SFT checkpoint)")
        if not self.train_file:
            raise ConfigError("rm needs --train_file (comparisons or rankings)")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ConfigError(f"eval_fraction must be in [0, 1), got {self.eval_fraction}")
        validate_field_names(self, ("prompt_field", "chosen_field", "rejected_field"))
        self.parsed_labeler_weights()

    def parsed_labeler_weights(self) -> dict[str, float]:
        return parse_name_values(self.labeler_weights, "labeler_weights", "name=weight")
