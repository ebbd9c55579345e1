"""Options of ``rlhf best-of-n``: sample n responses per prompt, keep the one the reward scores highest."""

from __future__ import annotations

from dataclasses import dataclass, field

from rlhf.config.base import ConfigError
from rlhf.config.data_fields import APPLY_CHAT_TEMPLATE_HELP, PROMPT_FIELD_HELP, validate_field_names


@dataclass
class BestOfNConfig:
    """Best-of-n sampling (Stiennon et al. 2020; rejection sampling in Llama 2, section 3.2.3)."""

    model_name_or_path: str = field(default="", metadata={"help": "The policy to sample from (a local causal LM)."})
    reward_model_path: str = field(
        default="",
        metadata={"help": "Reward model from `rlhf rm`; several comma-separated paths make an ensemble, combined by "
                  "reward_aggregation."},
    )
    reward_function: str = field(
        default="",
        metadata={"help": "Instead of a reward model: a Python function module:name or path/to/file.py:name, called "
                  "as f(prompts, responses, ended, **fields) as in `rlhf ppo`."},
    )
    reward_aggregation: str = field(
        default="mean",
        metadata={"help": "How an ensemble's scores become one: mean, min (worst case) or mean_minus_std."},
    )
    reward_uncertainty_coef: float = field(default=1.0, metadata={"help": "lambda of mean_minus_std (>= 0)."})
    prompts_file: str = field(default="", metadata={"help": "Prompts ({prompt} or conversational), one response chosen for each."})
    prompt_field: str = field(default="prompt", metadata={"help": PROMPT_FIELD_HELP})
    apply_chat_template: bool = field(default=False, metadata={"help": APPLY_CHAT_TEMPLATE_HELP})
    max_prompt_length: int = field(default=128, metadata={"help": "Prompts longer than this keep their head and end."})
    n: int = field(default=16, metadata={"help": "Samples per prompt; the highest-scoring one is kept. KL to the "
                                               "policy is log n - (n - 1) / n nats."})
    output_file: str = field(
        default="best_of_n.jsonl",
        metadata={"help": "Where the chosen responses go, one JSON line each: {prompt, response, score, "
                  "mean_score, ended}."},
    )
    demonstrations_file: str = field(
        default="",
        metadata={"help": "Also write the chosen responses as SFT demonstrations {prompt, completion} here, for "
                  "rejection-sampling fine-tuning (`rlhf sft --train_file` this file). Responses that never "
                  "reached end-of-text are left out of it."},
    )
    overwrite: bool = field(default=False, metadata={"help": "Replace output files that exist; without it they are refused."})
    max_new_tokens: int = field(default=48, metadata={"help": "Longest response in tokens."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature."})
    top_k: int = field(default=0, metadata={"help": "Sample among the k most likely tokens (0: all)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass (1: off)."})
    batch_size: int = field(default=16, metadata={"help": "Prompts per generation batch (each sampled n times)."})
    seed: int = field(default=0, metadata={"help": "Seed of the sampling; same seed, same responses."})
    disable_tqdm: bool = field(default=False, metadata={"help": "Hide the progress bar."})

    def validate(self) -> None:
        if not self.model_name_or_path:
            raise ConfigError("best-of-n needs --model_name_or_path (the policy to sample from)")
        if not self.prompts_file:
            raise ConfigError("best-of-n needs --prompts_file")
        if bool(self.reward_model_path) == bool(self.reward_function):
            raise ConfigError("best-of-n needs exactly one of --reward_model_path and --reward_function")
        if self.n < 1:
            raise ConfigError(f"n must be at least 1, got {self.n}")
        if self.batch_size < 1 or self.max_new_tokens < 1 or self.max_prompt_length < 1:
            raise ConfigError("batch_size, max_new_tokens and max_prompt_length must be at least 1")
        if self.temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}")
        if self.reward_aggregation not in ("mean", "min", "mean_minus_std"):
            raise ConfigError(f"reward_aggregation must be mean, min or mean_minus_std, got {self.reward_aggregation!r}")
        if self.reward_uncertainty_coef < 0:
            raise ConfigError(f"reward_uncertainty_coef must be >= 0, got {self.reward_uncertainty_coef}")
        if not self.output_file:
            raise ConfigError("best-of-n needs --output_file")
        if self.demonstrations_file and self.demonstrations_file == self.output_file:
            raise ConfigError("demonstrations_file and output_file must be different files")
        validate_field_names(self, ("prompt_field",))
