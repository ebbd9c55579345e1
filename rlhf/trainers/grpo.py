"""Critic-free online RL: GRPO (Shao et al. 2024, DeepSeekMath section 4), Dr. GRPO, RLOO,
REINFORCE++ and its group-baseline form, as one trainer with an ``advantage`` option.

PPO learns a value function to tell a good response from a lucky one. These methods drop it:
each prompt is answered G times and every response is judged against its siblings (or, for
REINFORCE++, against the batch). The online run (roles, sampling and scoring, resume, signals,
DDP, checkpoints, saving) is PPO's, in online.py; what is this method's is here: several weighted
rewards, group advantages, the KL to the reference in the reward or in the loss, and clipped
updates without a value loss. Each step: rollout, score, reference log-probs, advantages, update,
metrics.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from rlhf.config.grpo import GRPOConfig
from rlhf.losses import kl_loss_k3, ppo_policy_loss
from rlhf.rewards.functions import check_reward_function, load_function
from rlhf.rewards.scorers import FunctionScorer, RewardModelScorer
from rlhf.rewards.weighted import WeightedRewards
from rlhf.rl_math import (dr_grpo_advantages, frac_zero_std_groups, grpo_advantages, kl_estimate, masked_mean,
                          reinforce_pp_advantages, reinforce_pp_baseline_advantages, rloo_advantages, select)
from rlhf.rollout.logprobs import entropy_from_logits, response_logits, response_logprobs, token_logprobs
from rlhf.trainers.online import OnlineRun, Samples, load_policy_and_reference, mean_over_processes, sample_metrics
from rlhf.trainers.optim import NonFiniteGuard, shuffled_minibatch_epochs

CONFIG_CLASS = GRPOConfig


@dataclass
class GroupExperience:
    """One scored batch of B = prompts x G responses (groups contiguous); (B, R) unless noted."""

    samples: Samples
    old_logprobs: torch.Tensor  # pi_old, recorded while sampling
    kl: torch.Tensor  # per-token KL estimate to the reference (0 without one)
    advantages: torch.Tensor  # a sequence-level advantage is repeated on each of its tokens
    loss_mask: torch.Tensor  # the tokens that train: not a skipped reward's, nor (if so set) a never-ended response's
    frac_zero_std: torch.Tensor  # () share of prompts whose G scores are all equal


def run(config: GRPOConfig) -> dict:
    run_ = OnlineRun.start(config, "grpo", lambda policy, tokenizer: policy, policy_of=lambda model: model,
                           trainable_name="policy",
                           num_training_steps=config.max_steps * config.num_iterations * config.num_minibatches,
                           algorithm_state={}, postfix_keys=("objective/scores", "objective/kl", "gold/score"),
                           load_models=load_grpo_roles)
    model, accelerator = run_.model, run_.accelerator

    def grpo_step(step: int) -> Samples:
        t0 = time.time()
        # 1-3. Rollout (G responses per prompt), score, reference log-probs (online.py). The sampler's
        # own log-probs are pi_old: they equal a forward pass's to ~1e-5 and save that pass.
        samples = run_.sample_and_score(record_logprobs=True, num_generations=config.num_generations)
        if samples.rollout.logprobs is None:  # the sampler cannot record them (min_new_tokens): one forward pass
            with torch.no_grad():
                samples.rollout.logprobs = response_logprobs(run_.policy, samples.rollout.query_responses,
                                                             samples.rollout.attention_mask,
                                                             samples.rollout.prompt_length, config.temperature)
        # 4. Advantages: each response against its group (or the batch); KL in the reward if so chosen.
        exp = make_group_experience(samples, config, accelerator)
        t_rollout = time.time() - t0
        # 5. Optimise: num_iterations passes of the clipped surrogate (+ beta * KL in the loss).
        update_stats = grpo_update(model, run_.optimizer, run_.scheduler, exp, config, accelerator, run_.guard, step)
        # 6. Metrics (averaged over processes), in PPO's namespace.
        if run_.should_log(step):
            metrics = step_metrics(exp, update_stats, run_.reward, config, run_.gold_function, accelerator)
            t_update = time.time() - t0 - t_rollout
            run_.log(step, {**metrics, "time/rollout_s": t_rollout, "time/update_s": t_update,
                            "train/learning_rate": run_.scheduler.get_last_lr()[0]})
        return samples

    run_.train(grpo_step)
    return run_.finish({"stage": "grpo", "steps": config.max_steps, "advantage": config.advantage})


def load_grpo_roles(config: GRPOConfig, accelerator, tokenizer, records):
    """(policy, reference or None, the weighted rewards, gold function). Every reward function and the
    gold function is called once on the first two prompts before any model loads."""
    raw_prompts = [r.prompt if r.raw is None else r.raw for r in records[:2]]
    fields = [r.fields for r in records[:2]]
    functions = []
    for spec in config.reward_functions:
        function = load_function(spec, "reward_function", skip_errors=config.skip_bad_rewards)
        check_reward_function(function, raw_prompts, fields, config.prompts_file)
        functions.append(function)
    gold_function = None
    if config.gold_reward_function:  # the gold function sees the prompts decoded, as in evaluation
        gold_function = load_function(config.gold_reward_function, "gold_reward_function")
        check_reward_function(gold_function, [r.prompt for r in records[:2]], fields, config.prompts_file)
    policy, reference = load_policy_and_reference(config, accelerator, tokenizer, load_reference=config.uses_reference)
    scorers = [RewardModelScorer([path], tokenizer, accelerator.device, trust_remote_code=config.trust_remote_code)
               for path in config.reward_model_paths] + [FunctionScorer(f) for f in functions]
    names = [Path(path).name or path for path in config.reward_model_paths] + [f.name for f in functions]
    return policy, reference, WeightedRewards(scorers, names, config.weights()), gold_function


@torch.no_grad()
def make_group_experience(samples: Samples, config: GRPOConfig, accelerator) -> GroupExperience:
    """The advantages of one scored batch, and what the update and the metrics need besides."""
    rollout = samples.rollout
    mask = rollout.response_mask.float()  # (B, R)
    old_logprobs = rollout.logprobs  # (B, R)
    ref_logprobs = samples.ref_logprobs if samples.ref_logprobs is not None else old_logprobs  # no reference: KL 0
    kl = select(kl_estimate(select(old_logprobs, mask), select(ref_logprobs, mask), config.kl_estimator), mask)
    kl_coef = config.beta if config.kl_in_reward else 0.0
    G = config.num_generations
    if config.advantage in ("reinforce_pp", "reinforce_pp_baseline"):  # per token, whitened over the whole batch
        advantages = on_all_processes(
            lambda s, lp, ref, m: (reinforce_pp_advantages(s, lp, ref, m, kl_coef, config.kl_estimator)
                                   if config.advantage == "reinforce_pp" else
                                   reinforce_pp_baseline_advantages(s, G, lp, ref, m, kl_coef, config.kl_estimator)),
            accelerator, samples.scores, old_logprobs, ref_logprobs, mask)  # (B, R)
    else:  # one number per response: the score, less beta * its KL if in the reward, against its group
        scores = samples.scores - kl_coef * kl.sum(1)  # (B,)
        if config.scale_rewards == "batch":  # the std of the global batch
            sequence = on_all_processes(lambda s: sequence_advantages(s, config), accelerator, scores)
        else:  # groups never span processes: each process has whole groups
            sequence = sequence_advantages(scores, config)  # (B,)
        advantages = select(sequence[:, None].expand_as(mask), mask)  # (B, R)
    loss_mask = samples.loss_mask.float()  # (B, R) without skipped rewards' tokens (skip_bad_rewards)
    if config.mask_truncated_completions:
        loss_mask = loss_mask * rollout.ended[:, None].float()
    frac_zero_std = frac_zero_std_groups(samples.scores, G) if G > 1 else torch.zeros(())
    return GroupExperience(samples, old_logprobs, kl, advantages, loss_mask, frac_zero_std)


def sequence_advantages(scores: torch.Tensor, config: GRPOConfig) -> torch.Tensor:
    """One advantage per response (B,) by the configured group estimator."""
    if config.advantage == "grpo":
        return grpo_advantages(scores, config.num_generations, config.scale_rewards)
    if config.advantage == "dr_grpo":
        return dr_grpo_advantages(scores, config.num_generations)
    return rloo_advantages(scores, config.num_generations)


def on_all_processes(estimator, accelerator, scores: torch.Tensor, *per_token: torch.Tensor) -> torch.Tensor:
    """``estimator(scores, *per_token)`` over every process's batch, this process's rows back: batch statistics
    (whitening, the batch std) are those of the global batch, as one process with all of it would compute.
    Per-token tensors are right-padded to the longest response across processes (mask 0 there)."""
    if accelerator.num_processes == 1:
        return estimator(scores, *per_token)
    B, R = scores.shape[0], per_token[0].shape[1] if per_token else 0
    gathered = [accelerator.gather(scores)] + [accelerator.gather(accelerator.pad_across_processes(x, dim=1))
                                               for x in per_token]
    rows = slice(accelerator.process_index * B, (accelerator.process_index + 1) * B)
    result = estimator(*gathered)[rows]
    return result[:, :R] if per_token else result


def grpo_update(model, optimizer, scheduler, exp: GroupExperience, config: GRPOConfig, accelerator,
                guard: NonFiniteGuard, step: int) -> dict[str, torch.Tensor]:
    """``num_iterations`` passes over shuffled minibatches; each minibatch is one optimizer step over
    ``gradient_accumulation_steps`` micro-batches."""
    rollout = exp.samples.rollout
    ref_logprobs = exp.samples.ref_logprobs
    kl_in_loss = config.beta > 0 and not config.kl_in_reward
    B = exp.old_logprobs.shape[0]
    model.train()

    def compute_loss(idx: torch.Tensor):
        mask = exp.loss_mask[idx]  # (b, R)
        logits = response_logits(model, rollout.query_responses[idx], rollout.attention_mask[idx],
                                  rollout.prompt_length, config.temperature)  # (b, R, V)
        logprobs = token_logprobs(logits, rollout.responses[idx])  # (b, R)
        # Policy loss: PPO's clipped surrogate, with DAPO's upper clip when epsilon_high is set.
        pg_loss, pg_stats = ppo_policy_loss(logprobs, exp.old_logprobs[idx], exp.advantages[idx], mask,
                                            config.epsilon, config.epsilon_high or None, config.loss_type)
        stats = {"loss/policy": pg_loss, "policy/clipfrac": pg_stats["clipfrac"],
                 "policy/approx_kl": pg_stats["approx_kl"], "policy/ratio": pg_stats["ratio"],
                 "policy/entropy": masked_mean(entropy_from_logits(logits.detach()), mask)}
        loss = pg_loss
        # KL loss: beta * k3 to the reference per token, aggregated as the policy loss (GRPO eq. 3).
        if kl_in_loss:
            kl_loss = kl_loss_k3(logprobs, ref_logprobs[idx], mask, config.loss_type)
            loss = loss + config.beta * kl_loss
            stats["loss/kl"] = kl_loss
        return loss, stats

    return shuffled_minibatch_epochs(model, optimizer, scheduler, accelerator, guard, step, B, config.num_iterations,
                                     config.per_device_train_batch_size, config.gradient_accumulation_steps,
                                     compute_loss, config.max_grad_norm, device=exp.old_logprobs.device)


def step_metrics(exp: GroupExperience, update_stats: dict, reward: WeightedRewards, config: GRPOConfig,
                 gold_function, accelerator) -> dict[str, float]:
    """The step's numbers, averaged over processes: PPO's names, TRL's frac_reward_zero_std, and each
    reward's mean as rewards/<name> when there are several."""
    metrics = {**sample_metrics(exp.samples, gold_function), "objective/frac_reward_zero_std": exp.frac_zero_std,
               "objective/advantages_abs": masked_mean(exp.advantages.abs(), exp.samples.rollout.response_mask)}
    if exp.samples.ref_logprobs is not None:
        metrics.update({"objective/kl": exp.kl.sum(1).mean(), "objective/kl_coef": config.beta})
        if config.kl_in_reward:
            metrics["objective/non_score_reward"] = -config.beta * exp.kl.sum(1).mean()
    if len(reward.names) > 1 and reward.last is not None:
        metrics.update({f"rewards/{name}": scores.nanmean() for name, scores in zip(reward.names, reward.last)})
    return mean_over_processes({**metrics, **update_stats}, accelerator)
