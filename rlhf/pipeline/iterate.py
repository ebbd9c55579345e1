"""``rlhf iterate``: iterative RLHF, round after round (InstructGPT section 3.5; Llama 2 section 3.2;
Bai et al. 2022's "iterated online RLHF").

A reward model trained on one policy's samples judges them well and a later policy's poorly: the
policy moves to where the reward model has seen no labels (Gao et al. 2023). So each round

1. samples K responses per fresh prompt from the current policy (``samples.jsonl``);
2. has them ranked by the feedback source: the embedded task's simulated people, an AI judge, or
   people in a labeling project of the web app, waiting until it is complete (``labels.jsonl``);
3. trains the reward model on every label so far, from scratch or continuing the last (``rm/``);
4. optimises the policy from the current one by PPO, DPO or best-of-n fine-tuning, the reference
   kept at the starting policy or moved to the current one (``policy/``);
5. evaluates the policies before and after on held-out prompts (``eval.json``): gold where known,
   and how often this round's reward model orders each policy's own samples as gold does.

Round r is the folder ``output_dir/round_<r>``; ``iterate_table.md`` and ``iterate_results.json``
gather the rounds. Every step writes its output atomically and a finished step is skipped, and
an interrupted training stage resumes from its checkpoint, so a kill at any point resumes with
``--resume`` where it stopped (and ``--resume --rounds N`` adds rounds).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from rlhf.atomic_io import write_json_atomic, write_jsonl, write_text_atomic
from rlhf.config.base import ConfigError, config_from_dict, save_config
from rlhf.config.iterate import IterateConfig
from rlhf.pipeline.iterate_steps import (best_of_n_demonstrations, evaluate_round, rank_samples, read_jsonl,
                                         round_prompts, sample_round)
from rlhf.pipeline.stages import run_stage

CONFIG_CLASS = IterateConfig
CONFIG_FILE = "iterate_config.yaml"


def round_dir(config: IterateConfig, round_: int) -> Path:
    return Path(config.output_dir) / f"round_{round_}"


def policy_before(config: IterateConfig, round_: int) -> str:
    """The policy a round starts from: the starting policy, then each round's result."""
    return config.model_name_or_path if round_ == 1 else str(round_dir(config, round_ - 1) / "policy" / "model")


def stage_options(config: IterateConfig, round_: int) -> dict[str, dict]:
    """The round's training stages' options: defaults for the embedded 4M-parameter model on a CPU
    (as the demo's), the paths that chain the rounds, then the config's own sections on top."""
    rd, current = round_dir(config, round_), policy_before(config, round_)
    reference = config.model_name_or_path if config.reference == "keep" else current
    common = {"seed": config.seed + round_, "disable_tqdm": config.disable_tqdm, "max_length": 192,
              "resume": "latest" if config.resume else "", "report_to": "none"}
    rm_from = config.rm_model_name_or_path or config.model_name_or_path
    if config.rm_init == "continue":
        rm_from = str(round_dir(config, round_ - 1) / "rm" / "model") if round_ > 1 else (config.reward_model_path
                                                                                          or rm_from)
    rm = {**common, "model_name_or_path": rm_from, "train_file": str(rd / "rm_train.jsonl"), "eval_fraction": 0.1,
          "max_steps": 300, "per_device_train_batch_size": 16, "learning_rate": 2e-4,
          "center_rewards_coefficient": 0.01, "logging_steps": 25, "save_steps": 100, "stats_max_pairs": 2000,
          **config.section("rm"), "output_dir": str(rd / "rm")}
    policy_out = str(rd / "policy")
    ppo = {**common, "model_name_or_path": current, "ref_model_path": reference, "reward_model_path": str(rd / "rm" / "model"),
           "prompts_file": config.prompts_file, "gold_reward_function": config.gold_reward_function, "max_steps": 40,
           "rollout_batch_size": 64, "per_device_train_batch_size": 16, "ppo_epochs": 4, "learning_rate": 1e-5,
           "kl_coef": 0.2, "max_new_tokens": config.max_new_tokens, "reward_normalization": "rm_stats",
           "missing_eos_penalty": 1.0, "logging_steps": 1, "sample_every": 0, "save_steps": 10,
           **config.section("ppo"), "output_dir": policy_out}
    dpo = {**common, "model_name_or_path": current, "ref_model_path": reference, "train_file": str(rd / "rm_train.jsonl"),
           "eval_fraction": 0.1, "max_steps": 200, "per_device_train_batch_size": 16, "learning_rate": 1e-4,
           "beta": 0.1, "logging_steps": 25, "save_steps": 100, **config.section("dpo"), "output_dir": policy_out}
    sft = {**common, "model_name_or_path": current, "train_file": str(rd / "best_of_n.jsonl"), "max_steps": 100,
           "per_device_train_batch_size": 16, "learning_rate": 1e-4, "logging_steps": 25, "save_steps": 50,
           **config.section("sft"), "output_dir": policy_out}
    return {"rm": rm, "ppo": ppo, "dpo": dpo, "sft": sft}


