"""The measuring stages of ``rlhf overopt`` (rlhf.pipeline.overopt): best-of-n from one batch of
samples per prompt, the initial policy's evaluation, the PPO runs along training, and the report."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from rlhf.atomic_io import write_json_atomic, write_text_atomic
from rlhf.config.base import config_from_dict
from rlhf.evaluation.overopt import (bon_curve, fit_curve, format_bon_table, format_fit_table, format_proxy_table,
                                     format_rl_table,
                                     pairwise_agreement, plot_overopt, powers_of_two, read_metrics, run_summary,
                                     rl_curve)
from rlhf.pipeline.demo import stage_options
from rlhf.pipeline.stages import run_stage

EVAL_SEED = 1234  # evaluate_policy's default seed: PPO's held-out evaluations sample on this stream too


def eval_prompts_file(config, base: dict, root: Path) -> Path:
    """The held-out prompts of the RL curves: the task's test prompts, or their first ``eval_prompts``."""
    path = base["prompts_eval"]
    if not config.eval_prompts:
        return path
    lines = path.read_text(encoding="utf-8").splitlines()[: config.eval_prompts]
    return write_text_atomic(root / "data" / "eval_prompts.jsonl", "\n".join(lines) + "\n")


def _load_policy_and_prompts(base: dict, prompts_file: Path, count: int = 0):
    from rlhf.data import load_prompts, tokenize_prompts
    from rlhf.models.loading import load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer(base["sft"], padding_side="left")
    policy = load_causal_lm(base["sft"], tokenizer).eval()
    prompts = tokenize_prompts(load_prompts(prompts_file, tokenizer=tokenizer), tokenizer, max_prompt_length=128)
    return tokenizer, policy, (prompts[:count] if count else prompts)


def proxy_names(proxies: dict) -> list[str]:
    """The proxies proper, without the extra ensemble members (``..._seedK``)."""
    return [name for name in proxies if "_seed" not in name]


@torch.no_grad()
def sample_and_score_bon(config, base: dict, proxies: dict, members: list[str]) -> dict:
    """``bon_max_n`` SFT samples for each of ``bon_prompts`` held-out prompts, scored by every
    proxy, by the ensemble's aggregations and by gold: {"scores": {name: (P, N)}, "gold": (P, N)}."""
    from rlhf.data import collate_prompts
    from rlhf.progress import phase_bar
    from rlhf.rewards.ensemble import aggregate_rewards
    from rlhf.rewards.scorers import RewardModelScorer, load_function
    from rlhf.rollout.generation import SamplingParams, decode_responses, generate

    tokenizer, policy, prompts = _load_policy_and_prompts(base, base["prompts_eval"], config.bon_prompts)
    device = next(policy.parameters()).device
    scorers = {name: RewardModelScorer([proxies[name]["path"]], tokenizer, device) for name in proxy_names(proxies)}
    ensemble = RewardModelScorer(members, tokenizer, device) if members else None
    gold_function = load_function(config.gold_spec(), "gold_reward_function")
    sampling = SamplingParams(max_new_tokens=config.max_new_tokens, temperature=1.0)
    N, chunk = config.bon_max_n, min(config.bon_max_n, 128)
    scores: dict[str, list[list[float]]] = {name: [] for name in scorers}
    scores.update({f"ensemble {agg}": [] for agg in config.aggregations()})
    gold, lengths = [], []
    torch.manual_seed(config.seed + 7)
    for prompt in phase_bar(prompts, "" if config.disable_tqdm else "best-of-n samples", f"{len(prompts)} x {N}"):
        rows = {name: [] for name in scores}
        row_gold, row_length = [], []
        for _ in range(0, N, chunk):
            batch = collate_prompts([prompt] * chunk, tokenizer.pad_token_id)
            rollout = generate(policy, batch["input_ids"].to(device), batch["attention_mask"].to(device), sampling,
                               tokenizer.eos_token_id, tokenizer.pad_token_id)
            texts = tokenizer.batch_decode(batch["input_ids"], skip_special_tokens=True)
            responses = decode_responses(tokenizer, rollout)
            for name, scorer in scorers.items():
                rows[name] += scorer(rollout, texts, responses).tolist()
            if ensemble is not None:
                member_scores = ensemble.member_scores(rollout, texts, responses)  # (M, chunk)
                for agg in config.aggregations():
                    rows[f"ensemble {agg}"] += aggregate_rewards(member_scores, agg, config.uncertainty_coef).tolist()
            row_gold += [float(g) for g in gold_function(texts, responses, rollout.ended.tolist())]
            row_length += rollout.response_mask.sum(1).tolist()
        for name in scores:
            scores[name].append(rows[name])
        gold.append(row_gold)
        lengths.append(row_length)
    return {"prompts": [tokenizer.decode(p["input_ids"]) for p in prompts], "scores": scores, "gold": gold,
            "length": lengths}


