"""Options of ``rlhf plan``: the memory of PPO's four roles, per device, from the models' configs."""

from __future__ import annotations

from dataclasses import dataclass, field

from rlhf.config.base import ConfigError

DTYPES = ("fp32", "bf16", "fp16")


@dataclass
class PlanConfig:
    """Estimate the bytes per device of a PPO run before renting the machines (docs/distributed.md)."""

    model_name_or_path: str = field(
        default="",
        metadata={"help": "The policy: a local model folder, or a folder (or file) holding only its config.json. "
                  "No weights are read."},
    )
    reward_model_path: str = field(default="", metadata={"help": "The reward model's folder or config.json; empty: "
                                                                   "the policy's architecture."})
    value_model: str = field(
        default="separate",
        metadata={"help": "separate: a value model shaped like the reward model; shared: a value head on the policy."},
    )
    use_peft: bool = field(default=False, metadata={"help": "Plan LoRA training: only the adapters (and value head) "
                                                             "have gradients and optimizer states; no reference copy."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank, as the training stages' --lora_r."})
    lora_target_modules: str = field(
        default="",
        metadata={"help": "As the training stages' option: comma-separated module names or all-linear; empty: "
                  "peft's default for the architecture."},
    )
    dtype: str = field(default="fp32", metadata={"help": "Storage type of the weights: fp32, or bf16 / fp16 (mixed "
                                                          "precision: the optimizer then keeps an fp32 master copy)."})
    zero_stage: int = field(
        default=0,
        metadata={"help": "ZeRO stage (DeepSpeed; FSDP's full sharding is stage 3): 1 shards optimizer states, "
                  "2 also gradients, 3 also the weights of every role, over num_gpus devices."},
    )
    num_gpus: int = field(default=1, metadata={"help": "Devices the run is sharded over."})
    rollout_batch_size: int = field(default=64, metadata={"help": "Prompts sampled per PPO step per device."})
    per_device_train_batch_size: int = field(default=16, metadata={"help": "Rollouts per PPO micro-batch per device."})
    max_prompt_length: int = field(default=128, metadata={"help": "Longest prompt in tokens."})
    max_new_tokens: int = field(default=48, metadata={"help": "Longest response in tokens."})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Store each layer's input only and "
                                                                           "recompute the rest in backward."})
    json: bool = field(default=False, metadata={"help": "Print the plan as JSON (bytes) instead of a table."})

    def validate(self) -> None:
        if not self.model_name_or_path:
            raise ConfigError("plan needs --model_name_or_path (a model folder or its config.json)")
        if self.value_model not in ("separate", "shared"):
            raise ConfigError(f"value_model must be separate or shared, got {self.value_model!r}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.zero_stage not in (0, 1, 2, 3):
            raise ConfigError(f"zero_stage must be 0, 1, 2 or 3, got {self.zero_stage}")
        for name in ("num_gpus", "rollout_batch_size", "per_device_train_batch_size", "max_prompt_length",
                     "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.use_peft and self.lora_r <= 0:
            raise ConfigError(f"lora_r must be > 0, got {self.lora_r}")