def check_output_dir(config: IterateConfig) -> None:
    """A folder holding rounds is refused unless --resume (continue it) or --overwrite_output_dir
    (its rounds deleted first)."""
    root = Path(config.output_dir)
    if not (root / CONFIG_FILE).is_file():
        return
    if config.overwrite_output_dir:
        for old in [*root.glob("round_*"), root / "iterate_table.md", root / "iterate_results.json"]:
            shutil.rmtree(old) if old.is_dir() else old.unlink(missing_ok=True)
    elif not config.resume:
        raise ConfigError(f"output_dir {root} already holds an iterate run: pass --resume to continue it (or add "
                          "rounds), --overwrite_output_dir to replace it, or choose another --output_dir")


def run(config: IterateConfig) -> dict:
    from rlhf.data import load_prompts

    check_output_dir(config)
    for path in filter(None, (config.prompts_file, config.eval_prompts_file, config.initial_labels_file)):
        if not Path(path).is_file():
            raise ConfigError(f"{path} does not exist")
    if config.gold_reward_function:  # a missing or non-callable gold: one line now, not after a round of training
        from rlhf.rewards.scorers import load_function

        load_function(config.gold_reward_function, "gold_reward_function")
    save_config(config, config.output_dir, name=CONFIG_FILE)
    pool = list(load_prompts(config.prompts_file))
    if config.rounds * config.prompts_per_round > len(pool):
        raise ConfigError(f"prompts_file {config.prompts_file} holds {len(pool)} prompts: too few for {config.rounds} "
                          f"rounds of {config.prompts_per_round} fresh prompts each (prompts_per_round); add prompts "
                          "or lower it")
    eval_records = list(load_prompts(config.eval_prompts_file)) if config.eval_prompts_file else pool[-64:]
    for round_ in range(1, config.rounds + 1):
        run_round(config, round_, pool, eval_records)
        results = write_table(config)
    print(f"\n{format_table(results)}\n\nresults: {Path(config.output_dir) / 'iterate_results.json'}", flush=True)
    return results