def best_of_n_stage(config, base: dict, proxies: dict, members: list[str], root: Path) -> dict:
    """The best-of-n curves (one per proxy and ensemble aggregation) and each proxy's pairwise
    agreement with gold on the SFT policy's own samples; the samples' scores are kept in bon/."""
    path = root / "bon" / "scores.json"
    if config.resume and path.is_file():
        data = json.loads(path.read_text(encoding="utf-8"))
    else:
        data = sample_and_score_bon(config, base, proxies, members)
        write_json_atomic(path, data, indent=None)
    gold = torch.tensor(data["gold"], dtype=torch.float64)  # (P, N)
    ns = powers_of_two(gold.shape[1])
    curves, agreement = {}, {}
    for name, values in data["scores"].items():
        proxy = torch.tensor(values, dtype=torch.float64)  # (P, N)
        curves[name] = bon_curve(proxy, gold, ns)
        agreement[name] = pairwise_agreement(proxy, gold)
    return {"curves": curves, "agreement_with_gold": agreement, "prompts": gold.shape[0], "samples_per_prompt":
            gold.shape[1], "mean_length": float(torch.tensor(data["length"], dtype=torch.float64).mean())}


def rl_rewards(config, proxies: dict, members: list[str]) -> dict[str, dict]:
    """Each PPO run's reward and beta: {run name: {"paths", "aggregation", "kl_coef", "label"}}."""
    ppo_proxy = config.proxy_for_ppo()
    single = [proxies[ppo_proxy]["path"]]
    runs = {f"beta={beta:g}": {"paths": single, "aggregation": "mean", "kl_coef": beta,
                               "label": f"{ppo_proxy} (one reward model)"} for beta in config.kl_coefs()}
    for agg in config.aggregations():
        runs[f"{agg} ensemble, beta=0"] = {
            "paths": members, "aggregation": agg, "kl_coef": 0.0,
            "label": f"{len(members)} x {ppo_proxy}, " + ("worst case" if agg == "min"
                                                                  else f"mean - {config.uncertainty_coef:g} std")}
    return runs


@torch.no_grad()
def initial_points(config, base: dict, proxies: dict, members: list[str], root: Path) -> dict[str, dict]:
    """The SFT policy evaluated as PPO evaluates its checkpoints (same prompts, seed and batch), once
    per PPO reward: the step-0 point {kl, score, gold} of each RL curve."""
    from rlhf.evaluation.policy_eval import evaluate_policy
    from rlhf.rewards.scorers import RewardModelScorer, load_function
    from rlhf.rollout.generation import SamplingParams

    path = root / "initial.json"
    if config.resume and path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    tokenizer, policy, prompts = _load_policy_and_prompts(base, eval_prompts_file(config, base, root))
    gold = load_function(config.gold_spec(), "gold_reward_function")
    sampling = SamplingParams(max_new_tokens=config.max_new_tokens, temperature=1.0)
    out = {}
    for name, spec in rl_rewards(config, proxies, members).items():
        reward = RewardModelScorer(spec["paths"], tokenizer, torch.device("cpu"), aggregation=spec["aggregation"],
                                   uncertainty_coef=config.uncertainty_coef)
        out[name] = evaluate_policy(policy, policy, tokenizer, prompts, sampling, reward=reward, gold_function=gold,
                                    batch_size=config.ppo_rollout_batch_size, seed=EVAL_SEED)
    write_json_atomic(path, out)
    return out


