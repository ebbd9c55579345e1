"""TRL 1.16's GRPOTrainer configured to do the work of our `rlhf grpo` bench job (bench/workload.py):
GRPO_PROMPTS prompts x G responses of up to PPO_RESPONSE tokens at PPO_TEMPERATURE, a reward model,
beta * k3 to the reference in the loss, num_iterations 1, one optimizer step on the 16 responses
(per_device_train_batch_size 16 = generation batch, gradient_accumulation_steps 1), loss_type bnpo
(our token aggregation), scale_rewards group, no vLLM. Imported by worker_trl.py in the TRL venv.

Options this TRL does not know are dropped and listed in the result (``dropped_options``), so a
renamed option shows instead of failing silently.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import workload as W

DROPPED: list[str] = []


def build_grpo(job: dict, a: dict, tokenizer, callbacks, common: dict):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
    from trl import GRPOConfig, GRPOTrainer

    B = job["batch"]
    wanted = dict(**common, per_device_train_batch_size=B, gradient_accumulation_steps=1, num_generations=W.GRPO_G,
                  steps_per_generation=1, num_iterations=1, max_completion_length=job["response"],
                  max_prompt_length=W.PPO_PROMPT, temperature=W.PPO_TEMPERATURE, beta=W.GRPO_BETA, epsilon=0.2,
                  loss_type="bnpo", scale_rewards="group", mask_truncated_completions=False, use_vllm=False,
                  log_completions=False, learning_rate=1e-6)
    known = {f.name for f in dataclasses.fields(GRPOConfig)}
    DROPPED.extend(sorted(set(wanted) - known))
    config = GRPOConfig(**{k: v for k, v in wanted.items() if k in known})
    rows = [json.loads(line) for line in Path(a["prompt_data"]).read_text().splitlines() if line.strip()]
    train = Dataset.from_list([{"prompt": r["prompt"]} for r in rows])
    policy = AutoModelForCausalLM.from_pretrained(a["policy"])
    reward = AutoModelForSequenceClassification.from_pretrained(a["reward"], num_labels=1)
    reward.config.pad_token_id = tokenizer.pad_token_id
    trainer = GRPOTrainer(model=policy, reward_funcs=[reward], args=config, train_dataset=train,
                          processing_class=tokenizer, reward_processing_classes=[tokenizer], callbacks=callbacks)
    return trainer