def run_round(config: IterateConfig, round_: int, pool: list, eval_records: list) -> None:
    """One round's steps; each skipped when its output is already there (see the module's docstring)."""
    from rlhf.config.dpo import DPOConfig
    from rlhf.config.ppo import PPOConfig
    from rlhf.config.reward import RewardConfig
    from rlhf.config.sft import SFTConfig
    from rlhf.trainers import dpo, ppo, reward, sft

    rd, seed, label = round_dir(config, round_), config.seed + round_, f"rlhf iterate: round {round_}"
    rd.mkdir(parents=True, exist_ok=True)
    current = policy_before(config, round_)
    prompts = round_prompts(pool, round_, config.prompts_per_round, config.prompts_file)
    # 1. Samples of the current policy on fresh prompts.
    if not (rd / "samples.jsonl").is_file():
        print(f"\n=== {label}: sampling {config.samples_per_prompt} responses x {len(prompts)} prompts", flush=True)
        sample_round(current, [p.prompt for p in prompts], config.samples_per_prompt, config.max_new_tokens, seed,
                     rd / "samples.jsonl")
    # 2. Rankings by the feedback source.
    if not (rd / "labels.jsonl").is_file():
        print(f"\n=== {label}: ranking by {config.feedback}", flush=True)
        write_jsonl(rd / "labels.jsonl", rank_samples(config, read_jsonl(rd / "samples.jsonl"), rd, seed))
    # 3. The reward model on every label so far.
    if not (rd / "rm_train.jsonl").is_file():
        labels = read_jsonl(Path(config.initial_labels_file)) if config.initial_labels_file else []
        for r in range(1, round_ + 1):
            labels += read_jsonl(round_dir(config, r) / "labels.jsonl")
        write_jsonl(rd / "rm_train.jsonl", labels)
    options = stage_options(config, round_)
    run_stage(label, "reward model", reward.run, config_from_dict(RewardConfig, options["rm"]), True)
    # 4. The policy, from the current one.
    if config.policy_method == "best_of_n" and not (rd / "best_of_n.jsonl").is_file():
        best_of_n_demonstrations(current, str(rd / "rm" / "model"), prompts, config.best_of_n, config.max_new_tokens,
                                 seed, rd / "best_of_n.jsonl")
    stage, runner, config_class = {"ppo": ("ppo", ppo.run, PPOConfig), "dpo": ("dpo", dpo.run, DPOConfig),
                                   "best_of_n": ("sft", sft.run, SFTConfig)}[config.policy_method]
    run_stage(label, f"policy ({config.policy_method})", runner, config_from_dict(config_class, options[stage]), True)
    # 5. Evaluation of the policies before and after, by this round's reward model.
    if not (rd / "eval.json").is_file():
        print(f"\n=== {label}: evaluation on {len(eval_records)} held-out prompts", flush=True)
        rows = evaluate_round(config, {"before": current, "after": str(rd / "policy" / "model")},
                              config.model_name_or_path, str(rd / "rm" / "model"), eval_records, config.seed)
        write_json_atomic(rd / "eval.json", {"round": round_, "labels_so_far": len(read_jsonl(rd / "rm_train.jsonl")),
                                             **rows})


def write_table(config: IterateConfig) -> dict:
    """``iterate_results.json`` and ``iterate_table.md`` from every finished round's eval.json."""
    root = Path(config.output_dir)
    rounds = []
    r = 1
    while (round_dir(config, r) / "eval.json").is_file():
        rounds.append(json.loads((round_dir(config, r) / "eval.json").read_text(encoding="utf-8")))
        r += 1
    results = {"rounds": rounds, "feedback": config.feedback, "policy_method": config.policy_method,
               "reference": config.reference, "rm_init": config.rm_init}
    write_json_atomic(root / "iterate_results.json", results)
    write_text_atomic(root / "iterate_table.md", format_table(results) + "\n")
    return results


def _cell(row: dict, key: str, fmt: str = "{:.3f}") -> str:
    value = row.get(key)
    return "" if value is None else fmt.format(value)


def format_table(results: dict) -> str:
    """One row for the starting policy and one per round: the policy after the round, scored by
    that round's reward model; the agreement columns say how well each round's reward model orders
    the samples of the policy it was labelled on (before) and of the policy it produced (after)."""
    lines = ["| round | gold | RM score | KL to start (nats) | length | RM-gold agreement, own samples (before) | "
             "RM-gold agreement, new policy's samples (after) | labels so far |", "|---|---|---|---|---|---|---|---|"]
    rounds = results["rounds"]
    if rounds:
        start = rounds[0]["before"]
        lines.append(f"| 0 (start) | {_cell(start, 'gold')} ± {_cell(start, 'gold_stderr')} | | "
                     f"{_cell(start, 'kl', '{:.2f}')} | {_cell(start, 'length', '{:.1f}')} | | | |")
    for row in rounds:
        after, before = row["after"], row["before"]
        lines.append(f"| {row['round']} | {_cell(after, 'gold')} ± {_cell(after, 'gold_stderr')} | "
                     f"{_cell(after, 'score')} | {_cell(after, 'kl', '{:.2f}')} | {_cell(after, 'length', '{:.1f}')} | "
                     f"{_cell(before, 'rm_gold_agreement', '{:.2f}')} | {_cell(after, 'rm_gold_agreement', '{:.2f}')} | "
                     f"{row['labels_so_far']} |")
    return "\n".join(lines)
