"""Where a policy gains or loses gold reward on the embedded task, and whether a reward model
agrees with gold on the policy's own samples.

    python scripts/policy_breakdown.py POLICY PROMPTS.jsonl [--reward_model RM] [--samples 4]

Samples ``--samples`` responses per prompt at temperature 1 and prints, per kind of instruction,
the mean of each gold component. With ``--reward_model``, it also scores the samples and counts,
over pairs of samples of the same prompt whose gold differs by at least 0.05, how often the
reward model orders them as gold does (0.5 is chance): the signal PPO gets from that model.
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

import torch

from rlhf.embedded.gold import gold_components
from rlhf.embedded.task import parse_instruction
from rlhf.models.loading import load_causal_lm, load_tokenizer
from rlhf.rewards.agreement import agreement_with_gold
from rlhf.rewards.scorers import load_reward_model, score_responses
from rlhf.rollout.generation import SamplingParams, sample_responses


def sample(policy_path: str, prompts: list[str], samples: int, max_new_tokens: int, seed: int) -> list[tuple]:
    """(prompt, response, ended) for ``samples`` responses to each prompt at temperature 1."""
    tokenizer = load_tokenizer(policy_path, padding_side="left")
    policy = load_causal_lm(policy_path, tokenizer).eval()
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=1.0)
    torch.manual_seed(seed)
    rows = []
    for _ in range(samples):
        texts, ended = sample_responses(policy, tokenizer, prompts, params)
        rows += zip(prompts, texts, ended)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("policy")
    parser.add_argument("prompts_file")
    parser.add_argument("--reward_model", default="")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--max_new_tokens", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(2)
    prompts = [json.loads(line)["prompt"] for line in Path(args.prompts_file).read_text(encoding="utf-8").splitlines()]
    rows = sample(args.policy, prompts, args.samples, args.max_new_tokens, args.seed)
    graded = [(parse_instruction(p).kind, gold_components(p, r, e)) for p, r, e in rows]

    by_kind = collections.defaultdict(list)
    for kind, parts in graded:
        by_kind[kind].append(parts)
    for kind, parts in sorted(by_kind.items()):
        means = " ".join(f"{key}={sum(p[key] for p in parts) / len(parts):.2f}" for key in parts[0])
        print(f"{kind:10s} n={len(parts):4d} {means}")
    print(f"{'all':10s} n={len(graded):4d} gold={sum(p['gold'] for _, p in graded) / len(graded):.3f}")

    if args.reward_model:
        model, tokenizer, _ = load_reward_model(args.reward_model)
        scores = score_responses(model, tokenizer, [r[0] for r in rows], [r[1] for r in rows],
                                 ended=[r[2] for r in rows]).tolist()
        agreement = agreement_with_gold([r[0] for r in rows], scores, [parts["gold"] for _, parts in graded],
                                        groups=[kind for kind, _ in graded], min_gold_gap=0.05)
        for kind, result in agreement.items():
            if kind != "all":
                print(f"reward model orders pairs as gold does [{kind}]: {result.agree}/{result.pairs} = "
                      f"{result.rate:.2f}")
        overall = agreement["all"]
        print(f"reward model orders pairs as gold does [all]: {overall.agree / max(1, overall.pairs):.2f} "
              f"of {overall.pairs} pairs")


if __name__ == "__main__":
    main()
