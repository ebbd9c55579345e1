"""``rlhf overopt`` on your own task: your SFT policy, your prompts and your gold function.

The embedded task has simulated people and data of its own; your task has neither, so the proxies
learn from the gold labeler alone, as AlpacaFarm's noisy gold: your policy's samples, ordered by
your gold function, with ``flip_rate`` of the pairs flipped. Nothing here needs the embedded task
(``tests/test_overopt_user.py`` runs it with the embedded world's gold and labelers disabled).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Sequence

import torch

from rlhf.atomic_io import write_jsonl
from rlhf.config.base import ConfigError


def gold_pairs(golds: Sequence[float], flip_rate: float, rng: random.Random) -> list[tuple[int, int]]:
    """``(chosen, rejected)`` indices of every two responses the gold scores tell apart, the better
    first, each flipped with probability ``flip_rate``. A tie carries no preference: no pair (a
    0/1 correctness check ties often, and a tied pair would be a coin flip taught as a label)."""
    order = sorted(range(len(golds)), key=lambda i: -golds[i])  # best first; stable for equal scores
    pairs = []
    for a, better in enumerate(order):
        for worse in order[a + 1:]:
            if golds[better] == golds[worse]:
                continue
            pairs.append((worse, better) if rng.random() < flip_rate else (better, worse))
    return pairs


def user_base(config) -> dict[str, Path]:
    """Your policy and prompt files in place of the embedded task's data and SFT stage; each file
    is checked here so a missing one is named before anything runs."""
    from rlhf.rewards.scorers import load_function

    for name in ("prompts_file", "eval_prompts_file"):
        if not Path(getattr(config, name)).is_file():
            raise ConfigError(f"{name} {getattr(config, name)} does not exist")
    load_function(config.gold_reward_function, "gold_reward_function")  # missing, not callable: one line, now
    return {"data": Path(config.output_dir) / "data", "sft": Path(config.model_name_or_path),
            "prompts_train": Path(config.prompts_file), "prompts_eval": Path(config.eval_prompts_file)}


@torch.no_grad()
def user_gold_flip_comparisons(config, base: dict[str, Path], out_path: Path) -> Path:
    """``samples_per_prompt`` samples of your policy on each of the first max(data_amounts) training
    prompts, distinct non-empty ones kept, ordered by your gold function (``gold_pairs``); one
    comparisons record per pair, ``ranking_index`` the prompt's index (``proxy_data`` takes the
    pairs of the first ``amount`` prompts)."""
    from rlhf.data import load_prompts
    from rlhf.models.loading import load_causal_lm, load_tokenizer
    from rlhf.rewards.scorers import load_function
    from rlhf.rollout.generation import SamplingParams, sample_responses

    tokenizer = load_tokenizer(base["sft"], padding_side="left")
    wanted = max(config.amounts())
    prompts = [record.prompt for record in load_prompts(base["prompts_train"], tokenizer=tokenizer)]
    if len(prompts) < wanted:
        raise ConfigError(f"prompts_file {base['prompts_train']} holds {len(prompts)} prompts: data_amounts needs "
                          f"{wanted} (the largest proxy learns the labels of that many prompts); add prompts or "
                          "lower data_amounts")
    prompts = prompts[:wanted]
    policy = load_causal_lm(base["sft"], tokenizer).eval()
    gold = load_function(config.gold_reward_function, "gold_reward_function")
    k = config.samples_per_prompt
    torch.manual_seed(config.seed)
    texts, ended = sample_responses(policy, tokenizer, [p for p in prompts for _ in range(k)],
                                    SamplingParams(max_new_tokens=config.max_new_tokens, temperature=1.0),
                                    batch_size=16 * k)
    rng = random.Random(f"gold-flip-{config.seed}")
    out = []
    for index, prompt in enumerate(prompts):
        drawn = {t: e for t, e in zip(texts[index * k:(index + 1) * k], ended[index * k:(index + 1) * k]) if t.strip()}
        responses = list(drawn)  # distinct, in sampling order
        if len(responses) < 2:
            continue
        golds = [float(g) for g in gold([prompt] * len(responses), responses, list(drawn.values()))]
        for chosen, rejected in gold_pairs(golds, config.flip_rate, rng):
            out.append({"prompt": prompt, "chosen": responses[chosen], "rejected": responses[rejected],
                        "labeler": "gold_flip", "ranking_index": index})
    if not out:
        raise ConfigError(f"your gold function {config.gold_reward_function} scored every pair of the policy's samples "
                          "alike: no labels to learn from; raise samples_per_prompt or max_new_tokens")
    return write_jsonl(out_path, out)
