"""One small PPO rollout on the tiny model, for tests of PPO's pieces (experience, update)."""

import torch

from rlhf.config.base import parse_config
from rlhf.config.ppo import PPOConfig


def ppo_config(tiny_model_dir, toy_data, *extra) -> PPOConfig:
    """8 prompts, responses of exactly 6 tokens (so every token mean is over equal counts)."""
    return parse_config(PPOConfig, [
        "--model_name_or_path", str(tiny_model_dir), "--reward_function", "reward_functions:target_char_rate",
        "--prompts_file", str(toy_data["prompts"]), "--rollout_batch_size", "8", "--per_device_train_batch_size", "8",
        "--max_new_tokens", "6", "--min_new_tokens", "6", "--disable_tqdm", "true", "--report_to", "none",
        *map(str, extra)])


def scored_rollout(tiny_model_dir, toy_data, config: PPOConfig):
    """(policy-and-value module with a shared value head, reward, samples, accelerator), seeded."""
    from rlhf.data import collate_prompts, load_prompts, tokenize_prompts
    from rlhf.models.loading import load_causal_lm, load_tokenizer
    from rlhf.models.policy_value import PolicyAndValue, disable_dropout
    from rlhf.rewards.scorers import FunctionScorer
    from rlhf.rollout.generation import SamplingParams
    from rlhf.trainers.online import sample_and_score
    from rlhf.trainers.setup import make_accelerator
    from reward_functions import target_char_rate

    accelerator = make_accelerator(config)
    tokenizer = load_tokenizer(str(tiny_model_dir), padding_side="left")
    torch.manual_seed(0)
    model = PolicyAndValue(load_causal_lm(str(tiny_model_dir), tokenizer), None)
    disable_dropout(model)
    reference = load_causal_lm(str(tiny_model_dir), tokenizer).eval().requires_grad_(False)
    reward = FunctionScorer(target_char_rate)
    prompts = tokenize_prompts(load_prompts(config.prompts_file, tokenizer=tokenizer), tokenizer,
                               max_prompt_length=config.max_prompt_length)
    batch = collate_prompts(prompts[: config.rollout_batch_size], tokenizer.pad_token_id)
    sampling = SamplingParams(max_new_tokens=config.max_new_tokens, min_new_tokens=config.min_new_tokens)
    samples = sample_and_score(model.policy, reference, reward, batch, tokenizer, sampling, config, accelerator,
                               record_logprobs=False)
    return model, reward, samples, accelerator


def fixed_length_experience(tiny_model_dir, toy_data, config: PPOConfig | None = None):
    from rlhf.rl_math import RunningMoments
    from rlhf.trainers.ppo import make_experience

    config = config or ppo_config(tiny_model_dir, toy_data)
    model, reward, samples, accelerator = scored_rollout(tiny_model_dir, toy_data, config)
    return model, make_experience(model, samples, config.kl_coef, RunningMoments(), reward, config, accelerator)
