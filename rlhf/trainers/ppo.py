"""Stage 3: PPO against a frozen reward with a per-token KL penalty to the reference
(Ziegler et al. 2019; InstructGPT section 3.5, "RL"; lm-human-preferences train_policy.py).

Four roles: the trainable policy and value (one module, one optimizer), the frozen
reference (the SFT model) and the frozen reward (a model, an ensemble or a function).
Each step reads like the paper: rollout, score, reference log-probs, shaped rewards,
advantages, epochs x minibatches of clipped-surrogate updates, KL control, metrics.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass

import torch

from rlhf.config.ppo import PPOConfig
from rlhf.data import collate_prompts, load_prompts, tokenize_prompts
from rlhf.evaluation.policy_eval import evaluate_policy
from rlhf.kl_control import AdaptiveKLController, FixedKLController
from rlhf.losses import entropy_from_logits, ppo_policy_loss, ppo_value_loss, token_logprobs
from rlhf.models.loading import load_causal_lm, load_tokenizer, training_stage_of
from rlhf.models.lora import AdapterFreeReference, add_lora, merge_lora
from rlhf.models.policy_value import PolicyAndValue, disable_dropout
from rlhf.models.scalar_model import ScalarModel
from rlhf.rl_math import (
    RunningMoments, explained_variance, gae, kl_penalized_rewards, masked_mean, masked_whiten, normalize_scores,
)
from rlhf.rollout.generation import Rollout, SamplingParams, decode_responses, generate
from rlhf.rollout.logprobs import response_logprobs
from rlhf.rollout.prompts import PromptSampler
from rlhf.rollout.rewards import FunctionScorer, RewardModelScorer, load_function
from rlhf.trainers.checkpoint import Checkpointer
from rlhf.trainers.common import (
    RunLogger, finish_run, make_accelerator, make_optimizer, make_scheduler, prepare_output_dir,
    save_pretrained_atomic, seed_everything,
)
from rlhf.trainers.loop import NonFiniteGuard, StopSignals, TrainingInterrupted, resolve_resume

CONFIG_CLASS = PPOConfig
SMALL_KL_COEF = 1e-3  # below this the penalty barely restrains the policy: expect reward hacking


@dataclass
class Experience:
    """One rollout batch with everything the PPO epochs and the metrics need; (B, R) unless noted."""

    rollout: Rollout
    prompt_texts: list[str]
    response_texts: list[str]
    scores: torch.Tensor  # (B,) raw reward, after the missing-eos penalty
    normalized_scores: torch.Tensor  # (B,)
    old_logprobs: torch.Tensor
    old_values: torch.Tensor
    kl: torch.Tensor
    non_score_reward: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor


def build_roles(config: PPOConfig, accelerator):
    """The four roles: (policy+value module, reference, reward scorer, tokenizer)."""
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
                                   trust_remote_code=config.trust_remote_code)
    else:
        reward = FunctionScorer(load_function(config.reward_function))
    value_model = None
    if config.value_model == "separate":
        value_path = config.value_model_path or config.reward_model_path.split(",")[0] or config.model_name_or_path
        value_model = ScalarModel.from_pretrained(value_path, tokenizer, trust_remote_code=config.trust_remote_code)
        if config.use_peft:
            value_model.backbone = add_lora(value_model.backbone, config, task_type=None)
    model = PolicyAndValue(policy, value_model)
    disable_dropout(model)
    return model, reference, reward, tokenizer


def run(config: PPOConfig) -> dict:
    accelerator = make_accelerator(config)
    seed_everything(config.seed + accelerator.process_index)  # each process samples its own rollouts
    output_dir = prepare_output_dir(config, accelerator)
    model, reference, reward, tokenizer = build_roles(config, accelerator)
    _warn_common_mistakes(config, accelerator)

    prompts = tokenize_prompts(load_prompts(config.prompts_file, tokenizer=tokenizer, skip_bad_records=config.skip_bad_records),
                               tokenizer, max_prompt_length=config.max_prompt_length)
    sampler = PromptSampler(len(prompts), config.rollout_batch_size, config.seed, accelerator.process_index)
    sampling = SamplingParams(max_new_tokens=config.max_new_tokens, min_new_tokens=config.min_new_tokens,
                              temperature=config.temperature, top_k=config.top_k, top_p=config.top_p)
    gold_function = load_function(config.gold_reward_function) if config.gold_reward_function else None

    optimizer = make_optimizer(model.parameters(), config)
    scheduler = make_scheduler(optimizer, config, config.max_steps * config.ppo_epochs * config.num_minibatches)
    model, optimizer = accelerator.prepare(model, optimizer)
    kl_ctl = (AdaptiveKLController(config.kl_coef, config.target_kl, config.kl_horizon) if config.adaptive_kl
              else FixedKLController(config.kl_coef))
    score_moments = RunningMoments()
    guard = NonFiniteGuard(config.max_nonfinite_skips)
    # Frozen roles (reference, reward) are not checkpointed: the saved config names them.
    checkpointer = Checkpointer(output_dir, accelerator, {"policy_and_value": model}, optimizer, scheduler,
                                config.save_total_limit)
    resume_from = resolve_resume(config, output_dir)
    saved = checkpointer.load(resume_from) if resume_from else None
    if saved is not None:
        kl_ctl.load_state_dict(saved["kl_controller"])
        score_moments.load_state_dict(saved["score_moments"])
        sampler.load_state_dict(saved["prompt_sampler"][accelerator.process_index])
        guard.skipped = saved["nonfinite_skipped"]
    logger = RunLogger(output_dir, accelerator, config.max_steps, config.report_to, config.disable_tqdm, "ppo",
                       postfix_keys=("objective/scores", "objective/kl", "gold/score"), resume=saved)

    def training_state() -> dict:
        samplers = [sampler.state_dict()]
        if accelerator.num_processes > 1:
            samplers = [None] * accelerator.num_processes
            torch.distributed.all_gather_object(samplers, sampler.state_dict())
        return {"kl_controller": kl_ctl.state_dict(), "score_moments": score_moments.state_dict(),
                "prompt_sampler": samplers, "nonfinite_skipped": guard.skipped, "metrics_lines": logger.lines_written}

    with StopSignals() as stop:
        for step in range((saved or {}).get("step", 0) + 1, config.max_steps + 1):
            # 1-4. Rollout, score, reference log-probs, KL-shaped rewards, advantages.
            t0 = time.time()
            batch = collate_prompts([prompts[i] for i in sampler.next_batch()], tokenizer.pad_token_id)
            exp = collect_experience(model, reference, reward, batch, tokenizer, sampling, kl_ctl.value, score_moments,
                                     config, accelerator)
            t_rollout = time.time() - t0
            # 5. Optimise: ppo_epochs passes over reshuffled minibatches.
            update_stats = ppo_update(model, optimizer, scheduler, exp, config, accelerator, guard, step)
            t_update = time.time() - t0 - t_rollout
            # 6. KL control: adaptive beta moves toward the target KL per sequence.
            beta = kl_ctl.value
            kl_ctl.update(accelerator.reduce(exp.kl.sum(1).mean(), "mean").item(),
                          config.rollout_batch_size * accelerator.num_processes)
            # 7. Metrics (averaged over processes) and a few sample responses.
            logger.advance()
            if step % config.logging_steps == 0 or step == config.max_steps:
                metrics = step_metrics(exp, update_stats, beta, gold_function, accelerator)
                logger.log(step, {**metrics, "time/rollout_s": t_rollout, "time/update_s": t_update,
                                  "train/learning_rate": scheduler.get_last_lr()[0]})
            if config.sample_every and step % config.sample_every == 0:
                logger.write_text("samples", "\n\n".join(
                    f"{p!r} -> {r!r} (score {s:.3f})" for p, r, s in list(zip(
                        exp.prompt_texts, exp.response_texts, exp.scores.tolist()))[: config.num_samples_to_log]), step)
            if config.eval_prompts_file and config.eval_steps and step % config.eval_steps == 0 and step < config.max_steps:
                logger.log(step, _evaluate(accelerator.unwrap_model(model).policy, reference, reward, tokenizer, config,
                                           sampling, gold_function, accelerator))
            signum = stop.requested(accelerator)
            if signum or (config.save_steps and step % config.save_steps == 0 and step < config.max_steps):
                path = checkpointer.save(step, training_state())
                if signum:
                    raise TrainingInterrupted(signum, step, path)

    # Final evaluation on held-out prompts, then save the policy (and a separate value model).
    summary = {"stage": "ppo", "steps": config.max_steps, "final_kl_coef": kl_ctl.value}
    if logger.history:
        summary.update({k: v for k, v in logger.history[-1].items() if k.startswith(("objective/", "gold/"))})
    if config.eval_prompts_file:
        eval_metrics = _evaluate(accelerator.unwrap_model(model).policy, reference, reward, tokenizer, config,
                                 sampling, gold_function, accelerator)
        logger.log(config.max_steps, eval_metrics)
        summary.update(eval_metrics)
    unwrapped = accelerator.unwrap_model(model)
    if config.use_peft:  # the adapter alone, then the adapters merged into every saved model
        save_pretrained_atomic(unwrapped.policy, tokenizer, output_dir / "adapter", accelerator)
        unwrapped.policy = merge_lora(unwrapped.policy)
        if unwrapped.value_model is not None:
            unwrapped.value_model.backbone = merge_lora(unwrapped.value_model.backbone)
    if unwrapped.value_model is not None:
        save_pretrained_atomic(unwrapped.value_model, tokenizer, output_dir / "value_model", accelerator)
    return finish_run(unwrapped.policy, tokenizer, summary, config, accelerator, logger, "ppo")


@torch.no_grad()
def collect_experience(model, reference, reward, batch: dict, tokenizer, sampling: SamplingParams, kl_coef: float,
                       score_moments: RunningMoments, config: PPOConfig, accelerator) -> Experience:
    device = accelerator.device
    # 1. Rollout: sample responses to the prompts from the current policy.
    trainable = accelerator.unwrap_model(model)
    rollout = generate(trainable.policy, batch["input_ids"].to(device), batch["attention_mask"].to(device), sampling,
                       tokenizer.eos_token_id, tokenizer.pad_token_id, record_logprobs=trainable.value_head is None)
    prompt_texts = tokenizer.batch_decode(batch["input_ids"], skip_special_tokens=True)
    response_texts = decode_responses(tokenizer, rollout)
    # 2. Score: the reward at the response's last token, penalised if it never ended, normalised.
    scores = reward(rollout, prompt_texts, response_texts)  # (B,)
    if config.missing_eos_penalty:
        scores = scores - config.missing_eos_penalty * (~rollout.ended).float()
    normalized = _normalize(scores, config, reward, score_moments, accelerator)  # (B,)
    # 3. Log-probs of the sampled tokens under the policy (= pi_old) and the reference; values.
    # The sampler's own log-probs serve as pi_old when it recorded them (a separate value model);
    # they equal a forward pass's to ~1e-5 (KV-cached vs full attention), and save that pass.
    if rollout.logprobs is not None:
        old_logprobs = rollout.logprobs  # (B, R)
        old_values = trainable.separate_values(rollout.query_responses, rollout.attention_mask, rollout.prompt_length)
    else:
        logits, old_values = model(rollout.query_responses, rollout.attention_mask, rollout.prompt_length,
                                   config.temperature)
        old_logprobs = token_logprobs(logits, rollout.responses)  # (B, R)
        del logits
    ref_logprobs = response_logprobs(reference, rollout.query_responses, rollout.attention_mask, rollout.prompt_length,
                                     config.temperature)  # (B, R)
    mask = rollout.response_mask.float()  # (B, R)
    # 4. Per-token rewards r_t = -beta * KL_t plus the score at the last token; GAE; whitened advantages.
    rewards, non_score_reward, kl = kl_penalized_rewards(normalized, old_logprobs, ref_logprobs, mask, kl_coef,
                                                         config.kl_estimator)
    if config.whiten_rewards:
        rewards = masked_whiten(rewards, mask, shift_mean=False)
    advantages, returns = gae(rewards, old_values, mask, config.gamma, config.lam)
    advantages = masked_whiten(advantages, mask)
    return Experience(rollout, prompt_texts, response_texts, scores, normalized, old_logprobs, old_values, kl,
                      non_score_reward, advantages, returns)


def step_metrics(exp: Experience, update_stats: dict, beta: float, gold_function, accelerator) -> dict[str, float]:
    """The step's numbers, averaged over processes (lm-human-preferences / TRL names)."""
    mask = exp.rollout.response_mask.float()
    metrics = {
        "objective/scores": exp.scores.mean(), "objective/scores_normalized": exp.normalized_scores.mean(),
        "objective/kl": exp.kl.sum(1).mean(), "objective/kl_coef": beta,
        "objective/non_score_reward": exp.non_score_reward.sum(1).mean(),
        "objective/rlhf_reward": (exp.normalized_scores + exp.non_score_reward.sum(1)).mean(),
        "val/mean": masked_mean(exp.old_values, mask), "val/explained_var": explained_variance(exp.old_values, exp.returns, mask),
        "response/length": mask.sum(1).mean(), "response/ended_frac": exp.rollout.ended.float().mean(),
        **update_stats,
    }
    if gold_function is not None:
        gold = gold_function(exp.prompt_texts, exp.response_texts, exp.rollout.ended.tolist())
        metrics["gold/score"] = sum(gold) / len(gold)
    return {k: accelerator.reduce(torch.as_tensor(v, dtype=torch.float32, device=accelerator.device), "mean").item()
            for k, v in metrics.items()}


