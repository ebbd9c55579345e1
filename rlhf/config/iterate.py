"""Options of ``rlhf iterate``: rounds of sample -> label -> reward model -> policy -> evaluate."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Union

from rlhf.config.base import ConfigError, stage_options

FEEDBACK_SOURCES = ("people", "gold", "ai", "labeling")
POLICY_METHODS = ("ppo", "dpo", "best_of_n")


@dataclass
class IterateConfig:
    """Iterative RLHF (InstructGPT, Llama 2, ChatGPT): each round the current policy's samples are
    ranked, the reward model learns from every label so far, and the policy is optimised again."""

    model_name_or_path: str = field(default="", metadata={"help": "The starting policy (normally an `rlhf sft` model)."})
    output_dir: str = field(default="runs/iterate", metadata={"help": "Round r is written to output_dir/round_<r>."})
    rounds: int = field(default=3, metadata={"help": "How many rounds to run (a resumed run can add more)."})
    prompts_file: str = field(
        default="",
        metadata={"help": "The pool of prompts; each round takes the next prompts_per_round of them (fresh prompts), "
                  "and PPO trains on the whole pool."},
    )
    eval_prompts_file: str = field(default="", metadata={"help": "Held-out prompts every round is evaluated on."})
    prompts_per_round: int = field(default=200, metadata={"help": "Fresh prompts sampled and ranked each round."})
    samples_per_prompt: int = field(default=4, metadata={"help": "K: responses sampled per prompt and ranked together."})
    initial_labels_file: str = field(
        default="",
        metadata={"help": "Rankings or comparisons gathered before round 1 (e.g. on the SFT policy's samples), "
                  "trained on in every round with the rounds' own labels."},
    )
    feedback: str = field(
        default="people",
        metadata={"help": "Who ranks the samples: people (the embedded task's simulated labelers), gold (the embedded "
                  "gold rubric, noise-free), ai (the judge in --judge, under the default constitution) or labeling (a "
                  "labeling project in the web app, created in the round's folder; the round waits until it is "
                  "complete; docs/iterative.md)."},
    )
    judge: str = field(default="~/.cache/rlhf/smollm2-135m-instruct",
                       metadata={"help": "With --feedback ai: a local folder of the judge model."})
    keep_position_flips: bool = field(
        default=False,
        metadata={"help": "With --feedback ai: label a pair whose verdict changes with the order by the mean of both "
                  "orders instead of giving it no label (as `rlhf demo`)."},
    )
    labeling_overlap: int = field(default=1, metadata={"help": "With --feedback labeling: labels wanted per item."})
    labeling_poll_seconds: float = field(
        default=10.0, metadata={"help": "With --feedback labeling: how often the round checks whether labeling is complete."})
    labeling_timeout_hours: float = field(
        default=72.0, metadata={"help": "With --feedback labeling: give up waiting after this long (resume to wait more)."})
    rm_init: str = field(
        default="retrain",
        metadata={"help": "retrain: each round's reward model starts from model_name_or_path (or rm_model_name_or_path) "
                  "and learns all labels so far; continue: it starts from the previous round's reward model (round 1: "
                  "reward_model_path if set) and learns all labels so far again."},
    )
    rm_model_name_or_path: str = field(default="", metadata={"help": "What a retrained reward model starts from; empty: model_name_or_path."})
    reward_model_path: str = field(default="", metadata={"help": "With rm_init continue: the reward model round 1 continues."})
    policy_method: str = field(
        default="ppo",
        metadata={"help": "How each round optimises the policy: ppo (against the round's reward model), dpo (on all "
                  "labels so far) or best_of_n (fine-tuning on the best of best_of_n samples by the reward model, "
                  "Llama 2's rejection sampling)."},
    )
    reference: str = field(
        default="keep",
        metadata={"help": "keep: the KL anchor (PPO) / DPO reference stays model_name_or_path every round; move: it is "
                  "the round's starting policy, so each round may move as far again."},
    )
    best_of_n: int = field(default=4, metadata={"help": "n of policy_method best_of_n."})
    gold_reward_function: str = field(
        default="",
        metadata={"help": "Optional gold reward, module:name or path/to/file.py:name (f(prompts, responses, ended)): "
                  "evaluation reports gold and the reward model's agreement with it. The embedded task's is "
                  "rlhf.embedded.gold:gold_rewards."},
    )
    eval_samples_per_prompt: int = field(default=4, metadata={"help": "Samples per held-out prompt in the evaluation."})
    max_new_tokens: int = field(default=40, metadata={"help": "Longest sampled response (sampling, PPO, evaluation)."})
    seed: int = field(default=0, metadata={"help": "Seed of the samples, the labelers and every stage (round r adds r)."})
    disable_tqdm: bool = field(default=False, metadata={"help": "Hide progress bars."})
    resume: bool = field(
        default=False,
        metadata={"help": "Continue a killed run: finished steps of each round are skipped, an interrupted training "
                  "stage resumes from its newest checkpoint."},
    )
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Replace the rounds already in output_dir."})
    # Optional[Union[dict, str]]: a mapping in YAML, a JSON object on the command line (as `rlhf pipeline`).
    rm: Optional[Union[dict, str]] = field(default=None, metadata={"help": "Options of each round's `rlhf rm` (override the defaults)."})
    ppo: Optional[Union[dict, str]] = field(default=None, metadata={"help": "Options of each round's `rlhf ppo`."})
    dpo: Optional[Union[dict, str]] = field(default=None, metadata={"help": "Options of each round's `rlhf dpo`."})
    sft: Optional[Union[dict, str]] = field(default=None, metadata={"help": "Options of each round's best-of-n fine-tuning (`rlhf sft`)."})

    def section(self, name: str) -> dict[str, Any]:
        return stage_options("iterate", name, getattr(self, name))

    def validate(self) -> None:
        if not self.model_name_or_path:
            raise ConfigError("iterate needs model_name_or_path (the starting policy, normally an SFT model)")
        if not self.prompts_file:
            raise ConfigError("iterate needs prompts_file (the pool each round takes fresh prompts from)")
        choices = {"feedback": FEEDBACK_SOURCES, "policy_method": POLICY_METHODS, "rm_init": ("retrain", "continue"),
                   "reference": ("keep", "move")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        for name in ("rounds", "prompts_per_round", "eval_samples_per_prompt", "labeling_overlap", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.samples_per_prompt < 2:
            raise ConfigError(f"samples_per_prompt must be at least 2 (a ranking compares), got {self.samples_per_prompt}")
        if self.policy_method == "best_of_n" and self.best_of_n < 2:
            raise ConfigError(f"best_of_n must be at least 2 with policy_method best_of_n, got {self.best_of_n}")
        if self.resume and self.overwrite_output_dir:
            raise ConfigError("iterate: --resume continues output_dir and --overwrite_output_dir deletes it: pass one")
        for name in ("rm", "ppo", "dpo", "sft"):
            self.section(name)
