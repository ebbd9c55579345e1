"""How much memory PPO's four roles take per device: the arithmetic behind ``rlhf plan``.

Pure functions of a model's shape and the run's sizes; nothing is loaded. The accounting:

- Weights: parameters x bytes of the dtype. The reference and reward model are frozen copies; with
  LoRA the reference is the policy with its adapters off (no bytes of its own).
- Gradients: trainable parameters x bytes of the dtype.
- Optimizer: AdamW keeps m and v in fp32 (8 bytes per trainable parameter), plus an fp32 master
  copy of the weights when they are stored in 16 bits (mixed precision: 4 more bytes), so training
  costs 16 bytes per parameter either way (ZeRO, Rajbhandari et al. 2020, section 3.1).
- ZeRO stage s over N devices divides the optimizer states (s >= 1), then the gradients (s >= 2),
  then the weights of every role, frozen ones included (s = 3, as FSDP's full sharding) by N.
- Activations: what backward needs from the training micro-batch, per layer and token (see
  ``layer_activation_elements``), and the fp32 logits over the response tokens, several copies of
  (B, R, V) at once (``LOGIT_COPIES_*``): for a small model with a large vocabulary those dominate.
- The frozen roles' forward passes run on the whole rollout batch without storing anything for
  backward: their peak is one layer's transients and the reference's logits.
- Generation: the KV cache of the rollout batch at full length, 2 x layers x B x T x kv width.

The phases do not overlap: the KV cache is gone before scoring, the scoring forwards before
training. The peak is what stays (weights, optimizer states) plus the largest phase.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
ADAM_STATE_BYTES = 8  # m and v, fp32
MASTER_COPY_BYTES = 4  # fp32 weights kept by the optimizer under 16-bit mixed precision
LOGIT_BYTES = 4  # logits are upcast to fp32 before log-softmax
# fp32 (B, R, V) tensors alive at once. Training: the logits, exp(logits - lse) in the log-softmax
# backward, its product with the incoming gradient, and the gradient of the un-sliced logits.
# Scoring (no grad): the logits and the exp() temporary of logsumexp.
LOGIT_COPIES_TRAINING = 4
LOGIT_COPIES_SCORING = 2


@dataclass(frozen=True)
class ModelShape:
    """What the plan needs to know about one model (read from its config.json)."""

    n_params: int  # every parameter of the causal LM, tied weights counted once
    lm_head_params: int  # the LM head's own parameters (0 when tied): a reward/value model has none
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    vocab_size: int
    gated_mlp: bool = False  # SwiGLU (Llama, Mistral, Qwen): gate and up projections
    lora_params: int = 0  # adapter parameters at the chosen rank and target modules (0: no LoRA)
    lora_backbone_params: int = 0  # the part of lora_params outside the LM head

    @property
    def kv_dim(self) -> int:
        return self.hidden_size // self.num_heads * self.num_kv_heads

    @property
    def scalar_model_params(self) -> int:
        """A reward/value model of this shape: the backbone without the LM head, plus a scalar head (H + 1)."""
        return self.n_params - self.lm_head_params + self.hidden_size + 1


@dataclass(frozen=True)
class RunSizes:
    """The sizes of one PPO step that set its memory; names as PPOConfig's."""

    rollout_batch_size: int = 64
    per_device_train_batch_size: int = 16
    max_prompt_length: int = 128
    max_new_tokens: int = 48
    dtype: str = "fp32"
    zero_stage: int = 0
    num_gpus: int = 1
    gradient_checkpointing: bool = False

    @property
    def seq_len(self) -> int:
        return self.max_prompt_length + self.max_new_tokens


@dataclass
class RoleMemory:
    """One role's bytes per device."""

    role: str
    weights: int = 0
    gradients: int = 0
    optimizer: int = 0
    activations: int = 0  # training micro-batch (trainable roles) or inference forward (frozen roles)
    kv_cache: int = 0

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations + self.kv_cache


