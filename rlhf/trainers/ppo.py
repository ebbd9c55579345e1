"""Stage 3: PPO against a frozen reward with a per-token KL penalty to the reference
(Ziegler et al. 2019; InstructGPT section 3.5, "RL"; lm-human-preferences train_policy.py).

The online run that every online method shares (roles, sampling and scoring, resume state,
checkpoints, saving) is in online.py. What is PPO is here: a value function trained beside
the policy, per-token KL-shaped rewards, GAE advantages, and epochs x minibatches of
clipped-surrogate updates. Each step reads like the paper: rollout, score, reference
log-probs, shaped rewards, advantages, update, KL control, metrics.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from rlhf.config.base import ConfigError
from rlhf.config.ppo import PPOConfig
from rlhf.kl_control import AdaptiveKLController, FixedKLController
from rlhf.losses import ppo_policy_loss, ppo_value_loss
from rlhf.models.lora import add_lora, merge_lora
from rlhf.models.policy_value import PolicyAndValue
from rlhf.models.scalar_model import REWARD_STATS_FILE, ScalarModel
from rlhf.rl_math import (
    RunningMoments, explained_variance, gae, kl_penalized_rewards, masked_mean, masked_whiten, normalize_scores,
)
from rlhf.rollout.logprobs import entropy_from_logits, token_logprobs
from rlhf.trainers.compile import check_compiler, compile_counters, compile_module
from rlhf.trainers.online import OnlineRun, Samples, mean_over_processes, sample_metrics
from rlhf.trainers.optim import NonFiniteGuard, shuffled_minibatch_epochs
from rlhf.trainers.saving import save_pretrained_atomic
from rlhf.trainers.sharding import gathered

CONFIG_CLASS = PPOConfig
SMALL_KL_COEF = 1e-3  # below this the penalty barely restrains the policy: expect reward hacking


@dataclass
class Experience:
    """One scored rollout batch with what the PPO epochs and the metrics need; (B, R) unless noted."""

    samples: Samples
    normalized_scores: torch.Tensor  # (B,)
    old_logprobs: torch.Tensor
    old_values: torch.Tensor
    kl: torch.Tensor
    non_score_reward: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor


def build_policy_and_value(config: PPOConfig, policy, tokenizer) -> PolicyAndValue:
    """The trainable module: the policy and its value function (a separate model, or a head on the policy)."""
    value_model = None
    if config.value_model == "separate":
        value_model = load_value_model(config, tokenizer)
        if config.use_peft:
            value_model.backbone = add_lora(value_model.backbone, config, task_type=None)
    module = PolicyAndValue(policy, value_model)
    return compile_module(module, config.torch_compile_mode) if config.torch_compile else module


def load_value_model(config: PPOConfig, tokenizer) -> ScalarModel:
    """Where the separate value model starts (InstructGPT: the reward model). value_model_path must
    hold a trained scalar head unless allow_new_value_head; without it, the (first) reward model;
    with a reward function and no path, the policy's weights with a fresh head."""
    trust = config.trust_remote_code
    if config.value_model_path:
        return ScalarModel.from_pretrained(
            config.value_model_path, tokenizer, trust_remote_code=trust, allow_new_head=config.allow_new_value_head,
            role="value model", hint="pass a reward model (`rlhf rm`'s OUTPUT_DIR/model) or an earlier PPO run's "
            "value_model, or set --allow_new_value_head true to start its value head at random")
    if config.reward_model_path:  # loaded as the reward already, so its head is known to be trained
        return ScalarModel.from_pretrained(config.reward_model_path.split(",")[0], tokenizer, trust_remote_code=trust)
    return ScalarModel.from_pretrained(config.model_name_or_path, tokenizer, trust_remote_code=trust,
                                       allow_new_head=True)


RM_STATS_MISSING = ("reward_normalization rm_stats: the reward model has no saved reward_stats.json (an ensemble "
                    "has no single one either); use --reward_normalization running")


def check_rm_stats(config: PPOConfig) -> None:
    """rm_stats normalisation needs one reward model with its saved statistics: checked before
    anything loads, not at the first step."""
    paths = [p for p in config.reward_model_path.split(",") if p.strip()]
    if config.reward_normalization == "rm_stats" and (len(paths) != 1 or
                                                        not (Path(paths[0]) / REWARD_STATS_FILE).is_file()):
        raise ConfigError(RM_STATS_MISSING)


