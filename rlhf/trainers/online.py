"""One online-RL run: what PPO and the critic-free methods (GRPO, RLOO) share.

The roles: the trainable policy (LoRA adapters optional), the frozen reference (the SFT
model) and the frozen reward (a model, an ensemble or a function). Every step an algorithm
calls ``sample_and_score`` (generate from the policy, decode, score with the reward,
reference log-probs) and then does what makes it that algorithm: PPO adds values,
KL-shaped rewards, GAE and its clipped update (ppo.py). Around the steps, ``OnlineRun``
holds the prompts, resume state, SIGINT/SIGTERM, periodic checkpoints, held-out
evaluation and the save/merge tail.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from rlhf.data import collate_prompts, load_prompts, tokenize_prompts
from rlhf.evaluation.policy_eval import evaluate_policy
from rlhf.models.loading import load_causal_lm, load_tokenizer, training_stage_of
from rlhf.models.lora import AdapterFreeReference, add_lora, merge_lora
from rlhf.models.policy_value import disable_dropout
from rlhf.rewards.scorers import FunctionScorer, RewardModelScorer, load_function
from rlhf.rollout.generation import Rollout, SamplingParams, decode_responses, generate
from rlhf.rollout.logprobs import response_logprobs
from rlhf.rollout.prompts import PromptSampler
from rlhf.trainers.checkpoint import Checkpointer
from rlhf.trainers.optim import NonFiniteGuard, make_optimizer, make_scheduler
from rlhf.trainers.resume import resolve_resume
from rlhf.trainers.run_logger import RunLogger
from rlhf.trainers.saving import finish_run, save_pretrained_atomic
from rlhf.trainers.setup import make_accelerator, prepare_output_dir, seed_everything
from rlhf.trainers.signals import StopSignals, TrainingInterrupted


@dataclass
class Samples:
    """Responses sampled from the policy and scored; (B, R) unless noted."""

    rollout: Rollout
    prompt_texts: list[str]
    response_texts: list[str]
    scores: torch.Tensor  # (B,) raw reward, after the missing-eos penalty
    ref_logprobs: torch.Tensor  # (B, R) log pi_ref of the sampled tokens, 0 on padding


def load_roles(config, accelerator):
    """The frozen roles and the policy they start from: (policy, reference, reward, tokenizer)."""
    tokenizer = load_tokenizer(config.model_name_or_path, trust_remote_code=config.trust_remote_code, padding_side="left")
    policy = load_causal_lm(config.model_name_or_path, tokenizer, trust_remote_code=config.trust_remote_code)
    if config.use_peft:
        policy = add_lora(policy, config)
        reference = AdapterFreeReference(policy)  # the starting policy, without a second copy
    else:
        reference = load_causal_lm(config.ref_model_path or config.model_name_or_path, tokenizer,
                                   trust_remote_code=config.trust_remote_code).to(accelerator.device).eval()
        reference.requires_grad_(False)
    if config.reward_model_path:
        reward = RewardModelScorer(config.reward_model_path.split(","), tokenizer, accelerator.device,
                                   trust_remote_code=config.trust_remote_code, aggregation=config.reward_aggregation,
                                   uncertainty_coef=config.reward_uncertainty_coef)
    else:
        reward = FunctionScorer(load_function(config.reward_function))
    return policy, reference, reward, tokenizer


@torch.no_grad()
def sample_and_score(policy, reference, reward, batch: dict, tokenizer, sampling: SamplingParams, config, accelerator,
                     record_logprobs: bool) -> Samples:
    """The first steps of every online method. ``record_logprobs``: keep the sampler's own
    log-probs of the sampled tokens in ``rollout.logprobs`` (they equal a forward pass's to ~1e-5)."""
    device = accelerator.device
    # 1. Rollout: sample responses to the prompts from the current policy.
    rollout = generate(policy, batch["input_ids"].to(device), batch["attention_mask"].to(device), sampling,
                       tokenizer.eos_token_id, tokenizer.pad_token_id, record_logprobs=record_logprobs)
    prompt_texts = tokenizer.batch_decode(batch["input_ids"], skip_special_tokens=True)
    response_texts = decode_responses(tokenizer, rollout)
    # 2. Score: the reward of each whole response, penalised if it never ended.
    scores = reward(rollout, prompt_texts, response_texts)  # (B,)
    if config.missing_eos_penalty:
        scores = scores - config.missing_eos_penalty * (~rollout.ended).float()
    # 3. Log-probs of the sampled tokens under the reference, at the sampling temperature.
    ref_logprobs = response_logprobs(reference, rollout.query_responses, rollout.attention_mask, rollout.prompt_length,
                                     config.temperature)  # (B, R)
    return Samples(rollout, prompt_texts, response_texts, scores, ref_logprobs)


def sample_metrics(samples: Samples, gold_function) -> dict[str, Any]:
    """This process's numbers about the samples themselves (every online method logs them)."""
    mask = samples.rollout.response_mask.float()  # (B, R)
    metrics = {"objective/scores": samples.scores.mean(), "response/length": mask.sum(1).mean(),
               "response/ended_frac": samples.rollout.ended.float().mean()}
    if gold_function is not None:
        gold = gold_function(samples.prompt_texts, samples.response_texts, samples.rollout.ended.tolist())
        metrics["gold/score"] = sum(gold) / len(gold)
    return metrics


def mean_over_processes(metrics: dict[str, Any], accelerator) -> dict[str, float]:
    return {k: accelerator.reduce(torch.as_tensor(v, dtype=torch.float32, device=accelerator.device), "mean").item()
            for k, v in metrics.items()}


@dataclass
class OnlineRun:
    """An online run's roles, prompts, optimizer, checkpoints and logs, and its step loop."""

    config: Any
    stage: str
    accelerator: Any
    model: Any  # the trainable module, prepared by accelerate (the policy, or the policy and a value)
    policy_of: Callable[[Any], Any]  # the unwrapped trainable module -> the policy
    reference: Any
    reward: Any
    tokenizer: Any
    prompts: list[dict]
    sampler: PromptSampler
    sampling: SamplingParams
    gold_function: Callable | None
    optimizer: Any
    scheduler: Any
    guard: NonFiniteGuard
    checkpointer: Checkpointer
    logger: RunLogger
    saved: dict[str, Any] | None
    algorithm_state: dict[str, Any]

    @classmethod
    def start(cls, config, stage: str, make_trainable: Callable[[Any, Any], Any], policy_of: Callable[[Any], Any],
              trainable_name: str, num_training_steps: int, algorithm_state: dict[str, Any],
              postfix_keys: tuple[str, ...]) -> "OnlineRun":
        """``make_trainable(policy, tokenizer)``: the module the optimizer trains, checkpointed as
        ``trainable_name``; ``algorithm_state``: the algorithm's objects with state_dict/load_state_dict
        (a KL controller, say), checkpointed under their names."""
        accelerator = make_accelerator(config)
        seed_everything(config.seed + accelerator.process_index)  # each process samples its own rollouts
        output_dir = prepare_output_dir(config, accelerator)
        policy, reference, reward, tokenizer = load_roles(config, accelerator)
        model = make_trainable(policy, tokenizer)
        disable_dropout(model)
        _warn_if_not_sft(config, stage, accelerator)
        prompts = tokenize_prompts(load_prompts(config.prompts_file, tokenizer=tokenizer,
                                                skip_bad_records=config.skip_bad_records),
                                   tokenizer, max_prompt_length=config.max_prompt_length)
        sampler = PromptSampler(len(prompts), config.rollout_batch_size, config.seed, accelerator.process_index)
        sampling = SamplingParams(max_new_tokens=config.max_new_tokens, min_new_tokens=config.min_new_tokens,
                                  temperature=config.temperature, top_k=config.top_k, top_p=config.top_p)
        gold_function = load_function(config.gold_reward_function) if config.gold_reward_function else None
        optimizer = make_optimizer(model.parameters(), config)
        scheduler = make_scheduler(optimizer, config, num_training_steps)
        model, optimizer = accelerator.prepare(model, optimizer)
        guard = NonFiniteGuard(config.max_nonfinite_skips)
        # Frozen roles (reference, reward) are not checkpointed: the saved config names them.
        checkpointer = Checkpointer(output_dir, accelerator, {trainable_name: model}, optimizer, scheduler,
                                    config.save_total_limit)
        resume_from = resolve_resume(config, output_dir)
        saved = checkpointer.load(resume_from) if resume_from else None
        if saved is not None:
            for name, obj in algorithm_state.items():
                obj.load_state_dict(saved[name])
            sampler.load_state_dict(saved["prompt_sampler"][accelerator.process_index])
            guard.skipped = saved["nonfinite_skipped"]
        logger = RunLogger(output_dir, accelerator, config.max_steps, config.report_to, config.disable_tqdm, stage,
                           postfix_keys=postfix_keys, resume=saved)
        return cls(config, stage, accelerator, model, policy_of, reference, reward, tokenizer, prompts, sampler,
                   sampling, gold_function, optimizer, scheduler, guard, checkpointer, logger, saved, algorithm_state)

    @property
    def policy(self):
        return self.policy_of(self.accelerator.unwrap_model(self.model))

    def sample_and_score(self, record_logprobs: bool) -> Samples:
        """The next batch of prompts, answered by the policy and scored."""
        batch = collate_prompts([self.prompts[i] for i in self.sampler.next_batch()], self.tokenizer.pad_token_id)
        return sample_and_score(self.policy, self.reference, self.reward, batch, self.tokenizer, self.sampling,
                                self.config, self.accelerator, record_logprobs)

    def should_log(self, step: int) -> bool:
        return step % self.config.logging_steps == 0 or step == self.config.max_steps

    def train(self, step_fn: Callable[[int], Samples]) -> None:
        """``step_fn(step)`` for each step from the resumed one to max_steps; after each, a few
        sample responses, held-out evaluation, and a checkpoint when due or when a signal came."""
        config = self.config
        with StopSignals() as stop:
            for step in range((self.saved or {}).get("step", 0) + 1, config.max_steps + 1):
                samples = step_fn(step)
                self.logger.advance()
                if config.sample_every and step % config.sample_every == 0:
                    self._log_samples(step, samples)
                if config.eval_prompts_file and config.eval_steps and step % config.eval_steps == 0 \
                        and step < config.max_steps:
                    self.logger.log(step, self.evaluate())
                signum = stop.requested(self.accelerator)
                if signum or (config.save_steps and step % config.save_steps == 0 and step < config.max_steps):
                    path = self.checkpointer.save(step, self.training_state())
                    if signum:
                        raise TrainingInterrupted(signum, step, path)

    def _log_samples(self, step: int, samples: Samples) -> None:
        shown = list(zip(samples.prompt_texts, samples.response_texts, samples.scores.tolist()))
        self.logger.write_text("samples", "\n\n".join(f"{p!r} -> {r!r} (score {s:.3f})"
                                                      for p, r, s in shown[: self.config.num_samples_to_log]), step)

    def training_state(self) -> dict[str, Any]:
        samplers = [self.sampler.state_dict()]
        if self.accelerator.num_processes > 1:
            samplers = [None] * self.accelerator.num_processes
            torch.distributed.all_gather_object(samplers, self.sampler.state_dict())
        return {**{name: obj.state_dict() for name, obj in self.algorithm_state.items()}, "prompt_sampler": samplers,
                "nonfinite_skipped": self.guard.skipped, "metrics_lines": self.logger.lines_written}

    def evaluate(self) -> dict[str, float]:
        """Gold score, reward, KL to the reference and length on the held-out prompts."""
        config = self.config
        eval_prompts = tokenize_prompts(load_prompts(config.eval_prompts_file, tokenizer=self.tokenizer),
                                        self.tokenizer, max_prompt_length=config.max_prompt_length)
        results = evaluate_policy(self.policy, self.reference, self.tokenizer, eval_prompts, self.sampling,
                                  reward=self.reward, gold_function=self.gold_function,
                                  batch_size=config.rollout_batch_size, accelerator=self.accelerator)
        return {f"eval/{k}": v for k, v in results.items()}

    def finish(self, summary: dict[str, Any]) -> dict[str, Any]:
        """Final evaluation on held-out prompts, then save the policy: with LoRA, the adapter alone
        (output_dir/adapter) and then the policy with its adapters merged (output_dir/model)."""
        config = self.config
        if self.logger.history:
            summary.update({k: v for k, v in self.logger.history[-1].items() if k.startswith(("objective/", "gold/"))})
        if config.eval_prompts_file:
            eval_metrics = self.evaluate()
            self.logger.log(config.max_steps, eval_metrics)
            summary.update(eval_metrics)
        policy = self.policy
        if config.use_peft:
            save_pretrained_atomic(policy, self.tokenizer, Path(config.output_dir) / "adapter", self.accelerator)
            policy = merge_lora(policy)
        return finish_run(policy, self.tokenizer, summary, config, self.accelerator, self.logger, self.stage)


def _warn_if_not_sft(config, stage: str, accelerator) -> None:
    if accelerator.is_main_process and training_stage_of(config.model_name_or_path) not in ("sft", "ppo", "dpo"):
        warnings.warn(f"{config.model_name_or_path} is not an `rlhf sft` checkpoint: {stage.upper()} from a model that "
                      "skipped SFT explores poorly and the KL anchor is a model that does not follow instructions",
                      stacklevel=3)