@dataclass
class Plan:
    roles: list[RoleMemory]
    phases: dict[str, int] = field(default_factory=dict)  # generation, scoring, training: transient bytes
    persistent: int = 0  # weights and optimizer states, held all along
    peak: int = 0  # persistent + the largest phase


def trainable_bytes(n_trainable: int, dtype: str) -> tuple[int, int]:
    """(gradients, optimizer states) of ``n_trainable`` parameters trained with AdamW."""
    width = DTYPE_BYTES[dtype]
    master = MASTER_COPY_BYTES if width < 4 else 0
    return n_trainable * width, n_trainable * (ADAM_STATE_BYTES + master)


def zero_shard(weights: int, gradients: int, optimizer: int, stage: int, num_gpus: int) -> tuple[int, int, int]:
    """Per-device bytes under ZeRO ``stage``: 1 shards optimizer states, 2 also gradients, 3 also weights."""
    def split(n: int, sharded: bool) -> int:
        return -(-n // num_gpus) if sharded else n  # ceil: the last shard is padded

    return split(weights, stage >= 3), split(gradients, stage >= 2), split(optimizer, stage >= 1)


def layer_activation_elements(shape: ModelShape) -> int:
    """Elements one transformer layer stores for backward, per token: the two norm inputs, the
    attention input, q and k and v, the attention output (o-projection input), the MLP input, and
    the MLP's intermediates (GPT-2: the activation's input and output, 2 x I; SwiGLU: gate, up,
    act(gate) and their product, 4 x I). SDPA / flash attention keeps no (T, T) scores."""
    h, kv, inner = shape.hidden_size, shape.kv_dim, shape.intermediate_size
    return 2 * h + h + (h + 2 * kv) + h + h + (4 if shape.gated_mlp else 2) * inner


def training_activation_bytes(shape: ModelShape, batch: int, seq_len: int, response_len: int, dtype: str,
                              gradient_checkpointing: bool, with_logits: bool = True) -> int:
    """Bytes stored for backward of one micro-batch (B = ``batch``, T = ``seq_len``): every layer's
    activations (with checkpointing, each layer's input and one layer recomputed at a time), plus
    the fp32 logits over the ``response_len`` positions PPO scores."""
    width = DTYPE_BYTES[dtype]
    per_layer = layer_activation_elements(shape)
    layers = shape.num_layers * shape.hidden_size + per_layer if gradient_checkpointing else shape.num_layers * per_layer
    hidden = batch * seq_len * (layers + 2 * shape.hidden_size) * width  # + the final norm and head inputs
    logits = LOGIT_COPIES_TRAINING * batch * response_len * shape.vocab_size * LOGIT_BYTES if with_logits else 0
    return hidden + logits


def inference_activation_bytes(shape: ModelShape, batch: int, seq_len: int, response_len: int, dtype: str,
                               with_logits: bool = True) -> int:
    """Peak transient bytes of a no-grad forward over the rollout batch: one layer's largest
    intermediates (the MLP's, and the residual stream in and out) and, for a causal LM, the fp32
    logits of the response positions."""
    width = DTYPE_BYTES[dtype]
    layer = batch * seq_len * ((3 if shape.gated_mlp else 2) * shape.intermediate_size + 3 * shape.hidden_size) * width
    logits = LOGIT_COPIES_SCORING * batch * response_len * shape.vocab_size * LOGIT_BYTES if with_logits else 0
    return layer + logits


def kv_cache_bytes(shape: ModelShape, batch: int, seq_len: int, dtype: str) -> int:
    """Keys and values of every layer for ``batch`` sequences of ``seq_len`` tokens."""
    return 2 * shape.num_layers * batch * seq_len * shape.kv_dim * DTYPE_BYTES[dtype]


def plan_ppo(policy: ModelShape, reward: ModelShape, sizes: RunSizes, value_model: str = "separate",
             use_peft: bool = False) -> Plan:
    """Bytes per device for each of PPO's roles and the step's peak (see the module docstring)."""
    dtype, T, R = sizes.dtype, sizes.seq_len, sizes.max_new_tokens
    width = DTYPE_BYTES[dtype]
    B, b = sizes.rollout_batch_size, sizes.per_device_train_batch_size

    def trained(role: str, n_weights: int, n_trainable: int, activations: int, kv: int = 0) -> RoleMemory:
        grads, optim = trainable_bytes(n_trainable, dtype)
        weights, grads, optim = zero_shard(n_weights * width, grads, optim, sizes.zero_stage, sizes.num_gpus)
        return RoleMemory(role, weights, grads, optim, activations, kv)

    def frozen(role: str, n_weights: int, activations: int) -> RoleMemory:
        weights, _, _ = zero_shard(n_weights * width, 0, 0, sizes.zero_stage, sizes.num_gpus)
        return RoleMemory(role, weights, activations=activations)

    value_head = policy.hidden_size + 1
    policy_trainable = policy.lora_params if use_peft else policy.n_params
    policy_weights = policy.n_params + (policy.lora_params if use_peft else 0)
    if value_model == "shared":
        policy_trainable += value_head
        policy_weights += value_head
    train_acts = training_activation_bytes(policy, b, T, R, dtype, sizes.gradient_checkpointing)
    roles = [trained("policy", policy_weights, policy_trainable, train_acts,
                     kv_cache_bytes(policy, B, T, dtype))]
    # Scoring: the reference's logits over the rollout batch (with LoRA: the policy with adapters off).
    ref_acts = inference_activation_bytes(policy, B, T, R, dtype)
    roles.append(frozen("reference", 0 if use_peft else policy.n_params, ref_acts))
    roles.append(frozen("reward", reward.scalar_model_params,
                        inference_activation_bytes(reward, B, T, R, dtype, with_logits=False)))
    if value_model == "separate":
        value_trainable = reward.lora_backbone_params + value_head if use_peft else reward.scalar_model_params
        value_weights = reward.scalar_model_params + (reward.lora_backbone_params if use_peft else 0)
        value_acts = training_activation_bytes(reward, b, T, R, dtype, sizes.gradient_checkpointing, with_logits=False)
        roles.append(trained("value", value_weights, value_trainable, value_acts))
    else:
        roles.append(RoleMemory("value"))  # a head on the policy: counted there
    return summarize(roles)


def summarize(roles: list[RoleMemory]) -> Plan:
    """The phases of a step: generation (KV cache), scoring (the frozen roles' forwards, one at a
    time), training (gradients and the activations of every trainable role, together)."""
    phases = {
        "generation": sum(r.kv_cache for r in roles),
        "scoring": max((r.activations for r in roles if r.gradients == 0 and r.weights + r.activations), default=0),
        "training": sum(r.gradients + r.activations for r in roles if r.gradients),
    }
    persistent = sum(r.weights + r.optimizer for r in roles)
    return Plan(roles, phases, persistent, persistent + max(phases.values()))


def format_bytes(n: int) -> str:
    """Decimal units, as GPU memory is sold: 13.5 GB, 640 MB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def format_plan(plan: Plan, title: str = "") -> str:
    """The plan as a markdown table: one row per role, then the phases and the peak."""
    columns = ("weights", "gradients", "optimizer", "activations", "kv_cache", "total")
    lines = [title] if title else []
    lines += ["| role | weights | gradients | optimizer | activations | KV cache | all phases |",
              "|---" * (len(columns) + 1) + "|"]
    for role in plan.roles:
        lines.append(f"| {role.role} | " + " | ".join(format_bytes(getattr(role, c)) for c in columns) + " |")
    lines.append("")
    lines.append("held all along (weights + optimizer): " + format_bytes(plan.persistent))
    lines.append("largest phase: " + ", ".join(f"{k} {format_bytes(v)}" for k, v in plan.phases.items()))
    lines.append(f"peak per device: {format_bytes(plan.peak)}")
    return "\n".join(lines)
