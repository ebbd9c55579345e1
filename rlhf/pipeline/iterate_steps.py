"""The steps of one ``rlhf iterate`` round that are not a training stage: sample K responses per
fresh prompt from the current policy, have them ranked by the configured feedback source,
choose best-of-n demonstrations, and evaluate a policy (gold, reward, KL, and whether the
reward model orders the policy's own samples as gold does). Each writes one file atomically:
the file's presence is the step's "done" marker, so a killed round resumes after it."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import torch

from rlhf.atomic_io import write_json_atomic, write_jsonl
from rlhf.config.base import ConfigError
from rlhf.config.iterate import IterateConfig


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def round_prompts(pool: list[str], round_: int, count: int, path: str) -> list[str]:
    """Round r's fresh prompts: the pool's r-th slice of ``count``; past the pool's end, an error."""
    start = (round_ - 1) * count
    if start + count > len(pool):
        raise ConfigError(f"prompts_file {path} holds {len(pool)} prompts: too few for round {round_} of "
                          f"{count} fresh prompts each (prompts_per_round); add prompts or lower it")
    return pool[start:start + count]


@torch.no_grad()
def sample_round(policy_path: str, prompts: list[str], k: int, max_new_tokens: int, seed: int, out: Path) -> Path:
    """``{"prompt", "responses", "ended"}`` per prompt: k samples of the policy at temperature 1,
    duplicates removed (a ranking needs distinct responses); prompts left with one are dropped."""
    from rlhf.models.loading import load_causal_lm, load_tokenizer
    from rlhf.rollout.generation import SamplingParams, sample_responses

    tokenizer = load_tokenizer(policy_path, padding_side="left")
    policy = load_causal_lm(policy_path, tokenizer).eval()
    torch.manual_seed(seed)
    texts, ended = sample_responses(policy, tokenizer, [p for p in prompts for _ in range(k)],
                                    SamplingParams(max_new_tokens=max_new_tokens, temperature=1.0), batch_size=64 * k)
    records = []
    for i, prompt in enumerate(prompts):
        seen: dict[str, bool] = {}
        for text, end in zip(texts[i * k:(i + 1) * k], ended[i * k:(i + 1) * k]):
            if text.strip() and text not in seen:
                seen[text] = end
        if len(seen) >= 2:
            records.append({"prompt": prompt, "responses": list(seen), "ended": list(seen.values())})
    return write_jsonl(out, records)


def rank_samples(config: IterateConfig, records: list[dict], round_dir: Path, seed: int) -> list[dict]:
    """Rankings-file records ``{"prompt", "responses", "ranking", "labeler"}`` from the feedback source."""
    if config.feedback in ("people", "gold"):
        from rlhf.embedded.labelers import gold_labeler, labeler_pool
        from rlhf.feedback.labeler import ranking_record

        pool = [gold_labeler()] if config.feedback == "gold" else labeler_pool(seed=config.seed)
        rng = random.Random(f"iterate-labels-{seed}")
        return [ranking_record(pool[rng.randrange(len(pool))], r["prompt"], r["responses"], rng, r["ended"])
                for r in records]
    if config.feedback == "ai":
        return rank_with_judge(config, records, round_dir / "judge_cache.jsonl", seed)
    return rank_in_labeling_project(config, records, round_dir, seed)


def rank_with_judge(config: IterateConfig, records: list[dict], cache_file: Path, seed: int) -> list[dict]:
    """The AI judge's rankings (pairs whose verdict flips with the order give no label, unless
    ``keep_position_flips``)."""
    from rlhf.feedback.constitution import load_constitution
    from rlhf.feedback.judge_http import JudgeCache
    from rlhf.feedback.judges import JudgeStats, LocalJudge, judge_rankings

    judge_path = Path(config.judge).expanduser()
    if not (judge_path / "config.json").is_file():
        raise ConfigError(f"--judge {judge_path} holds no model: run `rlhf ai fetch-smollm2` first, or pass a local "
                          "model folder")
    stats = JudgeStats()
    ranked = judge_rankings(JudgeCache(LocalJudge(str(judge_path)), cache_file), load_constitution(), records, seed,
                            stats, config.keep_position_flips)
    write_json_atomic(cache_file.with_name("judge_summary.json"), stats.summary())
    if not ranked:  # a reward model cannot learn from no labels: say why here, not in the trainer
        raise ConfigError(f"the AI judge {judge_path.name} gave no labels: its verdict changed with the order of the "
                          f"two responses on {stats.flipped} of {stats.pairs} pairs (position bias); use a better "
                          "judge or --keep_position_flips true")
    return ranked


def labeling_url(round_dir: Path) -> str:
    return f"sqlite:///{(round_dir / 'labels.db').resolve()}"


