"""Options of ``rlhf gsm8k-eval``: greedy GSM8K test accuracy of a policy on a fixed subset."""

from __future__ import annotations

from dataclasses import dataclass, field

from rlhf.config.base import ConfigError


@dataclass
class GSM8KEvalConfig:
    """Greedy answers to the first ``num_problems`` problems of a GSM8K file, scored by final answer."""

    model_name_or_path: str = field(default="", metadata={"help": "The policy to evaluate (a local causal LM folder)."})
    test_file: str = field(
        default="../shared/data/gsm8k/test.jsonl",
        metadata={"help": "GSM8K records {question, answer} (JSON lines); the answer ends with '#### <number>'."},
    )
    num_problems: int = field(
        default=100,
        metadata={"help": "Evaluate the first N problems of test_file (a fixed subset, the same for every model; "
                  "0: all)."},
    )
    first_problem: int = field(
        default=0,
        metadata={"help": "Skip this many problems first: evaluate problems first_problem .. first_problem + "
                  "num_problems - 1 (to split one subset over several processes)."},
    )
    apply_chat_template: bool = field(
        default=True,
        metadata={"help": "Render each question as a user turn with the model's chat template, as `rlhf sft "
                  "--apply_chat_template true` did in training."},
    )
    max_new_tokens: int = field(default=256, metadata={"help": "Longest answer in tokens; a cut answer is scored as it is."})
    batch_size: int = field(default=16, metadata={"help": "Problems per generation batch."})
    output_file: str = field(
        default="",
        metadata={"help": "Write the summary here as JSON, and each problem's answer beside it as "
                  "<output_file stem>.samples.jsonl; empty: print only."},
    )

    def validate(self) -> None:
        if not self.model_name_or_path:
            raise ConfigError("gsm8k-eval needs --model_name_or_path (the policy to evaluate)")
        if self.num_problems < 0:
            raise ConfigError(f"num_problems must be >= 0 (0: all), got {self.num_problems}")
        if self.first_problem < 0:
            raise ConfigError(f"first_problem must be >= 0, got {self.first_problem}")
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
