"""Options every online-RL stage (``rlhf ppo``, ``rlhf grpo``) means the same way: the policy, the
prompts, sampling, the treatment of bad rewards, evaluation and reporting.

A stage's config derives from ``OnlineRLConfig`` and adds what is its own: how rewards are read
and combined, the KL term, the advantage and the loss. An option whose wording differs between
the stages but whose default and rules do not (``max_steps`` counts "PPO steps" in PPO) is
re-worded with ``with_help``, so its default still lives here only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from rlhf.config.base import ConfigError, TrainingConfig
from rlhf.config.data_fields import (APPLY_CHAT_TEMPLATE_HELP, PROMPT_FIELD_HELP, PROMPT_TRUNCATION_HELP,
                                    PROMPT_TRUNCATION_MODES, validate_field_names)
from rlhf.config.monitors import MonitorOptions


@dataclass
class OnlineRLConfig(MonitorOptions, TrainingConfig):
    """Sample responses to prompts from the policy, score them, update the policy; repeat.

    A stage sets ``command`` (its name in error messages) and validates its own options after
    ``super().validate()``."""

    command: ClassVar[str] = "online"

    model_name_or_path: str = field(default="", metadata={"help": "The starting policy: normally the SFT checkpoint."})
    max_steps: int = field(default=100, metadata={"help": "Steps (rollout + optimisation) to run."})
    learning_rate: float = field(default=1e-5, metadata={"help": "Peak learning rate of AdamW."})
    lr_scheduler_type: str = field(default="constant", metadata={"help": "Learning-rate schedule after warm-up: linear, cosine or constant."})
    logging_steps: int = field(default=1, metadata={"help": "Write metrics every this many steps."})
    prompts_file: str = field(default="", metadata={"help": "Prompts ({prompt} or conversational) for rollouts."})
    eval_prompts_file: str = field(default="", metadata={"help": "Held-out prompts scored at the end (and every eval_steps)."})
    eval_steps: int = field(default=0, metadata={"help": "Evaluate on eval_prompts_file every this many steps (0: only at the end)."})
    max_prompt_length: int = field(default=128, metadata={"help": "Prompts longer than this keep their last tokens."})
    # Sampling
    max_new_tokens: int = field(default=48, metadata={"help": "Longest response in tokens."})
    min_new_tokens: int = field(
        default=0,
        metadata={"help": "Shortest response in tokens: end-of-text is not sampled before it (0: off). Setting it "
                  "equal to max_new_tokens gives fixed-length responses, as in benchmarks."},
    )
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature; log-probs are taken at this temperature too."})
    top_k: int = field(default=0, metadata={"help": "Sample among the k most likely tokens (0: all)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass (1: off)."})
    # Rewards
    missing_eos_penalty: float = field(
        default=0.0,
        metadata={"help": "Subtracted from the score of a response that never reaches end-of-text (0: off)."},
    )
    skip_bad_rewards: bool = field(
        default=False,
        metadata={"help": "When reward_function raises or returns NaN/inf for a response, skip that sample (no "
                  "gradient; counted as objective/skipped_rewards; the first is reported in a warning) instead "
                  "of stopping with an error naming the function and the prompt. Never averaged in."},
    )
    # Reporting
    gold_reward_function: str = field(
        default="",
        metadata={"help": "Optional gold reward, module:name or path/to/file.py:name, logged as gold/score (never used "
                  "for training): f(prompts, responses, ended, **fields) as reward_function, with prompts as the "
                  "policy saw them (decoded); the embedded task's is rlhf.embedded.gold:gold_rewards."},
    )
    sample_every: int = field(
        default=10,
        metadata={"help": "Log a few sample responses every this many steps (0: never): to TensorBoard, and one JSON "
                  "line each {step, prompt, response, score[, gold_score]} in output_dir/samples.jsonl."},
    )
    num_samples_to_log: int = field(default=3, metadata={"help": "How many sample responses each time."})
    prompt_field: str = field(default="prompt", metadata={"help": PROMPT_FIELD_HELP})
    apply_chat_template: bool = field(default=False, metadata={"help": APPLY_CHAT_TEMPLATE_HELP})
    prompt_truncation: str = field(default="keep_head", metadata={"help": PROMPT_TRUNCATION_HELP})

    def validate(self) -> None:
        super().validate()  # TrainingConfig's rules (model_name_or_path is required there), then the monitors'
        if not self.prompts_file:
            raise ConfigError(f"{self.command} needs --prompts_file")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ConfigError(f"min_new_tokens must be between 0 and max_new_tokens ({self.max_new_tokens}), "
                              f"got {self.min_new_tokens}")
        if self.temperature <= 0:
            raise ConfigError("temperature must be > 0 (log-probs are taken at the sampling temperature)")
        validate_field_names(self, ("prompt_field",))
        if self.prompt_truncation not in PROMPT_TRUNCATION_MODES:
            raise ConfigError(f"prompt_truncation must be one of {', '.join(PROMPT_TRUNCATION_MODES)}, "
                              f"got {self.prompt_truncation!r}")


def online_help(name: str) -> str:
    """The help text of ``OnlineRLConfig``'s option ``name``, for a stage that adds a sentence to it."""
    return OnlineRLConfig.__dataclass_fields__[name].metadata["help"]


def with_help(name: str, help: str) -> Any:
    """``OnlineRLConfig``'s field ``name`` with a stage's own wording: the default stays the base's,
    so the two stages cannot drift apart on it (``max_steps: int = with_help("max_steps", "PPO steps ...")``)."""
    base = OnlineRLConfig.__dataclass_fields__[name]
    if base.default is dataclasses.MISSING:
        raise TypeError(f"with_help: OnlineRLConfig.{name} has no plain default")
    return field(default=base.default, metadata={**base.metadata, "help": help})