def ppo_runs(config, base: dict, proxies: dict, members: list[str], root: Path) -> dict[str, dict]:
    """Each PPO run, evaluated on the held-out prompts every ``eval_every`` steps."""
    from rlhf.config.ppo import PPOConfig
    from rlhf.pipeline.overopt import demo_config
    from rlhf.trainers import ppo

    data = {"prompts_train": base["prompts_train"], "prompts_test": eval_prompts_file(config, base, root)}
    template = stage_options(demo_config(config), root, {**data, "rankings_policy": "", "sft_train": "",
                                                          "sft_test": "", "sft_ideal_train": ""})["ppo"]
    summaries = {}
    for name, spec in rl_rewards(config, proxies, members).items():
        folder = root / "ppo" / name.replace(" ", "_").replace(",", "").replace("=", "")
        options = {**template, "model_name_or_path": str(base["sft"]), "reward_model_path": ",".join(spec["paths"]),
                   "reward_aggregation": spec["aggregation"], "reward_uncertainty_coef": config.uncertainty_coef,
                   "kl_coef": spec["kl_coef"], "gold_reward_function": config.gold_spec(), "output_dir": str(folder),
                   "max_steps": config.ppo_steps,
                   "rollout_batch_size": config.ppo_rollout_batch_size,
                   "per_device_train_batch_size": min(16, config.ppo_rollout_batch_size),
                   "learning_rate": config.ppo_learning_rate, "reward_normalization": "running",
                   "eval_steps": config.eval_every, "save_steps": config.eval_every, "report_to": "none"}
        run_stage("rlhf overopt", f"PPO {name}", ppo.run, config_from_dict(PPOConfig, options), config.resume)
        summaries[name] = {**spec, "output_dir": str(folder)}
    return summaries


def report(config, root: Path, proxies: dict, bon: dict, initial: dict, rl: dict, times: dict) -> dict:
    """Curves, fits, the plot, the tables; written to overopt_results.json and overopt_report.md."""
    rl_curves = {name: rl_curve(read_metrics(spec["output_dir"]), initial[name]) for name, spec in rl.items()}
    fits = {f"best-of-n: {name}": fit_curve(points, "bon") for name, points in bon["curves"].items()}
    fits.update({f"PPO: {name}": fit_curve(points, "rl") for name, points in rl_curves.items()})
    plot = plot_overopt(bon["curves"], rl_curves, fits, root / "overopt.png")
    descriptions = {name: spec["label"] for name, spec in rl.items()}
    total = round(sum(t for t in times.values() if t), 1)
    sections = [
        f"# rlhf overopt ({root})", f"Gold reward: {config.gold_spec()}" + ("" if config.gold_reward_function
                                                                          else " (the embedded task)"),
        "## Proxy reward models", format_proxy_table(proxies, bon["agreement_with_gold"]),
        f"## Best-of-n of the SFT policy ({bon['prompts']} held-out prompts x {bon['samples_per_prompt']} samples)",
        format_bon_table(bon["curves"]),
        f"## PPO ({config.ppo_steps} steps, held-out evaluation every {config.eval_every})",
        format_rl_table(rl_curves, descriptions),
        "## Gao et al. fits of gold - initial gold", format_fit_table(fits),
        f"Wall time {total} s: " + ", ".join(f"{k} {v} s" for k, v in times.items()),
    ]
    text = "\n\n".join(sections) + "\n"
    results = {"gold_reward_function": config.gold_spec(), "proxies": proxies, "best_of_n": bon,
               "rl": {name: {**rl[name], "curve": rl_curves[name], "summary": run_summary(rl_curves[name])}
                      for name in rl},
               "initial": initial, "fits": fits, "plot": str(plot), "stage_wall_time_s": times,
               "total_wall_time_s": total}
    write_json_atomic(root / "overopt_results.json", results)
    write_text_atomic(root / "overopt_report.md", text)
    print("\n" + text + f"\nplot: {plot}\nresults: {root / 'overopt_results.json'}")
    return results
