"""How good is a policy on held-out prompts: gold reward, reward-model score, KL to the
reference and response length, from one sampled response per prompt.

The KL is the sequence-level estimate sum_t [log pi(y_t) - log pi_ref(y_t)] on the policy's
own samples (an unbiased estimate of KL(pi || pi_ref) at the sampling temperature).
"""

from __future__ import annotations

from typing import Callable

import torch

from rlhf.data import collate_prompts
from rlhf.progress import phase_bar
from rlhf.rl_math import select
from rlhf.rollout.generation import SamplingParams, decode_responses, generate
from rlhf.rollout.logprobs import response_logprobs


@torch.no_grad()
def evaluate_policy(policy, reference, tokenizer, prompts: list[dict], sampling: SamplingParams, reward=None,
                    gold_function: Callable | None = None, batch_size: int = 64, accelerator=None,
                    seed: int = 1234, samples: list[dict] | None = None, progress: str = "") -> dict[str, float]:
    """Mean gold score, reward score, KL to ``reference`` and length over ``prompts`` (each
    process takes its share when ``accelerator`` spans several). Sampling is seeded so that two
    policies are compared on the same random stream; the caller's RNG state is restored.
    ``samples``, if given, receives one record per response of this process, in order:
    ``{"prompt", "response", "ended"}`` and, where computed, ``"score"`` and ``"gold"``.
    ``progress``: a description to show a progress bar under (main process); empty: none."""
    device = next(policy.parameters()).device
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    rng_state = torch.random.get_rng_state()
    torch.manual_seed(seed + rank)
    totals: dict[str, float] = {}
    count = 0
    mine = prompts[rank::world]
    for start in phase_bar(range(0, len(mine), batch_size), progress, f"{len(prompts)} prompts", rank == 0):
        batch = collate_prompts(mine[start:start + batch_size], tokenizer.pad_token_id)
        rollout = generate(policy, batch["input_ids"].to(device), batch["attention_mask"].to(device), sampling,
                           tokenizer.eos_token_id, tokenizer.pad_token_id, record_logprobs=True)
        mask = rollout.response_mask.float()
        logprobs = rollout.logprobs  # recorded while sampling, as PPO's pi_old; else one forward pass
        if logprobs is None:
            logprobs = response_logprobs(policy, rollout.query_responses, rollout.attention_mask,
                                         rollout.prompt_length, sampling.temperature)
        prompt_texts = tokenizer.batch_decode(batch["input_ids"], skip_special_tokens=True)
        response_texts = decode_responses(tokenizer, rollout)
        sums = {"length": mask.sum().item(), "ended_frac": rollout.ended.float().sum().item()}
        if reference is not None:  # None: a run without a reference (GRPO with beta 0) reports no KL
            ref_logprobs = response_logprobs(reference, rollout.query_responses, rollout.attention_mask,
                                             rollout.prompt_length, sampling.temperature)
            sums["kl"] = select(logprobs - ref_logprobs, mask).sum().item()
        records = [{"prompt": p, "response": r, "ended": e}
                   for p, r, e in zip(prompt_texts, response_texts, rollout.ended.tolist())]
        if reward is not None:
            examples = mine[start:start + batch_size]  # a reward function gets the prompts as written, and fields
            scores = reward(rollout, prompt_texts, response_texts,
                            [e.get("raw_prompt", t) for e, t in zip(examples, prompt_texts)],
                            [e.get("fields", {}) for e in examples]).float()
            sums["score"] = scores.sum().item()
            for record, score in zip(records, scores.tolist()):
                record["score"] = score
        if gold_function is not None:
            golds = [float(g) for g in gold_function(prompt_texts, response_texts, rollout.ended.tolist())]
            sums["gold"] = sum(golds)
            for record, gold in zip(records, golds):
                record["gold"] = gold
        if samples is not None:
            samples.extend(records)
        for key, value in sums.items():
            totals[key] = totals.get(key, 0.0) + value
        count += len(response_texts)
    torch.random.set_rng_state(rng_state)
    keys = sorted(totals)
    vector = torch.tensor([totals[k] for k in keys] + [float(count)], dtype=torch.float64)
    if accelerator is not None and world > 1:
        vector = accelerator.reduce(vector.to(accelerator.device), "sum").cpu()
    return {k: (vector[i] / vector[-1].clamp(min=1)).item() for i, k in enumerate(keys)}
