"""``rlhf best-of-n``: sample n responses per prompt and keep the one the reward scores highest.

The simplest optimiser of a reward model, and the baseline every RL result should beat or
explain (Stiennon et al. 2020; Gao et al. 2023). Its distribution moves away from the policy's by
KL = log n - (n - 1) / n nats (exact for continuous scores without ties; an upper bound
otherwise), so it is also the cheapest way to trace gold reward against KL. Its chosen responses,
written as demonstrations, are Llama 2's rejection-sampling fine-tuning data: ``rlhf sft`` on
them moves the policy toward its own best samples.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Sequence

import torch

from rlhf.atomic_io import write_json_atomic, write_jsonl
from rlhf.config.base import ConfigError
from rlhf.config.best_of_n import BestOfNConfig
from rlhf.data import collate_prompts, load_prompts, tokenize_prompts
from rlhf.progress import phase_bar
from rlhf.rollout.generation import SamplingParams, decode_responses, generate

CONFIG_CLASS = BestOfNConfig


def best_of_n_kl(n: int) -> float:
    """KL(best-of-n || policy) = log n - (n - 1) / n nats (an upper bound; exact without ties)."""
    return math.log(n) - (n - 1) / n


@torch.no_grad()
def sample_best_of_n(policy, tokenizer, examples: Sequence[dict], n: int, reward, sampling: SamplingParams,
                     seed: int, batch_size: int = 16, progress: str = "") -> list[dict]:
    """For each prompt example (``tokenize_prompts``'s), ``n`` samples of ``policy`` and the one
    ``reward`` scores highest: ``{"prompt", "raw_prompt", "response", "ended", "score",
    "mean_score", "length"}`` (``mean_score``: the mean over all n, i.e. best-of-1's expected
    score). Seeded; the caller's RNG state is restored."""
    device = next(policy.parameters()).device
    rng_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    chosen: list[dict] = []
    for start in phase_bar(range(0, len(examples), batch_size), progress, f"{len(examples)} prompts x {n}"):
        group = list(examples[start:start + batch_size])
        repeated = [e for e in group for _ in range(n)]  # prompt-major: rows i*n .. i*n+n-1 share a prompt
        batch = collate_prompts(repeated, tokenizer.pad_token_id)
        rollout = generate(policy, batch["input_ids"].to(device), batch["attention_mask"].to(device), sampling,
                           tokenizer.eos_token_id, tokenizer.pad_token_id)
        prompt_texts = tokenizer.batch_decode(batch["input_ids"], skip_special_tokens=True)
        responses = decode_responses(tokenizer, rollout)
        raw = [e.get("raw_prompt", t) for e, t in zip(repeated, prompt_texts)]
        scores = reward(rollout, prompt_texts, responses, raw, [e.get("fields", {}) for e in repeated])
        scores = scores.float().cpu().view(len(group), n)  # (b, n)
        lengths = rollout.response_mask.sum(1).view(len(group), n)  # (b, n)
        for i, j in enumerate(scores.argmax(1).tolist()):
            k = i * n + j
            chosen.append({"prompt": prompt_texts[k], "raw_prompt": raw[k], "response": responses[k],
                           "ended": bool(rollout.ended[k]), "score": scores[i, j].item(),
                           "mean_score": scores[i].mean().item(), "length": int(lengths[i, j])})
    torch.random.set_rng_state(rng_state)
    return chosen


def load_scorer(config, tokenizer, device):
    """The reward named by ``config``: reward model(s) (``reward_model_path``, comma-separated for
    an ensemble) or a Python function (``reward_function``)."""
    from rlhf.rewards.scorers import FunctionScorer, RewardModelScorer, load_function

    if config.reward_model_path:
        return RewardModelScorer(config.reward_model_path.split(","), tokenizer, device,
                                 aggregation=config.reward_aggregation, uncertainty_coef=config.reward_uncertainty_coef)
    return FunctionScorer(load_function(config.reward_function, "reward_function"))


def _check_outputs(config: BestOfNConfig) -> list[Path]:
    paths = [Path(p) for p in (config.output_file, config.demonstrations_file) if p]
    for path in paths:
        if path.exists() and not config.overwrite:
            raise ConfigError(f"{path} exists: pass --overwrite true to replace it, or choose another file")
        if not path.parent.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
    return paths


def run(config: BestOfNConfig) -> dict:
    from rlhf.models.loading import load_causal_lm, load_tokenizer

    _check_outputs(config)
    if not Path(config.prompts_file).exists():
        raise FileNotFoundError(f"prompts_file {config.prompts_file} does not exist")
    if config.reward_model_path:
        from rlhf.rewards.scorers import check_reward_model_path

        for path in config.reward_model_path.split(","):
            check_reward_model_path(path)
    start = time.time()
    tokenizer = load_tokenizer(config.model_name_or_path, padding_side="left")
    records = load_prompts(config.prompts_file, tokenizer=tokenizer, prompt_field=config.prompt_field,
                           apply_chat_template=config.apply_chat_template)
    examples = tokenize_prompts(records, tokenizer, max_prompt_length=config.max_prompt_length)
    policy = load_causal_lm(config.model_name_or_path, tokenizer).eval()
    device = next(policy.parameters()).device
    reward = load_scorer(config, tokenizer, device)
    sampling = SamplingParams(max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                              top_k=config.top_k, top_p=config.top_p)
    chosen = sample_best_of_n(policy, tokenizer, examples, config.n, reward, sampling, config.seed,
                              config.batch_size, progress="" if config.disable_tqdm else "best-of-n")
    write_jsonl(config.output_file, [{k: c[k] for k in ("prompt", "response", "score", "mean_score", "ended")}
                                     for c in chosen])
    summary = {"n": config.n, "prompts": len(chosen), "kl_to_policy": best_of_n_kl(config.n),
               "score_best": sum(c["score"] for c in chosen) / max(1, len(chosen)),
               "score_mean_of_n": sum(c["mean_score"] for c in chosen) / max(1, len(chosen)),
               "ended_frac": sum(c["ended"] for c in chosen) / max(1, len(chosen)),
               "output_file": config.output_file}
    if config.demonstrations_file:
        demos = [{"prompt": c["raw_prompt"] if isinstance(c["raw_prompt"], str) else c["prompt"],
                  "completion": c["response"]} for c in chosen if c["ended"]]
        write_jsonl(config.demonstrations_file, demos)
        summary.update({"demonstrations_file": config.demonstrations_file, "demonstrations": len(demos)})
    summary["wall_time_s"] = round(time.time() - start, 1)
    write_json_atomic(Path(config.output_file).with_suffix(".summary.json"), summary)
    print(f"best-of-{config.n} on {len(chosen)} prompts: score {summary['score_best']:.3f} "
          f"(mean of the {config.n} samples {summary['score_mean_of_n']:.3f}); KL to the policy "
          f"log n - (n-1)/n = {summary['kl_to_policy']:.3f} nats; wrote {config.output_file}"
          + (f" and {summary['demonstrations']} demonstrations to {config.demonstrations_file}"
             if config.demonstrations_file else ""))
    return summary