def run(config: PPOConfig) -> dict:
    check_rm_stats(config)
    if config.torch_compile:
        check_compiler()  # before any model loads
    kl_ctl = (AdaptiveKLController(config.kl_coef, config.target_kl, config.kl_horizon) if config.adaptive_kl
              else FixedKLController(config.kl_coef))
    score_moments = RunningMoments()
    run_ = OnlineRun.start(config, "ppo", lambda policy, tokenizer: build_policy_and_value(config, policy, tokenizer),
                           policy_of=lambda model: model.policy, trainable_name="policy_and_value",
                           num_training_steps=config.max_steps * config.ppo_epochs * config.num_minibatches,
                           algorithm_state={"kl_controller": kl_ctl, "score_moments": score_moments},
                           postfix_keys=("objective/scores", "objective/kl", "gold/score"))
    model, accelerator = run_.model, run_.accelerator
    _warn_small_kl_coef(config, accelerator)
    # With a separate value model the sampler's log-probs serve as pi_old (no extra policy forward);
    # with a shared head one forward gives the values and the log-probs together.
    record_logprobs = accelerator.unwrap_model(model).value_head is None

    def ppo_step(step: int) -> Samples:
        t0 = time.time()
        # 1-3. Rollout, score, reference log-probs (online.py).
        samples = run_.sample_and_score(record_logprobs)
        # 4. pi_old log-probs and values, KL-shaped rewards, advantages.
        with gathered(accelerator):  # FSDP2: the separate value model is called outside the root's forward
            exp = make_experience(model, samples, kl_ctl.value, score_moments, run_.reward, config, accelerator)
        t_rollout = time.time() - t0
        # 5. Optimise: ppo_epochs passes over reshuffled minibatches.
        update_stats = ppo_update(model, run_.optimizer, run_.scheduler, exp, config, accelerator, run_.guard, step)
        t_update = time.time() - t0 - t_rollout
        # 6. KL control: adaptive beta moves toward the target KL per sequence.
        beta = kl_ctl.value
        kl_ctl.update(accelerator.reduce(exp.kl.sum(1).mean(), "mean").item(),
                      config.rollout_batch_size * accelerator.num_processes)
        # 7. Metrics (averaged over processes).
        if run_.should_log(step):
            metrics = step_metrics(exp, update_stats, beta, run_.gold_function, accelerator)
            run_.log(step, {**metrics, "time/rollout_s": t_rollout, "time/update_s": t_update,
                            "train/learning_rate": run_.scheduler.get_last_lr()[0]})
        return samples

    run_.train(ppo_step)

    # The separate value model is saved beside the policy (its adapters merged); then the policy.
    value_model = accelerator.unwrap_model(model).value_model
    if value_model is not None:
        if config.use_peft:
            value_model.backbone = merge_lora(value_model.backbone)
        save_pretrained_atomic(value_model, run_.tokenizer, Path(config.output_dir) / "value_model", accelerator)
    return run_.finish({"stage": "ppo", "steps": config.max_steps, "final_kl_coef": kl_ctl.value,
                        **(compile_counters() if config.torch_compile else {})})


@torch.no_grad()
def make_experience(model, samples: Samples, kl_coef: float, score_moments: RunningMoments, reward,
                    config: PPOConfig, accelerator) -> Experience:
    """Everything the PPO epochs need from one scored rollout batch."""
    rollout = samples.rollout
    # 1. Scores on a fixed scale.
    normalized = normalize(samples.scores, config, reward, score_moments, accelerator)  # (B,)
    # 2. Log-probs of the sampled tokens under the policy (= pi_old), and the values.
    # The sampler's own log-probs serve as pi_old when it recorded them (a separate value model);
    # they equal a forward pass's to ~1e-5 (KV-cached vs full attention), and save that pass.
    if rollout.logprobs is not None:
        old_logprobs = rollout.logprobs  # (B, R)
        old_values = accelerator.unwrap_model(model).separate_values(rollout.query_responses, rollout.attention_mask,
                                                                     rollout.prompt_length)  # (B, R)
    else:
        logits, old_values = model(rollout.query_responses, rollout.attention_mask, rollout.prompt_length,
                                   config.temperature)
        old_logprobs = token_logprobs(logits, rollout.responses)  # (B, R)
        del logits
    mask = rollout.response_mask.float()  # (B, R)
    # 3. Per-token rewards r_t = -beta * KL_t plus the score at the last token; GAE; whitened advantages.
    rewards, non_score_reward, kl = kl_penalized_rewards(normalized, old_logprobs, samples.ref_logprobs, mask, kl_coef,
                                                         config.kl_estimator)
    if config.whiten_rewards:
        rewards = masked_whiten(rewards, mask, shift_mean=False)
    advantages, returns = gae(rewards, old_values, mask, config.gamma, config.lam)
    advantages = masked_whiten(advantages, samples.loss_mask.float())  # skipped rewards (skip_bad_rewards) left out
    return Experience(samples, normalized, old_logprobs, old_values, kl, non_score_reward, advantages, returns)


