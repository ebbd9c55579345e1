"""The demo's evidence on held-out prompts: the policies side by side, the demonstration habits
each policy still shows, and whether the reward model orders the SFT policy's own samples as
gold does. Gold alone hides *what* changed; the habit rates are the direct evidence."""

from __future__ import annotations

from pathlib import Path

import torch

from rlhf.embedded.habits import HABITS, habit_rates
from rlhf.embedded.task import parse_instruction
from rlhf.evaluation.compare import compare_policies, format_table
from rlhf.rewards.agreement import agreement_with_gold


def evaluate(config, policies: dict, prompts_file: Path, reference_path: Path, reward_path: Path,
             gold_function_spec: str, samples_file: Path | None = None) -> dict:
    """``{"table", "habits", "rm_agreement_on_sft_samples"}`` for ``policies`` on the prompts of
    ``prompts_file``, ``config.eval_samples_per_prompt`` samples each (``config``: a DemoConfig).
    With ``samples_file``, every sampled response is written there too (the dashboard's compare view)."""
    from rlhf.data import load_prompts, tokenize_prompts
    from rlhf.models.loading import load_causal_lm, load_tokenizer
    from rlhf.rewards.scorers import RewardModelScorer, load_function
    from rlhf.rollout.generation import SamplingParams

    tokenizer = load_tokenizer(reference_path, padding_side="left")
    prompts = tokenize_prompts(load_prompts(prompts_file, tokenizer=tokenizer), tokenizer, max_prompt_length=128)
    if config.eval_prompts:
        prompts = prompts[: config.eval_prompts]
    reference = load_causal_lm(reference_path, tokenizer).eval()
    reward = RewardModelScorer([str(reward_path)], tokenizer, torch.device("cpu"))
    samples: dict[str, list[dict]] = {}
    table = compare_policies(policies, prompts, tokenizer, reference, reward, load_function(gold_function_spec),
                             SamplingParams(max_new_tokens=config.max_new_tokens, temperature=1.0),
                             config.eval_samples_per_prompt, config.seed, best_of_n=config.best_of_n,
                             samples=samples)
    if samples_file is not None:
        write_samples(samples_file, samples)
    habits = {name: habit_rates([r["prompt"] for r in records], [r["response"] for r in records])
              for name, records in samples.items()}
    sft = samples["sft"]
    agreement = agreement_with_gold([r["prompt"] for r in sft], [r["score"] for r in sft], [r["gold"] for r in sft],
                                    groups=[parse_instruction(r["prompt"]).kind for r in sft])
    return {"table": table, "habits": habits,
            "rm_agreement_on_sft_samples": {k: {"rate": a.rate, "pairs": a.pairs} for k, a in agreement.items()}}


def write_samples(path: Path, samples: dict[str, list[dict]]) -> Path:
    """One JSON line per sampled response, ``{policy, prompt, response, score, gold}``: the same
    held-out prompts answered by every policy, so they can be read side by side."""
    from rlhf.atomic_io import write_jsonl

    return write_jsonl(path, ({"policy": name, "prompt": r["prompt"], "response": r["response"],
                               "score": float(r["score"]), "gold": float(r["gold"])}
                              for name, records in samples.items() for r in records))


def format_habit_table(habits: dict[str, dict[str, dict[str, float]]]) -> str:
    """Share of responses showing each habit (± standard error over prompts), one column per policy."""
    names = list(habits)
    lines = ["| habit (applies to) | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for habit in [*HABITS, "filler"]:
        applies = "/".join(HABITS.get(habit, ("all",))) if habit != "declines_harmless" else "harmless"
        cells = []
        for name in names:
            stat = habits[name].get(habit)
            cells.append("" if stat is None else f"{stat['rate']:.2f} ± {stat['stderr']:.2f}")
        lines.append(f"| {habit} ({applies}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_report(outcome: dict) -> str:
    """The three results as Markdown: the policy table, the habit table, the RM's agreement."""
    agreement = outcome["rm_agreement_on_sft_samples"]
    by_kind = ", ".join(f"{k} {v['rate']:.2f}" for k, v in agreement.items() if k != "all")
    parts = [format_table(outcome["table"]), "Demonstration habits shown on held-out prompts (share of responses):",
             format_habit_table(outcome["habits"]),
             f"Reward model orders pairs of SFT samples as gold does: {agreement['all']['rate']:.2f} of "
             f"{agreement['all']['pairs']} pairs ({by_kind})."]
    if outcome.get("rm_eval_accuracy") is not None:
        parts.append(f"Reward model held-out accuracy: {outcome['rm_eval_accuracy']:.3f} "
                     f"(± {outcome['rm_eval_accuracy_stderr']:.3f}).")
    return "\n\n".join(parts)
