#!/usr/bin/env python
"""Reward models on AI labels against people's labels (docs/ai_feedback.md).

From a seed-0 demo's files (``rlhf demo --output_dir runs/demo``): one pair per ranking of the
SFT-sample rankings (``data/rankings_policy.jsonl``, two of the K responses drawn at random),
written as candidates; the people's label for each pair is their ranking restricted to it.

    python scripts/ai_rm_experiment.py prepare --demo_dir runs/demo --num_pairs 600 --out /tmp/h9/rmexp
    # then label the candidates with each judge (rlhf ai label) and train rlhf rm on each file,
    # run rlhf ppo against each reward model, and compare the policies' held-out gold:
    python scripts/ai_rm_experiment.py ppo-gold --demo_dir runs/demo --out ppo_gold.json \
        ai=ppo_ai/model people=ppo_people/model gold=ppo_gold/model
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path


def prepare(demo_dir: Path, num_pairs: int, out: Path, seed: int = 0) -> None:
    rng = random.Random(seed)
    records = [json.loads(line) for line in (demo_dir / "data" / "rankings_policy.jsonl").read_text().splitlines()]
    records = rng.sample(records, min(num_pairs, len(records)))
    candidates, people = [], []
    for record in records:
        i, j = rng.sample(range(len(record["responses"])), 2)
        pair = [record["responses"][i], record["responses"][j]]
        candidates.append({"prompt": record["prompt"], "responses": pair})
        first = record["ranking"].index(i) < record["ranking"].index(j)  # the person ranked i above j
        people.append({"prompt": record["prompt"], "responses": pair, "ranking": [0, 1] if first else [1, 0],
                       "labeler": record["labeler"]})
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in (("candidates.jsonl", candidates), ("people.jsonl", people)):
        (out / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"wrote {len(candidates)} pairs to {out}")


def gold_pairs(demo_dir: Path, out: Path) -> None:
    """Every pair of the held-out test rankings on which gold has an opinion, gold's side chosen:
    the reward models' evaluation file."""
    from rlhf.embedded.gold import gold_reward

    rows = []
    for record in map(json.loads, (demo_dir / "data" / "rankings_test.jsonl").read_text().splitlines()):
        res = record["responses"]
        for i in range(len(res)):
            for j in range(i + 1, len(res)):
                gi, gj = gold_reward(record["prompt"], res[i], True), gold_reward(record["prompt"], res[j], True)
                if gi != gj:
                    chosen, rejected = (res[i], res[j]) if gi > gj else (res[j], res[i])
                    rows.append({"prompt": record["prompt"], "chosen": chosen, "rejected": rejected, "labeler": "gold"})
    out.mkdir(parents=True, exist_ok=True)
    (out / "gold_test_pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"wrote {len(rows)} gold-decided test pairs to {out / 'gold_test_pairs.jsonl'}")


def agreement(a: Path, b: Path) -> None:
    """How often two rankings files of the same pairs put the same response first."""
    key = lambda r: (r["prompt"], tuple(r["responses"]))  # noqa: E731
    first = {key(r): r["responses"][r["ranking"][0]] for r in map(json.loads, a.read_text().splitlines())}
    second = {key(r): r["responses"][r["ranking"][0]] for r in map(json.loads, b.read_text().splitlines())}
    shared = [k for k in first if k in second]
    same = sum(first[k] == second[k] for k in shared)
    p = same / len(shared)
    print(json.dumps({"a": str(a), "b": str(b), "pairs": len(shared), "agreement": p,
                      "stderr": (p * (1 - p) / len(shared)) ** 0.5}))


def ppo_gold(demo_dir: Path, policies: list[str], samples_per_prompt: int, out: Path, seed: int = 0) -> None:
    """Held-out gold of PPO policies (NAME=PATH) and of the demo's SFT model they started from:
    every policy answers the demo's test prompts ``samples_per_prompt`` times on the same seeded
    stream (temperature 1, 40 tokens, as in training); gold with its standard error over prompts,
    the gain over SFT paired by prompt, and the KL to SFT (``rlhf.evaluation.compare``)."""
    from rlhf.data import load_prompts, tokenize_prompts
    from rlhf.embedded.gold import gold_rewards
    from rlhf.evaluation.compare import compare_policies, stderr
    from rlhf.models.loading import load_causal_lm, load_tokenizer
    from rlhf.rollout.generation import SamplingParams

    sft = demo_dir / "sft" / "model"
    named = {"sft": str(sft), **dict(p.split("=", 1) for p in policies)}
    tokenizer = load_tokenizer(sft, padding_side="left")
    prompts = tokenize_prompts(load_prompts(demo_dir / "data" / "prompts_test.jsonl", tokenizer=tokenizer), tokenizer,
                               max_prompt_length=128)
    samples: dict[str, list[dict]] = {}
    rows = compare_policies(named, prompts, tokenizer, load_causal_lm(sft, tokenizer).eval(), None, gold_rewards,
                            SamplingParams(max_new_tokens=40, temperature=1.0), samples_per_prompt, seed,
                            samples=samples)
    names, differences = list(named), {}
    for a in names[1:]:  # each pair of PPO policies, paired by prompt
        for b in names[names.index(a) + 1:]:
            diff = (_per_prompt(samples[a], samples_per_prompt, len(prompts))
                    - _per_prompt(samples[b], samples_per_prompt, len(prompts)))
            differences[f"{a} - {b}"] = {"gold": diff.mean().item(), "stderr": stderr(diff)}
    out.write_text(json.dumps({"prompts": len(prompts), "samples_per_prompt": samples_per_prompt, "rows": rows,
                               "paired_differences": differences}, indent=1))
    for name, row in rows.items():
        print(f"{name:10s} gold {row['gold']:.3f} +- {row['gold_stderr']:.3f}  "
              f"gain {row['gold_gain_over_sft']:+.3f} +- {row['gold_gain_stderr']:.3f}  kl {row['kl']:.2f}  "
              f"length {row['length']:.1f}")
    for pair, d in differences.items():
        print(f"{pair}: gold {d['gold']:+.3f} +- {d['stderr']:.3f} (paired by prompt)")


def _per_prompt(records: list[dict], repeats: int, num_prompts: int):
    import torch

    return torch.tensor([r["gold"] for r in records], dtype=torch.float64).view(repeats, num_prompts).mean(0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["prepare", "gold-pairs", "agreement", "ppo-gold"])
    parser.add_argument("--demo_dir", default="runs/demo")
    parser.add_argument("--num_pairs", type=int, default=600)
    parser.add_argument("--out", default="/tmp/rmexp")
    parser.add_argument("--samples_per_prompt", type=int, default=8)
    parser.add_argument("files", nargs="*", help="agreement: two rankings files; ppo-gold: NAME=PATH policies")
    args = parser.parse_intermixed_args()
    if args.command == "prepare":
        prepare(Path(args.demo_dir), args.num_pairs, Path(args.out))
    elif args.command == "ppo-gold":
        ppo_gold(Path(args.demo_dir), args.files, args.samples_per_prompt, Path(args.out))
    elif args.command == "gold-pairs":
        gold_pairs(Path(args.demo_dir), Path(args.out))
    else:
        agreement(Path(args.files[0]), Path(args.files[1]))
