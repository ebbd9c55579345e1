"""Options of `rlhf grpo`: critic-free online RL (GRPO, Dr. GRPO, RLOO, REINFORCE++).

Names follow TRL's GRPOConfig where the concept is the same (num_generations, beta, epsilon,
epsilon_high, scale_rewards, loss_type, reward_weights, mask_truncated_completions,
num_iterations); the prompts, sampling and reporting options are ``OnlineRLConfig``'s, as in PPO.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rlhf.config.base import ConfigError
from rlhf.config.online import OnlineRLConfig, online_help, with_help

ADVANTAGES = ("grpo", "dr_grpo", "rloo", "reinforce_pp", "reinforce_pp_baseline")
GROUP_ADVANTAGES = ("grpo", "dr_grpo", "rloo", "reinforce_pp_baseline")  # those that compare a prompt's G responses


def split_list(value: str) -> list[str]:
    """``"a, b,"`` -> ["a", "b"]: a comma-separated option as its items."""
    return [item.strip() for item in value.split(",") if item.strip()]


@dataclass
class GRPOConfig(OnlineRLConfig):
    """G responses per prompt, each judged against the others (or the batch) instead of a value function.

    One step = ``rollout_batch_size`` prompts per process, each answered ``num_generations`` times
    (B = rollout_batch_size x num_generations responses), then ``num_iterations`` passes over them in
    minibatches of ``per_device_train_batch_size x gradient_accumulation_steps`` responses."""

    command = "grpo"

    output_dir: str = field(default="runs/grpo", metadata={"help": "Where this stage writes its model, metrics and checkpoints."})
    ref_model_path: str = field(
        default="", metadata={"help": "Frozen reference for the KL term; empty: the starting policy. Not loaded when "
                              "beta is 0."})
    reward_model_path: str = field(
        default="",
        metadata={"help": "Reward model checkpoint(s) from `rlhf rm`, comma-separated; each is one reward, weighted by "
                  "reward_weights (TRL's reward_funcs). Several rewards are summed, not ensembled."},
    )
    reward_function: str = field(
        default="",
        metadata={"help": "Reward function(s), comma-separated, each module:name or path/to/file.py:name, called as "
                  "f(prompts, responses, ended, **fields) -> one finite number per response (see `rlhf ppo --help`); "
                  "each is one reward, weighted by reward_weights. Each is called on two prompts before any model "
                  "loads."},
    )
    reward_weights: str = field(
        default="",
        metadata={"help": "Comma-separated weight of each reward: the reward models first, then the functions, in the "
                  "order given. The score is sum_k w_k r_k; empty: every weight 1 (TRL's reward_weights)."},
    )
    skip_bad_rewards: bool = with_help(
        "skip_bad_rewards", online_help("skip_bad_rewards") + " In GRPO the skipped score's place in its group's "
        "statistics is taken by the batch's mean score.")
    num_generations: int = field(
        default=4,
        metadata={"help": "G: responses sampled per prompt. Group estimators compare a prompt's G responses with each "
                  "other, so G >= 2 for them."},
    )
    advantage: str = field(
        default="grpo",
        metadata={"help": "Advantage estimator: grpo ((r - group mean) / group std, Shao et al. 2024); dr_grpo "
                  "(r - group mean, Liu et al. 2025); rloo (r - mean of the other G - 1, Ahmadian et al. 2024); "
                  "reinforce_pp (per-token KL-shaped returns whitened over the batch, Hu et al. 2025); "
                  "reinforce_pp_baseline (the same after subtracting the group mean). See docs/grpo.md."},
    )
    scale_rewards: str = field(
        default="group",
        metadata={"help": "grpo only: divide by the std of the group (group), of the whole batch (batch), or not at "
                  "all (none, the same as --advantage dr_grpo), as in TRL."},
    )
    beta: float = field(
        default=0.04,
        metadata={"help": "KL coefficient to the reference (DeepSeekMath's 0.04; TRL's default is 0). 0: no KL term, "
                  "and no reference model is loaded."},
    )
    kl_in_reward: bool = field(
        default=False,
        metadata={"help": "false: the KL is a loss term, beta * k3 per token (GRPO, TRL). true: it is a per-token "
                  "reward -beta * KL_t (PPO, REINFORCE++), estimated by kl_estimator; the sequence estimators "
                  "(grpo, dr_grpo, rloo) then see the score minus beta * sum_t KL_t."},
    )
    kl_estimator: str = field(
        default="k1", metadata={"help": "With kl_in_reward: the per-token KL estimator, k1 (log ratio) or k3."})
    epsilon: float = field(default=0.2, metadata={"help": "Lower (and, without epsilon_high, upper) clip of the ratio."})
    epsilon_high: float = field(
        default=0.0,
        metadata={"help": "Upper clip of the ratio, 1 + epsilon_high (DAPO's clip-higher, e.g. 0.28); 0: epsilon."},
    )
    loss_type: str = field(
        default="token",
        metadata={"help": "How per-token losses are averaged: token (over all tokens of the batch: every token weighs "
                  "the same; TRL's bnpo/dapo) or sequence (over each response's tokens, then over responses; "
                  "TRL's grpo, biased toward long wrong answers)."},
    )
    mask_truncated_completions: bool = field(
        default=False,
        metadata={"help": "Leave responses that never reached end-of-text out of the loss (DAPO); they still count "
                  "in their group's statistics."},
    )
    num_iterations: int = field(
        default=1,
        metadata={"help": "Passes over each batch of responses (TRL's mu; PPO's ppo_epochs). 1: exactly on-policy, "
                  "the ratio is 1 and the clip never acts."},
    )
    rollout_batch_size: int = field(
        default=16, metadata={"help": "Prompts per step per process (each answered num_generations times)."})
    per_device_train_batch_size: int = field(
        default=16, metadata={"help": "Responses per micro-batch per process (times gradient_accumulation_steps per "
                              "optimizer step)."})

    def validate(self) -> None:
        super().validate()
        if not self.reward_model_paths and not self.reward_functions:
            raise ConfigError("grpo needs at least one reward: --reward_model_path and/or --reward_function")
        if self.reward_weights:
            self.weights()  # raises on a bad list
        if self.advantage not in ADVANTAGES:
            raise ConfigError(f"advantage must be one of {', '.join(ADVANTAGES)}, got {self.advantage!r}")
        if self.num_generations < 1 or (self.advantage in GROUP_ADVANTAGES and self.num_generations < 2):
            raise ConfigError(f"num_generations must be >= 2 with advantage {self.advantage} (it compares a prompt's "
                              f"responses with each other), got {self.num_generations}")
        if self.scale_rewards not in ("group", "batch", "none"):
            raise ConfigError(f"scale_rewards must be group, batch or none, got {self.scale_rewards!r}")
        if self.scale_rewards != "group" and self.advantage != "grpo":
            raise ConfigError(f"scale_rewards applies to advantage grpo only (advantage is {self.advantage})")
        if self.loss_type not in ("token", "sequence"):
            raise ConfigError(f"loss_type must be token or sequence, got {self.loss_type!r}")
        if self.kl_estimator not in ("k1", "k3"):
            raise ConfigError(f"kl_estimator must be k1 or k3, got {self.kl_estimator!r}")
        for name in ("beta", "epsilon", "epsilon_high"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.ref_model_path and self.beta == 0:
            raise ConfigError("ref_model_path is set but beta is 0, so no reference is used: set beta > 0 or drop it")
        if self.num_iterations < 1 or self.max_steps <= 0:
            raise ConfigError("num_iterations and max_steps must be >= 1")
        minibatch = self.per_device_train_batch_size * self.gradient_accumulation_steps
        if self.batch_size % minibatch:
            raise ConfigError(f"rollout_batch_size x num_generations ({self.batch_size} responses) must be a multiple "
                              f"of per_device_train_batch_size x gradient_accumulation_steps ({minibatch})")

    @property
    def reward_model_paths(self) -> list[str]:
        return split_list(self.reward_model_path)

    @property
    def reward_functions(self) -> list[str]:
        return split_list(self.reward_function)

    def weights(self) -> list[float]:
        """One weight per reward (reward models first, then functions); all 1 when reward_weights is empty."""
        count = len(self.reward_model_paths) + len(self.reward_functions)
        if not self.reward_weights:
            return [1.0] * count
        items = split_list(self.reward_weights)
        try:
            weights = [float(w) for w in items]
        except ValueError:
            raise ConfigError(f"reward_weights must be comma-separated numbers, got {self.reward_weights!r}") from None
        if len(weights) != count:
            raise ConfigError(f"reward_weights has {len(weights)} weight(s) for {count} reward(s) "
                              f"({len(self.reward_model_paths)} model(s), then {len(self.reward_functions)} "
                              "function(s)): give one per reward, in that order")
        return weights

    @property
    def uses_reference(self) -> bool:
        return self.beta > 0

    @property
    def batch_size(self) -> int:
        """Responses per step per process: B = rollout_batch_size x num_generations."""
        return self.rollout_batch_size * self.num_generations

    @property
    def num_minibatches(self) -> int:
        return self.batch_size // (self.per_device_train_batch_size * self.gradient_accumulation_steps)