def ppo_update(model, optimizer, scheduler, exp: Experience, config: PPOConfig, accelerator, guard: NonFiniteGuard,
               step: int) -> dict[str, torch.Tensor]:
    """``ppo_epochs`` passes of clipped-surrogate + clipped-value updates over shuffled minibatches."""
    B = exp.old_logprobs.shape[0]
    micro = config.per_device_train_batch_size
    rollout = exp.rollout
    stats: dict[str, list[torch.Tensor]] = {}
    model.train()
    for _ in range(config.ppo_epochs):
        order = torch.randperm(B, device=exp.old_logprobs.device)
        for start in range(0, B, micro):
            idx = order[start:start + micro]
            mask = rollout.response_mask[idx].float()  # (b, R)
            with accelerator.accumulate(model):
                logits, values = model(rollout.query_responses[idx], rollout.attention_mask[idx],
                                       rollout.prompt_length, config.temperature)  # (b, R, V), (b, R)
                logprobs = token_logprobs(logits, rollout.responses[idx])  # (b, R)
                # Policy loss: the clipped surrogate (PPO eq. 7) on whitened GAE advantages.
                pg_loss, pg_stats = ppo_policy_loss(logprobs, exp.old_logprobs[idx], exp.advantages[idx], mask,
                                                    config.cliprange)
                # Value loss: clipped around the rollout's values, toward the GAE returns.
                vf_loss, vf_stats = ppo_value_loss(values, exp.old_values[idx], exp.returns[idx], mask,
                                                   config.cliprange_value)
                # Without an entropy bonus the entropy is only a metric: keep it out of the graph.
                entropy = masked_mean(entropy_from_logits(logits if config.entropy_coef else logits.detach()), mask)
                loss = pg_loss + config.vf_coef * vf_loss - config.entropy_coef * entropy
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    grad_norm = float(accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm or math.inf))
                    if guard.check(step, {"loss": accelerator.reduce(loss.detach(), "mean").item(),
                                          "gradient norm": grad_norm}):
                        optimizer.step()
                        scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            for name, value in (("loss/policy", pg_loss), ("loss/value", vf_loss), ("policy/entropy", entropy),
                                ("policy/clipfrac", pg_stats["clipfrac"]), ("policy/approx_kl", pg_stats["approx_kl"]),
                                ("policy/ratio", pg_stats["ratio"]), ("val/clipfrac", vf_stats["vf_clipfrac"])):
                stats.setdefault(name, []).append(value.detach())
    return {name: torch.stack(values).mean() for name, values in stats.items()}


