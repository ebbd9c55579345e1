"""Run one benchmark job with Hugging Face TRL, configured to do the same work as ours.

    python bench/worker_trl.py JOB.json RESULT.json     (in bench/.venvs/trl116, or trl112 for PPO)

SFT, RM, DPO: TRL 1.16's SFTTrainer, RewardTrainer, DPOTrainer. PPO: TRL 1.12's
trl.experimental.ppo.PPOTrainer (the last release that has it). Every config turns off what TRL
turns on by default and ours does not do: bf16 and gradient checkpointing (about 30x slower on
this CPU), and the update is clocked by a TrainerCallback (on_train_begin, on_step_end).

Same work as ours, stage by stage:
- SFT: prompt-completion data, loss on completion tokens only (TRL's default for that format).
- RM/DPO: explicit {prompt, chosen, rejected}; TRL joins prompt and response before tokenizing,
  prepare.py checked that this gives exactly our tokens. On HH-RLHF the batches are replayed in
  our trainers' order with a sequential sampler (TRL's default is a random sampler with no length
  grouping, which pads far more; see the README).
- PPO: rollout batch B = per_device_train_batch_size (gradient_accumulation_steps 1, so each of
  the 4 minibatches of B/4 gets its own optimizer step, 16 per update, as ours), 4 PPO epochs,
  response_length R with no stop token, a separate value model and a reward model.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import probe as P  # noqa: E402
import workload as W  # noqa: E402


def read_jsonl(path: str) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def common_args(job: dict) -> dict:
    return dict(
        output_dir=job["run_dir"], max_steps=job["warmup"] + job["updates"], logging_steps=1, report_to="none",
        save_strategy="no", eval_strategy="no", bf16=False, fp16=False, gradient_checkpointing=False, seed=W.SEED,
        data_seed=W.SEED, disable_tqdm=True, dataloader_num_workers=0,
    )


def make_callback(probe: P.Probe):
    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            probe.train_started()

        def on_step_end(self, args, state, control, **kwargs):
            probe.step_ended()

    return Clock()


def hh_dataset(assets: dict):
    """HH pairs in the order our trainers batch them (replayed with a sequential sampler)."""
    from datasets import Dataset

    rows = read_jsonl(assets["hh_data"])
    order = json.loads(Path(assets["hh_order"]).read_text())["batches"]
    return Dataset.from_list([rows[i] for batch in order for i in batch])


def build_trainer(job: dict, probe: P.Probe):
    from datasets import Dataset
    from transformers import AutoTokenizer

    a = W.assets_for(job["model"])
    stage = job["stage"]
    tokenizer = AutoTokenizer.from_pretrained(a["policy"])
    hh = stage.endswith("_hh")
    batch = W.HH_BATCH if hh else W.SYNTH_BATCH
    max_length = W.HH_MAX_LENGTH if hh else W.SYNTH_LENGTH
    sampling = {"train_sampling_strategy": "sequential"} if hh else {}
    callbacks = [make_callback(probe)]
    if stage == "sft":
        from trl import SFTConfig, SFTTrainer

        args = SFTConfig(**common_args(job), per_device_train_batch_size=batch, max_length=max_length)
        return SFTTrainer(model=a["policy"], args=args, train_dataset=Dataset.from_list(read_jsonl(a["sft_data"])),
                          processing_class=tokenizer, callbacks=callbacks)
    if stage in ("rm", "rm_hh"):
        from trl import RewardConfig, RewardTrainer

        data = hh_dataset(a) if hh else Dataset.from_list(read_jsonl(a["pair_data"]))
        args = RewardConfig(**common_args(job), **sampling, per_device_train_batch_size=batch, max_length=max_length)
        return RewardTrainer(model=a["policy"], args=args, train_dataset=data, processing_class=tokenizer,
                             callbacks=callbacks)
    if stage in ("dpo", "dpo_hh"):
        from trl import DPOConfig, DPOTrainer

        data = hh_dataset(a) if hh else Dataset.from_list(read_jsonl(a["pair_data"]))
        args = DPOConfig(**common_args(job), **sampling, per_device_train_batch_size=batch, max_length=max_length)
        return DPOTrainer(model=a["policy"], args=args, train_dataset=data, processing_class=tokenizer,
                          callbacks=callbacks)
    if stage == "ppo":
        return build_ppo(job, a, tokenizer, callbacks)
    if stage == "grpo":
        from trl_grpo import build_grpo

        return build_grpo(job, a, tokenizer, callbacks, common_args(job))
    raise ValueError(f"unknown stage {stage}")


def build_ppo(job: dict, a: dict, tokenizer, callbacks):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    B, R = job["batch"], job["response"]
    steps = job["warmup"] + job["updates"]
    prompts = [tokenizer(r["prompt"])["input_ids"] for r in read_jsonl(a["prompt_data"])]
    assert all(len(p) == W.PPO_PROMPT for p in prompts)
    train = Dataset.from_dict({"input_ids": prompts})
    args = common_args(job)
    del args["max_steps"]  # PPO counts episodes
    config = PPOConfig(
        **args, per_device_train_batch_size=B, gradient_accumulation_steps=1, num_mini_batches=W.PPO_MINIBATCHES,
        num_ppo_epochs=W.PPO_EPOCHS, total_episodes=B * steps, response_length=R, temperature=W.PPO_TEMPERATURE,
        kl_coef=W.PPO_KL_COEF, stop_token=None, stop_token_id=None, num_sample_generations=0,
        local_rollout_forward_batch_size=max(B, 1), sft_model_path=a["policy"], reward_model_path=a["reward"],
    )
    policy = AutoModelForCausalLM.from_pretrained(a["policy"])
    reference = AutoModelForCausalLM.from_pretrained(a["policy"])
    reward = AutoModelForSequenceClassification.from_pretrained(a["reward"], num_labels=1)
    value = AutoModelForSequenceClassification.from_pretrained(a["reward"], num_labels=1)
    trainer = PPOTrainer(args=config, processing_class=tokenizer, model=policy, ref_model=reference,
                         reward_model=reward, train_dataset=train, value_model=value,
                         eval_dataset=train.select(range(B)))
    for callback in callbacks:
        trainer.add_callback(callback)
    return trainer


def describe(trainer) -> dict:
    model = getattr(trainer, "model", None)
    inner = getattr(model, "policy", model)
    params = list(inner.parameters()) if inner is not None else []
    return {
        "param_dtype": str(params[0].dtype) if params else None,
        "attn_implementation": getattr(getattr(inner, "config", None), "_attn_implementation", None),
        "gradient_checkpointing": bool(getattr(inner, "is_gradient_checkpointing", False)),
        "optimizer": type(getattr(trainer.optimizer, "optimizer", trainer.optimizer)).__name__,
        "optim_arg": str(trainer.args.optim),
        "bf16": trainer.args.bf16,
    }


def main() -> int:
    job = json.loads(Path(sys.argv[1]).read_text())
    result_path = sys.argv[2]
    P.configure_threads(W.THREADS)
    probe = P.Probe().install()
    trainer = build_trainer(job, probe)
    trainer.train()
    import transformers
    import trl

    result = {"lib": "trl", "job": job, "exit_code": 0, **probe.result(), "trainer": describe(trainer),
              "versions": {"trl": trl.__version__, "transformers": transformers.__version__}}
    if job["stage"] == "grpo":
        from trl_grpo import DROPPED

        result["dropped_options"] = DROPPED
    P.write_json(result_path, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