def ppo_update(model, optimizer, scheduler, exp: Experience, config: PPOConfig, accelerator, guard: NonFiniteGuard,
               step: int) -> dict[str, torch.Tensor]:
    """``ppo_epochs`` passes of clipped-surrogate + clipped-value updates over shuffled minibatches;
    each minibatch is one optimizer step over ``gradient_accumulation_steps`` micro-batches."""
    B = exp.old_logprobs.shape[0]
    rollout = exp.samples.rollout
    model.train()

    def compute_loss(idx: torch.Tensor):
        mask = exp.samples.loss_mask[idx].float()  # (b, R) response tokens, less those of skipped rewards
        logits, values = model(rollout.query_responses[idx], rollout.attention_mask[idx], rollout.prompt_length,
                               config.temperature)  # (b, R, V), (b, R)
        logprobs = token_logprobs(logits, rollout.responses[idx])  # (b, R)
        # Policy loss: the clipped surrogate (PPO eq. 7) on whitened GAE advantages.
        pg_loss, pg_stats = ppo_policy_loss(logprobs, exp.old_logprobs[idx], exp.advantages[idx], mask,
                                            config.cliprange)
        # Value loss: clipped around the rollout's values, toward the GAE returns.
        vf_loss, vf_stats = ppo_value_loss(values, exp.old_values[idx], exp.returns[idx], mask, config.cliprange_value)
        # Without an entropy bonus the entropy is only a metric: keep it out of the graph.
        entropy = masked_mean(entropy_from_logits(logits if config.entropy_coef else logits.detach()), mask)
        loss = pg_loss + config.vf_coef * vf_loss - config.entropy_coef * entropy
        return loss, {"loss/policy": pg_loss, "loss/value": vf_loss, "policy/entropy": entropy,
                      "policy/clipfrac": pg_stats["clipfrac"], "policy/approx_kl": pg_stats["approx_kl"],
                      "policy/ratio": pg_stats["ratio"], "val/clipfrac": vf_stats["vf_clipfrac"]}

    return shuffled_minibatch_epochs(model, optimizer, scheduler, accelerator, guard, step, B, config.ppo_epochs,
                                     config.per_device_train_batch_size, config.gradient_accumulation_steps,
                                     compute_loss, config.max_grad_norm, device=exp.old_logprobs.device)


def step_metrics(exp: Experience, update_stats: dict, beta: float, gold_function, accelerator) -> dict[str, float]:
    """The step's numbers, averaged over processes (lm-human-preferences / TRL names)."""
    mask = exp.samples.rollout.response_mask.float()
    return mean_over_processes({
        **sample_metrics(exp.samples, gold_function),
        "objective/scores_normalized": exp.normalized_scores.mean(),
        "objective/kl": exp.kl.sum(1).mean(), "objective/kl_coef": beta,
        # k1 whatever the estimator: its mean below 0 is a sign of a sampling mismatch (monitors.negative_kl)
        "objective/kl_k1": ((exp.old_logprobs - exp.samples.ref_logprobs) * mask).sum(1).mean(),
        "objective/non_score_reward": exp.non_score_reward.sum(1).mean(),
        "objective/rlhf_reward": (exp.normalized_scores + exp.non_score_reward.sum(1)).mean(),
        "val/mean": masked_mean(exp.old_values, mask), "val/explained_var": explained_variance(exp.old_values, exp.returns, mask),
        **update_stats,
    }, accelerator)


def normalize(scores: torch.Tensor, config: PPOConfig, reward, moments: RunningMoments, accelerator) -> torch.Tensor:
    """Scores on a fixed scale, so beta and the value loss mean the same whatever the reward's units."""
    clip = config.reward_clip or None
    if config.reward_normalization == "none":
        return scores.clamp(-clip, clip) if clip else scores
    if config.reward_normalization == "rm_stats":
        if reward.stats is None:
            raise ConfigError(RM_STATS_MISSING)
        return normalize_scores(scores, reward.stats["mean"], reward.stats["std"], clip)
    moments.update(accelerator.gather(scores))
    return normalize_scores(scores, moments.mean, max(moments.std, 1e-6), clip)


def _warn_small_kl_coef(config: PPOConfig, accelerator) -> None:
    if accelerator.is_main_process and config.kl_coef < SMALL_KL_COEF and not config.adaptive_kl:
        warnings.warn(f"kl_coef={config.kl_coef}: with (almost) no KL penalty the policy is free to exploit the "
                      "reward model's errors (reward hacking: its score rises while true quality falls)", stacklevel=2)