def _normalize(scores: torch.Tensor, config: PPOConfig, reward, moments: RunningMoments, accelerator) -> torch.Tensor:
    """Scores on a fixed scale, so beta and the value loss mean the same whatever the reward's units."""
    clip = config.reward_clip or None
    if config.reward_normalization == "none":
        return scores.clamp(-clip, clip) if clip else scores
    if config.reward_normalization == "rm_stats":
        if reward.stats is None:
            raise ValueError("reward_normalization rm_stats: the reward model has no saved reward_stats.json")
        return normalize_scores(scores, reward.stats["mean"], reward.stats["std"], clip)
    moments.update(accelerator.gather(scores))
    return normalize_scores(scores, moments.mean, max(moments.std, 1e-6), clip)


def _evaluate(policy, reference, reward, tokenizer, config: PPOConfig, sampling, gold_function, accelerator) -> dict:
    eval_prompts = tokenize_prompts(load_prompts(config.eval_prompts_file, tokenizer=tokenizer), tokenizer,
                                    max_prompt_length=config.max_prompt_length)
    results = evaluate_policy(policy, reference, tokenizer, eval_prompts, sampling, reward=reward,
                              gold_function=gold_function, batch_size=config.rollout_batch_size, accelerator=accelerator)
    return {f"eval/{k}": v for k, v in results.items()}


def _warn_common_mistakes(config: PPOConfig, accelerator) -> None:
    if not accelerator.is_main_process:
        return
    if config.kl_coef < SMALL_KL_COEF and not config.adaptive_kl:
        warnings.warn(f"kl_coef={config.kl_coef}: with (almost) no KL penalty the policy is free to exploit the "
                      "reward model's errors (reward hacking: its score rises while true quality falls)", stacklevel=2)
    if training_stage_of(config.model_name_or_path) not in ("sft", "ppo", "dpo"):
        warnings.warn(f"{config.model_name_or_path} is not an `rlhf sft` checkpoint: PPO from a model that skipped "
                      "SFT explores poorly and the KL anchor is a model that does not follow instructions", stacklevel=2)