def rank_in_labeling_project(config: IterateConfig, records: list[dict], round_dir: Path, seed: int,
                             sleep=time.sleep, clock=time.time) -> list[dict]:
    """A labeling project of the round's samples (created once, in round_dir/labels.db), waited on
    until every item has ``labeling_overlap`` labels; then its export, as `rlhf label export` writes it."""
    from rlhf.feedback.labeling import Item, LabelStore
    from rlhf.feedback.labeling.report import export_records, quality_report

    url = labeling_url(round_dir)
    if (round_dir / "labels.db").is_file():
        store = LabelStore(url)
    else:
        items = [Item(r["prompt"], r["responses"], r["ended"], n) for n, r in enumerate(records, 1)]
        store = LabelStore.create(url + ".part", items, overlap=config.labeling_overlap, gold_rate=0.0)
        store.close()
        Path(str(round_dir / "labels.db") + ".part").rename(round_dir / "labels.db")  # created whole, or not at all
        store = LabelStore(url)
        print(f"labeling project with {len(items)} items: {url}\n  serve it: rlhf serve --db {url}\n  add people: "
              f"rlhf label add-labeler NAME --db {url}\nwaiting until every item has {config.labeling_overlap} "
              f"label(s) (checked every {config.labeling_poll_seconds:g} s)", flush=True)
    deadline = clock() + config.labeling_timeout_hours * 3600
    try:
        while True:
            dump = store.dump()
            missing = sum(1 for item in dump["items"].values()
                          if not item["is_gold"] and item["label_count"] < config.labeling_overlap)
            if not missing:
                break
            if clock() > deadline:
                raise ConfigError(f"labeling project {url}: {missing} items still lack labels after "
                                  f"{config.labeling_timeout_hours:g} h; run again with --resume to keep waiting")
            sleep(config.labeling_poll_seconds)
        records_out, _ = export_records(dump, quality_report(dump))
    finally:
        store.close()
    return records_out


@torch.no_grad()
def best_of_n_demonstrations(policy_path: str, reward_path: str, records: list, n: int, max_new_tokens: int,
                             seed: int, out: Path) -> Path:
    """``{"prompt", "completion"}``: for each prompt record the best of n policy samples by the
    reward model (rejection sampling, Llama 2), for fine-tuning the policy on."""
    from rlhf.data import tokenize_prompts
    from rlhf.evaluation.best_of_n import sample_best_of_n
    from rlhf.models.loading import load_causal_lm, load_tokenizer
    from rlhf.rewards.scorers import RewardModelScorer
    from rlhf.rollout.generation import SamplingParams

    tokenizer = load_tokenizer(policy_path, padding_side="left")
    policy = load_causal_lm(policy_path, tokenizer).eval()
    reward = RewardModelScorer([reward_path], tokenizer, torch.device("cpu"))
    examples = tokenize_prompts(records, tokenizer, max_prompt_length=128)
    chosen = sample_best_of_n(policy, tokenizer, examples, n, reward,
                              SamplingParams(max_new_tokens=max_new_tokens, temperature=1.0), seed)
    return write_jsonl(out, [{"prompt": c["raw_prompt"], "completion": c["response"]} for c in chosen
                             if c["response"].strip()])


@torch.no_grad()
def evaluate_round(config: IterateConfig, policies: dict[str, str], start_path: str, reward_path: str,
                   eval_records: list, seed: int) -> dict[str, dict]:
    """Per policy, on the held-out prompts (``eval_samples_per_prompt`` samples each, the same
    random stream for every policy): gold (± stderr over prompts), reward-model score, KL to the
    starting policy, length, and how often ``reward_path`` orders pairs of that policy's own
    samples as gold does (the reward model's accuracy where the policy needs it)."""
    from rlhf.data import tokenize_prompts
    from rlhf.evaluation.compare import stderr
    from rlhf.evaluation.policy_eval import evaluate_policy
    from rlhf.models.loading import load_causal_lm, load_tokenizer
    from rlhf.rewards.agreement import agreement_with_gold
    from rlhf.rewards.scorers import RewardModelScorer, load_function
    from rlhf.rollout.generation import SamplingParams

    tokenizer = load_tokenizer(start_path, padding_side="left")
    prompts = tokenize_prompts(eval_records, tokenizer, max_prompt_length=128)
    reference = load_causal_lm(start_path, tokenizer).eval()
    reward = RewardModelScorer([reward_path], tokenizer, torch.device("cpu"))
    gold = load_function(config.gold_reward_function) if config.gold_reward_function else None
    repeats, rows = config.eval_samples_per_prompt, {}
    for name, path in policies.items():
        samples: list[dict] = []
        row = evaluate_policy(load_causal_lm(path, tokenizer).eval(), reference, tokenizer, list(prompts) * repeats,
                              SamplingParams(max_new_tokens=config.max_new_tokens, temperature=1.0), reward=reward,
                              gold_function=gold, seed=seed, samples=samples)
        if gold is not None:
            per_prompt = torch.tensor([s["gold"] for s in samples], dtype=torch.float64).view(repeats, -1).mean(0)
            row["gold_stderr"] = stderr(per_prompt)
            agreement = agreement_with_gold([s["prompt"] for s in samples], [s["score"] for s in samples],
                                            [s["gold"] for s in samples])["all"]
            row.update({"rm_gold_agreement": agreement.rate if agreement.pairs else None,  # None: gold ties only
                        "rm_gold_pairs": agreement.pairs})
        rows[name] = row
    return rows
