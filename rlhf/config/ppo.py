"""Stage 3 options: PPO against a frozen reward with a per-token KL penalty to the reference."""

from __future__ import annotations

from dataclasses import dataclass, field

from rlhf.config.base import ConfigError
from rlhf.config.online import OnlineRLConfig, with_help

TORCH_COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass
class PPOConfig(OnlineRLConfig):
    """Token-level PPO (Ziegler et al. 2019; InstructGPT section 3.5, "RL").

    One step = one rollout of ``rollout_batch_size`` prompts per process, then ``ppo_epochs``
    passes over it in minibatches of ``per_device_train_batch_size``. The prompts, sampling and
    reporting options are ``OnlineRLConfig``'s."""

    command = "ppo"

    output_dir: str = field(default="runs/ppo", metadata={"help": "Where this stage writes its model, metrics and checkpoints."})
    ref_model_path: str = field(default="", metadata={"help": "Frozen reference for the KL penalty; empty: the starting policy."})
    reward_model_path: str = field(
        default="",
        metadata={"help": "Reward model checkpoint (from `rlhf rm`); several comma-separated paths make an ensemble, "
                  "combined by reward_aggregation."},
    )
    reward_aggregation: str = field(
        default="mean",
        metadata={"help": "How an ensemble's scores become one: mean; min (the most pessimistic member, Coste et al. "
                  "2023); mean_minus_std (mean - reward_uncertainty_coef * std over members, Eisenstein et al. "
                  "2023). Conservative aggregates are harder for the policy to exploit."},
    )
    reward_uncertainty_coef: float = field(
        default=1.0,
        metadata={"help": "lambda of mean_minus_std: how many standard deviations of the members' disagreement "
                  "are subtracted (>= 0)."},
    )
    reward_function: str = field(
        default="",
        metadata={"help": "Instead of a reward model: a Python function, module:name (a module on the Python path or "
                  "in the current folder) or path/to/file.py:name, called as f(prompts, responses, ended, **fields) -> "
                  "one finite number per response. prompts are as written in prompts_file; fields are the records' "
                  "other fields (e.g. GSM8K's answer), each a list over the batch, passed if the function names them "
                  "or takes **kwargs (as in TRL). It is called on two prompts before any model loads."},
    )
    value_model: str = field(
        default="separate",
        metadata={"help": "separate: a value model with its own backbone; shared: a value head on the policy's backbone."},
    )
    value_model_path: str = field(
        default="",
        metadata={"help": "Where the separate value model starts: a reward or value model (with a trained scalar "
                  "head). Empty: the (first) reward model; with reward_function, the policy with a fresh value head."},
    )
    allow_new_value_head: bool = field(
        default=False,
        metadata={"help": "Accept a value_model_path without a trained scalar head (e.g. the SFT model) and start "
                  "its value head at random; without it such a path is refused, as it usually names the wrong model."},
    )
    rollout_batch_size: int = field(default=64, metadata={"help": "Prompts sampled per PPO step per process."})
    per_device_train_batch_size: int = field(default=16, metadata={"help": "Rollouts per PPO minibatch per process (times gradient_accumulation_steps)."})
    ppo_epochs: int = field(default=4, metadata={"help": "Passes over each rollout batch, reshuffled each time."})
    # OnlineRLConfig's options in PPO's words (default and rules stay the base's)
    max_steps: int = with_help("max_steps", "PPO steps (rollout + optimisation) to run.")
    learning_rate: float = with_help("learning_rate", "Peak learning rate of AdamW (policy and value).")
    logging_steps: int = with_help("logging_steps", "Write metrics every this many PPO steps.")
    eval_steps: int = with_help("eval_steps", "Evaluate on eval_prompts_file every this many PPO steps (0: only at the end).")
    # Rewards
    reward_normalization: str = field(
        default="running",
        metadata={"help": "none; running (running mean/std of scores); rm_stats (the reward model's saved training mean/std)."},
    )
    reward_clip: float = field(default=5.0, metadata={"help": "Clip normalised scores to [-c, c] (0: no clipping)."})
    kl_coef: float = field(default=0.05, metadata={"help": "beta of the per-token penalty r_t = -beta * KL_t (the start value if adaptive)."})
    kl_estimator: str = field(default="k1", metadata={"help": "Per-token KL estimator: k1 (log ratio) or k3 (non-negative, lower variance)."})
    adaptive_kl: bool = field(default=False, metadata={"help": "Move beta toward target_kl (Ziegler et al. 2019) instead of keeping it fixed."})
    target_kl: float = field(default=6.0, metadata={"help": "KL per sequence (nats) the adaptive controller aims for."})
    kl_horizon: int = field(default=10000, metadata={"help": "Horizon (in rollouts) of the adaptive controller."})
    whiten_rewards: bool = field(default=False, metadata={"help": "Whiten per-token rewards (without re-adding the mean) before GAE."})
    # Advantages and losses
    gamma: float = field(default=1.0, metadata={"help": "Discount of GAE over response tokens."})
    lam: float = field(default=0.95, metadata={"help": "lambda of GAE."})
    cliprange: float = field(default=0.2, metadata={"help": "PPO ratio clip epsilon."})
    cliprange_value: float = field(default=0.2, metadata={"help": "Value clip around the rollout's values."})
    vf_coef: float = field(default=0.1, metadata={"help": "Weight of the value loss in the joint loss."})
    entropy_coef: float = field(default=0.0, metadata={"help": "Entropy bonus weight (0: none)."})
    # Speed
    torch_compile: bool = field(
        default=False,
        metadata={"help": "Compile the policy-and-value forward (and backward) of the PPO update with torch.compile "
                  "(inductor, dynamic shapes; on CPU it needs g++). Same numbers as eager to float tolerance; the "
                  "first updates pay the compile time. Off by default until a quiet benchmark shows it wins."},
    )
    torch_compile_mode: str = field(
        default="default",
        metadata={"help": "torch.compile mode with torch_compile: default, reduce-overhead, max-autotune or "
                  "max-autotune-no-cudagraphs."},
    )

    def validate(self) -> None:
        super().validate()
        if bool(self.reward_model_path) == bool(self.reward_function):
            raise ConfigError("ppo needs exactly one of --reward_model_path and --reward_function")
        if self.value_model not in ("separate", "shared"):
            raise ConfigError(f"value_model must be separate or shared, got {self.value_model!r}")
        if self.reward_aggregation not in ("mean", "min", "mean_minus_std"):
            raise ConfigError(f"reward_aggregation must be mean, min or mean_minus_std, got {self.reward_aggregation!r}")
        if self.reward_uncertainty_coef < 0:
            raise ConfigError(f"reward_uncertainty_coef must be >= 0, got {self.reward_uncertainty_coef}")
        if self.kl_estimator not in ("k1", "k3"):
            raise ConfigError(f"kl_estimator must be k1 or k3, got {self.kl_estimator!r}")
        if self.reward_normalization not in ("none", "running", "rm_stats"):
            raise ConfigError(f"reward_normalization must be none, running or rm_stats, got {self.reward_normalization!r}")
        if self.reward_normalization == "rm_stats" and not self.reward_model_path:
            raise ConfigError("reward_normalization rm_stats needs --reward_model_path")
        minibatch = self.per_device_train_batch_size * self.gradient_accumulation_steps
        if self.rollout_batch_size % minibatch:
            raise ConfigError(f"rollout_batch_size ({self.rollout_batch_size}) must be a multiple of "
                              f"per_device_train_batch_size x gradient_accumulation_steps ({minibatch})")
        if self.torch_compile_mode not in TORCH_COMPILE_MODES:
            raise ConfigError(f"torch_compile_mode must be one of {', '.join(TORCH_COMPILE_MODES)}, "
                              f"got {self.torch_compile_mode!r}")
        if self.max_steps <= 0:
            raise ConfigError("ppo counts its length in PPO steps: set max_steps > 0")

    @property
    def num_minibatches(self) -> int:
        return self.rollout_batch_size // (self.per_device_train_batch_size * self.gradient_accumulation_steps)
