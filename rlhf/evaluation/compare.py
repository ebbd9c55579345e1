"""Several policies side by side on held-out prompts: the demo's table.

Every policy answers the same prompts ``samples_per_prompt`` times on the same random stream;
each row has the mean gold reward (with its standard error over prompts), the reward model's
score, the KL to the reference and the length. The gain over a baseline policy is *paired* by
prompt: the prompt-to-prompt spread cancels in the difference, so a small gain can be told
from noise. A best-of-n row (sample n from the baseline, keep the response the reward model
scores highest) is the sanity check every RLHF result should beat or explain: its KL to the
baseline is at most log n - (n - 1) / n (Stiennon et al. 2020; Gao et al. 2023). Its samples
come from ``rlhf.evaluation.best_of_n``, the sampler of ``rlhf best-of-n`` too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from rlhf.evaluation.best_of_n import best_of_n_kl, sample_best_of_n
from rlhf.evaluation.policy_eval import evaluate_policy
from rlhf.models.loading import load_causal_lm
from rlhf.rollout.generation import SamplingParams


def stderr(values: torch.Tensor) -> float:
    """Standard error of the mean of ``values`` (independent prompts)."""
    return (values.std() / values.numel() ** 0.5).item() if values.numel() > 1 else 0.0


def compare_policies(policies: dict[str, str | Path], prompts: list[dict], tokenizer, reference, reward,
                     gold_function: Callable, sampling: SamplingParams, samples_per_prompt: int, seed: int,
                     baseline: str = "sft", best_of_n: int = 0,
                     samples: dict[str, list[dict]] | None = None) -> dict[str, dict]:
    """One row per policy (and ``best-of-{n}`` of the baseline when ``best_of_n`` > 1): gold,
    ``gold_stderr``, ``gold_gain_over_<baseline>`` and its paired stderr, RM ``score``, ``kl`` to
    ``reference``, ``length`` and ``ended_frac``. ``samples`` receives each row's responses
    (``{"prompt", "response", "ended", "score", "gold"}``, prompt-major within each repeat)."""
    if baseline not in policies:
        raise ValueError(f"the baseline {baseline!r} is not among the policies {list(policies)}")
    repeats = max(1, samples_per_prompt)
    rows, per_prompt = {}, {}
    for name, path in policies.items():
        policy = load_causal_lm(path, tokenizer).eval()
        records: list[dict] = []
        rows[name] = evaluate_policy(policy, reference, tokenizer, prompts * repeats, sampling, reward=reward,
                                     gold_function=gold_function, batch_size=64, seed=seed, samples=records)
        per_prompt[name] = _per_prompt_gold(records, repeats, len(prompts))
        if samples is not None:
            samples[name] = records
        if name == baseline and best_of_n > 1:
            best = best_of_n_samples(policy, tokenizer, prompts * repeats, best_of_n, reward, gold_function,
                                     sampling, seed)
            key = f"best-of-{best_of_n}"
            rows[key] = _row(best)
            rows[key]["kl"] = best_of_n_kl(best_of_n)
            per_prompt[key] = _per_prompt_gold(best, repeats, len(prompts))
            if samples is not None:
                samples[key] = best
    for name, row in rows.items():
        row["gold_stderr"] = stderr(per_prompt[name])
        gain = per_prompt[name] - per_prompt[baseline]  # paired over prompts
        row[f"gold_gain_over_{baseline}"], row["gold_gain_stderr"] = gain.mean().item(), stderr(gain)
    return rows


def _per_prompt_gold(records: list[dict], repeats: int, num_prompts: int) -> torch.Tensor:
    golds = torch.tensor([r["gold"] for r in records], dtype=torch.float64)
    return golds.view(repeats, num_prompts).mean(0)  # (P,)


def best_of_n_samples(policy, tokenizer, prompts: list[dict], n: int, reward, gold_function: Callable,
                      sampling: SamplingParams, seed: int, batch_size: int = 64) -> list[dict]:
    """For each prompt, the best of ``n`` samples by ``reward`` (``sample_best_of_n``, the one
    best-of-n sampler, on the stream ``seed + 1``) with its ``"gold"`` added; the caller's RNG
    state is restored."""
    chosen = sample_best_of_n(policy, tokenizer, prompts, n, reward, sampling, seed + 1, batch_size)
    golds = gold_function([c["prompt"] for c in chosen], [c["response"] for c in chosen], [c["ended"] for c in chosen])
    for record, gold in zip(chosen, golds):
        record["gold"] = float(gold)
    return chosen


def _row(records: list[dict]) -> dict[str, float]:
    count = len(records)
    return {"gold": sum(r["gold"] for r in records) / count, "score": sum(r["score"] for r in records) / count,
            "length": sum(r["length"] for r in records) / count,
            "ended_frac": sum(r["ended"] for r in records) / count}


def format_table(rows: dict[str, dict], baseline: str = "sft") -> str:
    """The rows as a Markdown table (train times where a row has ``train_time_s``)."""
    header = (f"| policy | gold reward | gold - {baseline.upper()} (paired) | RM score | KL to {baseline.upper()} | "
              "length (tokens) | ended | train time (s) |")
    lines = [header, "|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        time_s = "" if r.get("train_time_s") is None else f"{r['train_time_s']:.0f}"
        gain = "" if name == baseline else f"{r[f'gold_gain_over_{baseline}']:+.3f} ± {r['gold_gain_stderr']:.3f}"
        lines.append(f"| {name} | {r['gold']:.3f} ± {r['gold_stderr']:.3f} | {gain} | {r['score']:.3f} | "
                     f"{r['kl']:.2f} | {r['length']:.1f} | {r['ended_frac']:.2f} | {time_s} |")
    return "\n".join(lines)
