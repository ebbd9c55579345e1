"""Stage 1 options: supervised fine-tuning on demonstrations."""

from __future__ import annotations

from dataclasses import dataclass, field

from rlhf.config.base import ConfigError, TrainingConfig
from rlhf.config.data_fields import (APPLY_CHAT_TEMPLATE_HELP, COMPLETION_FIELD_HELP, PROMPT_FIELD_HELP,
                                    validate_field_names)


@dataclass
class SFTConfig(TrainingConfig):
    """Fine-tune a causal LM with next-token loss on the response tokens of (prompt, completion) pairs."""

    output_dir: str = field(default="runs/sft", metadata={"help": "Where this stage writes its model, metrics and checkpoints."})
    train_file: str = field(
        default="",
        metadata={"help": "Demonstrations: JSONL/JSON of {prompt, completion} or {messages}, or a saved datasets folder."},
    )
    eval_file: str = field(default="", metadata={"help": "Held-out demonstrations; empty: hold out eval_fraction of train_file."})
    eval_fraction: float = field(default=0.0, metadata={"help": "Fraction of train_file held out for evaluation when eval_file is empty."})
    eval_steps: int = field(default=0, metadata={"help": "Evaluate every this many optimizer steps (0: only at the end)."})
    completion_only_loss: bool = field(
        default=True,
        metadata={"help": "Loss on response tokens only (prompt tokens masked), as in InstructGPT; false trains on the whole sequence."},
    )
    group_by_length: bool = field(
        default=True,
        metadata={"help": "Batch examples of similar length together so little compute goes to padding."},
    )
    learning_rate: float = field(default=1e-4, metadata={"help": "Peak learning rate of AdamW."})
    warmup_ratio: float = field(default=0.05, metadata={"help": "Fraction of the optimizer steps spent warming up linearly from 0."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Learning-rate schedule after warm-up: linear, cosine or constant."})
    prompt_field: str = field(default="prompt", metadata={"help": PROMPT_FIELD_HELP})
    completion_field: str = field(default="completion", metadata={"help": COMPLETION_FIELD_HELP})
    apply_chat_template: bool = field(default=False, metadata={"help": APPLY_CHAT_TEMPLATE_HELP})

    def validate(self) -> None:
        super().validate()
        if not self.train_file:
            raise ConfigError("sft needs --train_file (demonstrations in JSONL/JSON or a saved datasets folder)")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ConfigError(f"eval_fraction must be in [0, 1), got {self.eval_fraction}")
        validate_field_names(self, ("prompt_field", "completion_field"))
