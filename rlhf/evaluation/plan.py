"""``rlhf plan``: the memory of PPO's four roles per device, from the models' config.json alone.

The model is built on PyTorch's meta device (shapes without storage), so the parameter count,
tied embeddings and the shapes of LoRA's target modules are exact for any architecture
transformers knows, and a 70B config plans in a second on a laptop. The arithmetic is in
``rlhf.models.memory_plan``.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch

from rlhf.config.base import ConfigError
from rlhf.config.plan import PlanConfig
from rlhf.models.memory_plan import ModelShape, RunSizes, format_bytes, format_plan, plan_ppo

CONFIG_CLASS = PlanConfig
GATE_NAMES = ("gate_proj", "gate_up_proj", "w1")  # a SwiGLU MLP's gate projection


def read_model_config(path: str):
    """transformers' config from a model folder, a folder holding only config.json, or the file."""
    from transformers import AutoConfig

    folder = Path(path)
    if folder.is_file() and folder.name == "config.json":
        folder = folder.parent
    if not (folder / "config.json").is_file():
        raise ConfigError(f"{path}: no config.json there (pass a model folder or its config.json; nothing is "
                          "downloaded)")
    try:
        return AutoConfig.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, KeyError) as err:
        raise ConfigError(f"{folder / 'config.json'}: not a config transformers can read: {err}") from err


def meta_model(model_config):
    """The causal LM of ``model_config`` with shapes only (no memory, no weights)."""
    from transformers import AutoModelForCausalLM

    try:
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(model_config)
    except ValueError as err:
        raise ConfigError(f"model_type {model_config.model_type!r} has no causal LM in transformers: {err}") from err


def target_shapes(model, target_modules: str) -> list[tuple[str, int, int]]:
    """(name, in, out) of every module LoRA adapts, matched as peft does: a name or a suffix after
    a dot; all-linear takes every linear layer but the LM head; empty takes peft's default."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
    from transformers.pytorch_utils import Conv1D

    head = model.get_output_embeddings()
    targets = [t.strip() for t in target_modules.split(",") if t.strip()]
    if not targets:
        targets = TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(model.config.model_type, [])
    shapes = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            fan_in, fan_out = module.in_features, module.out_features
        elif isinstance(module, Conv1D):
            fan_in, fan_out = module.weight.shape
        else:
            continue
        chosen = module is not head if targets == ["all-linear"] else \
            any(name == t or name.endswith("." + t) for t in targets)
        if chosen:
            shapes.append((name, fan_in, fan_out))
    if not shapes:
        raise ConfigError(f"lora_target_modules {target_modules or '(peft default)'!r} matches no linear layer of "
                          f"this {model.config.model_type} model")
    return shapes


def model_shape(path: str, use_peft: bool = False, lora_r: int = 16, lora_target_modules: str = "") -> ModelShape:
    """A model's ModelShape from its config.json (and the LoRA adapters' size when planned)."""
    model_config = read_model_config(path)
    model = meta_model(model_config)
    head = model.get_output_embeddings()
    tied = head is None or head.weight is model.get_input_embeddings().weight
    lm_head_params = 0 if tied else sum(p.numel() for p in head.parameters())
    lora = lora_head = 0
    if use_peft:
        for name, fan_in, fan_out in target_shapes(model, lora_target_modules):
            lora += lora_r * (fan_in + fan_out)
            lora_head += lora_r * (fan_in + fan_out) if head is not None and model.get_submodule(name) is head else 0
    c = model.config
    hidden = c.hidden_size
    heads = c.num_attention_heads
    inner = getattr(c, "intermediate_size", None) or getattr(c, "n_inner", None) or 4 * hidden
    return ModelShape(
        n_params=sum(p.numel() for p in model.parameters()), lm_head_params=lm_head_params, hidden_size=hidden,
        num_layers=c.num_hidden_layers, num_heads=heads,
        num_kv_heads=getattr(c, "num_key_value_heads", None) or heads, intermediate_size=inner,
        vocab_size=c.vocab_size, gated_mlp=any(n.endswith(GATE_NAMES) for n, _ in model.named_modules()),
        lora_params=lora, lora_backbone_params=lora - lora_head)


def run(config: PlanConfig) -> dict:
    policy = model_shape(config.model_name_or_path, config.use_peft, config.lora_r, config.lora_target_modules)
    reward = policy if not config.reward_model_path else model_shape(
        config.reward_model_path, config.use_peft, config.lora_r, config.lora_target_modules)
    sizes = RunSizes(rollout_batch_size=config.rollout_batch_size,
                     per_device_train_batch_size=config.per_device_train_batch_size,
                     max_prompt_length=config.max_prompt_length, max_new_tokens=config.max_new_tokens,
                     dtype=config.dtype, zero_stage=config.zero_stage, num_gpus=config.num_gpus,
                     gradient_checkpointing=config.gradient_checkpointing)
    plan = plan_ppo(policy, reward, sizes, config.value_model, config.use_peft)
    result = {"policy": asdict(policy), "reward": asdict(reward), "sizes": asdict(sizes),
              "roles": [asdict(r) for r in plan.roles], "phases": plan.phases, "persistent": plan.persistent,
              "peak": plan.peak}
    if config.json:
        print(json.dumps(result, indent=1))
    else:
        sharding = f"ZeRO-{config.zero_stage} over {config.num_gpus} devices" if config.zero_stage else \
            f"no sharding, {config.num_gpus} device(s)"
        title = (f"PPO memory per device: policy {config.model_name_or_path} ({policy.n_params / 1e9:.2f}B "
                 f"parameters, {format_bytes(policy.n_params * 2)} in bf16), {config.dtype}, {sharding}, "
                 f"value model {config.value_model}{', LoRA r=' + str(config.lora_r) if config.use_peft else ''}\n")
        print(format_plan(plan, title))
    return result
