"""``rlhf demo``: the whole InstructGPT pipeline on the embedded task, offline, measured.

1. Data: simulated labelers write demonstrations (with their habits: rlhf.embedded.habits) and
   rank synthetic candidate responses.
2. SFT on the demonstrations, from the embedded base model; and, as a reference, SFT on the
   same prompts demonstrated without the habits ("ideal demonstrations").
3. Comparisons on the SFT policy's own samples: labelers rank K responses per prompt, some
   sampled from the SFT policy and the rest synthetic (InstructGPT ranks policy samples).
4. Reward model from the SFT model on those rankings.
5. PPO from the SFT model against the reward model, with a KL penalty to the SFT model.
6. DPO from the SFT model on the same comparisons.
7. On held-out prompts: a table of gold reward, reward-model score, KL to the SFT reference and
   length of the base, SFT, best-of-n, PPO and DPO policies (gains over SFT paired by prompt);
   a second table of how often each policy shows each demonstration habit; and how often the
   reward model orders the SFT policy's own samples as gold does.
With ``--ablation no-kl`` PPO also runs with beta = 0 and a plot shows reward hacking:
the reward model's score rises while the gold reward falls.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from rlhf.atomic_io import write_json_atomic, write_jsonl, write_text_atomic
from rlhf.config.base import ConfigError, config_from_dict, parse_name_values, save_config
from rlhf.embedded import EMBEDDED_BASE_MODEL
from rlhf.embedded.habits import HABIT_RATES, HABITS
from rlhf.embedded.task import KINDS
from rlhf.pipeline.demo_report import evaluate, format_report
from rlhf.pipeline.stages import StageClock, run_stage

GOLD_FUNCTION = "rlhf.embedded.gold:gold_rewards"


@dataclass
class DemoConfig:
    """Sizes and step counts of the demo; the defaults finish in about 10.5 minutes on 2 CPU cores, 19 with
    ``--ablation no-kl``."""

    output_dir: str = field(default="runs/demo", metadata={"help": "Where every stage and the final tables are written."})
    model_name_or_path: str = field(default=EMBEDDED_BASE_MODEL, metadata={"help": "Base model (default: the embedded one)."})
    seed: int = field(default=0, metadata={"help": "Seed of the data, the labelers and every stage."})
    ablation: str = field(
        default="",
        metadata={"help": "no-kl: also run PPO with beta = 0 and plot RM score, gold reward and KL over steps for both."},
    )
    num_demonstrations: int = field(default=1500, metadata={"help": "Labeler demonstrations for SFT."})
    demonstration_kinds: str = field(
        default="arithmetic,list,sentence,yesno,harmful",
        metadata={"help": "Kinds of instruction the labelers write demonstrations for (comma-separated subset of "
                  "arithmetic, list, sentence, yesno, harmful); rankings and PPO prompts always cover all five."},
    )
    demonstration_habits: str = field(
        default=",".join(f"{habit}={rate:g}" for habit, rate in HABIT_RATES.items()),
        metadata={"help": "Pool means of the writers' habits, habit=rate pairs (each writer's own rate is spread "
                  "around them); 'none' for writers without habits. Habits: " + ", ".join(HABITS) + "."},
    )
    ideal_sft: bool = field(
        default=True,
        metadata={"help": "Also train SFT on demonstrations without the habits, as a reference row: what SFT "
                  "reaches when demonstrations are near-perfect."},
    )
    num_rankings: int = field(default=1200, metadata={"help": "Prompts ranked by labelers for the reward model and DPO."})
    ranking_k: int = field(default=4, metadata={"help": "Responses ranked per prompt (K(K-1)/2 comparisons each)."})
    policy_samples_per_ranking: int = field(default=2, metadata={"help": "Of the K responses, how many are sampled from the SFT policy."})
    sft_steps: int = field(default=300, metadata={"help": "SFT optimizer steps."})
    rm_steps: int = field(default=750, metadata={"help": "Reward-model optimizer steps (about 2 epochs of the comparisons)."})
    ppo_steps: int = field(default=60, metadata={"help": "PPO steps (rollout + update)."})
    ppo_no_kl_steps: int = field(
        default=160,
        metadata={"help": "Steps of the beta = 0 run of --ablation no-kl (0: as many as ppo_steps). Hacking the reward "
                  "model takes time: gold rises for about 30 steps, then falls, steeply after 100 (docs/embedded.md)."},
    )
    dpo_steps: int = field(default=200, metadata={"help": "DPO optimizer steps."})
    kl_coef: float = field(default=0.2, metadata={"help": "beta of PPO's KL penalty (docs/embedded.md has why this value)."})
    max_new_tokens: int = field(default=40, metadata={"help": "Longest sampled response."})
    eval_prompts: int = field(default=0, metadata={"help": "Held-out prompts in the final tables (0: all)."})
    eval_samples_per_prompt: int = field(
        default=8,
        metadata={"help": "Responses sampled per held-out prompt for the final tables: more samples, smaller "
                  "standard errors (115 prompts x 1 sample leave about +-0.03 on the mean gold reward)."},
    )
    best_of_n: int = field(default=4, metadata={"help": "n of the best-of-n row (the SFT policy's best of n samples by "
                                                        "the reward model); 0 or 1 leaves the row out."})
    disable_tqdm: bool = field(default=False, metadata={"help": "Hide progress bars."})
    resume: bool = field(
        default=False,
        metadata={"help": "Continue a killed demo: finished stages are skipped, the interrupted one resumes from its "
                  "newest intact checkpoint."},
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Replace a demo already in output_dir; without it (or --resume) such a folder is refused."},
    )
    feedback: str = field(
        default="people",
        metadata={"help": "Who ranks the SFT samples for the reward model and DPO: people (the simulated labelers) or "
                  "ai (the judge in --judge, under the default constitution; docs/ai_feedback.md)."},
    )
    judge: str = field(
        default="~/.cache/rlhf/smollm2-135m-instruct",
        metadata={"help": "With --feedback ai: a local folder of the judge model (default: where `rlhf ai "
                  "fetch-smollm2` writes SmolLM2-135M-Instruct)."},
    )
    keep_position_flips: bool = field(
        default=False,
        metadata={"help": "With --feedback ai: label a pair whose verdict changes with the order by the mean of both "
                  "orders instead of giving it no label."},
    )

    def validate(self) -> None:
        if self.ablation not in ("", "no-kl"):
            raise ConfigError(f"ablation must be empty or no-kl, got {self.ablation!r}")
        if self.feedback not in ("people", "ai"):
            raise ConfigError(f"feedback must be people or ai, got {self.feedback!r}")
        kinds = self.demonstration_kind_list()
        if not kinds or set(kinds) - set(KINDS):
            raise ConfigError(f"demonstration_kinds must be a comma-separated subset of {','.join(KINDS)}, "
                              f"got {self.demonstration_kinds!r}")
        self.habit_rates()
        if not 0 <= self.policy_samples_per_ranking <= self.ranking_k:
            raise ConfigError("policy_samples_per_ranking must be between 0 and ranking_k")
        for name in ("num_demonstrations", "num_rankings", "sft_steps", "rm_steps", "ppo_steps", "dpo_steps",
                     "eval_samples_per_prompt"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("ppo_no_kl_steps", "best_of_n", "eval_prompts"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be 0 or more, got {getattr(self, name)}")

    def demonstration_kind_list(self) -> list[str]:
        return [k.strip() for k in self.demonstration_kinds.split(",") if k.strip()]

    def habit_rates(self) -> dict[str, float]:
        """``demonstration_habits`` parsed: habit -> pool mean rate."""
        if self.demonstration_habits.strip().lower() == "none":
            return {}
        rates = parse_name_values(self.demonstration_habits, "demonstration_habits", "habit=rate")
        for habit, rate in rates.items():
            if habit not in HABITS or not 0.0 <= rate <= 1.0:
                raise ConfigError(f"demonstration_habits: '{habit}={rate:g}' is not a known habit with a rate in "
                                  f"[0, 1]; habits: {', '.join(HABITS)}")
        return rates


CONFIG_CLASS = DemoConfig


def stage_options(config: DemoConfig, root: Path, data: dict[str, Path]) -> dict[str, dict]:
    """Every stage's options, tuned for the embedded 4M-parameter model on a CPU."""
    common = {"seed": config.seed, "disable_tqdm": config.disable_tqdm, "max_length": 192,
              "resume": "latest" if config.resume else "", "overwrite_output_dir": config.overwrite_output_dir}
    sft_model, rm_model = str(root / "sft" / "model"), str(root / "rm" / "model")
    sft = {**common, "model_name_or_path": config.model_name_or_path, "train_file": str(data["sft_train"]),
           "eval_file": str(data["sft_test"]), "output_dir": str(root / "sft"), "max_steps": config.sft_steps,
           "per_device_train_batch_size": 16, "learning_rate": 5e-4, "logging_steps": 25, "save_steps": 100}
    ppo = {**common, "model_name_or_path": sft_model, "reward_model_path": rm_model, "output_dir": str(root / "ppo"),
           "prompts_file": str(data["prompts_train"]), "eval_prompts_file": str(data["prompts_test"]),
           "gold_reward_function": GOLD_FUNCTION, "max_steps": config.ppo_steps, "rollout_batch_size": 64,
           "per_device_train_batch_size": 16, "ppo_epochs": 4, "learning_rate": 1e-5, "kl_coef": config.kl_coef,
           "max_new_tokens": config.max_new_tokens, "temperature": 1.0, "reward_normalization": "rm_stats",
           "missing_eos_penalty": 1.0, "logging_steps": 1, "sample_every": 10, "save_steps": 10}
    return {
        "sft": sft,
        "sft_ideal": {**sft, "train_file": str(data["sft_ideal_train"]), "output_dir": str(root / "sft_ideal")},
        "rm": {**common, "model_name_or_path": sft_model, "train_file": str(data["rankings_policy"]),
               "eval_fraction": 0.1, "output_dir": str(root / "rm"), "max_steps": config.rm_steps,
               "per_device_train_batch_size": 16, "learning_rate": 2e-4, "center_rewards_coefficient": 0.01,
               "logging_steps": 25, "save_steps": 100, "stats_max_pairs": 2000},
        "ppo": ppo,
        "ppo_no_kl": {**ppo, "kl_coef": 0.0, "output_dir": str(root / "ppo_no_kl"),
                      "max_steps": config.ppo_no_kl_steps or config.ppo_steps},
        "dpo": {**common, "model_name_or_path": sft_model, "train_file": str(data["rankings_policy"]),
                "eval_fraction": 0.1, "output_dir": str(root / "dpo"), "max_steps": config.dpo_steps,
                "per_device_train_batch_size": 16, "learning_rate": 1e-4, "beta": 0.1, "logging_steps": 25,
                "save_steps": 100},
    }


def run(config: DemoConfig) -> dict:
    from rlhf.config.dpo import DPOConfig
    from rlhf.config.ppo import PPOConfig
    from rlhf.config.reward import RewardConfig
    from rlhf.config.sft import SFTConfig
    from rlhf.embedded.task_data import generate_task_data
    from rlhf.trainers import dpo, ppo, reward, sft

    root = Path(config.output_dir)
    if (root / "demo_config.yaml").exists() and not (config.resume or config.overwrite_output_dir):
        raise ConfigError(f"output_dir {root} already holds a demo: pass --resume to continue it, "
                          "--overwrite_output_dir to replace it, or choose another --output_dir")
    save_config(config, root, name="demo_config.yaml")
    timed = StageClock("rlhf demo")
    times = timed.times

    def train(name, runner, config_class):
        """A training stage; with --resume a finished one is skipped (its summary keeps its time)."""
        start = time.time()
        summary, ran = run_stage("rlhf demo", name, runner, config_from_dict(config_class, options[name]), config.resume)
        times[name] = round(time.time() - start, 1) if ran else summary.get("wall_time_s")
        return summary

    # 1. Data from simulated labelers (deterministic; every file is written atomically).
    data = timed("data", lambda: generate_task_data(root / "data", config.seed, config.num_demonstrations,
                                                    config.num_rankings, config.ranking_k,
                                                    demonstration_kinds=config.demonstration_kind_list(),
                                                    habit_rates=config.habit_rates()))
    policy_rankings = root / "data" / "rankings_policy.jsonl"
    options = stage_options(config, root, {**data, "rankings_policy": policy_rankings})
    # 2. SFT (and the ideal-demonstrations reference).
    results = {"sft": train("sft", sft.run, SFTConfig)}
    if config.ideal_sft:
        results["sft_ideal"] = train("sft_ideal", sft.run, SFTConfig)
    # 3. Labelers rank SFT samples mixed with synthetic candidates.
    if not (config.resume and policy_rankings.is_file()):
        timed("rankings", rank_sft_samples, config, data["rankings_train"], root / "sft" / "model", policy_rankings)
    # 4-6. Reward model, PPO, DPO.
    results["rm"] = train("rm", reward.run, RewardConfig)
    results["ppo"] = train("ppo", ppo.run, PPOConfig)
    results["dpo"] = train("dpo", dpo.run, DPOConfig)
    if config.ablation == "no-kl":
        results["ppo_no_kl"] = train("ppo_no_kl", ppo.run, PPOConfig)

    # 7. The tables on held-out prompts.
    policies = {"base": config.model_name_or_path, "sft": root / "sft" / "model"}
    if config.ideal_sft:
        policies["sft (ideal demonstrations)"] = root / "sft_ideal" / "model"
    policies.update({"ppo": root / "ppo" / "model", "dpo": root / "dpo" / "model"})
    if config.ablation == "no-kl":
        policies["ppo (beta=0)"] = root / "ppo_no_kl" / "model"
    outcome = timed("evaluation", evaluate, config, policies, data["prompts_test"], root / "sft" / "model",
                    root / "rm" / "model", GOLD_FUNCTION, root / "demo_samples.jsonl")
    train_time = {"sft": times.get("sft"), "sft (ideal demonstrations)": times.get("sft_ideal"),
                  "ppo": times.get("ppo"), "dpo": times.get("dpo"), "ppo (beta=0)": times.get("ppo_no_kl")}
    for name, row in outcome["table"].items():
        row["train_time_s"] = train_time.get(name)
    outcome.update({"rm_eval_accuracy": results["rm"].get("eval/accuracy"),
                    "rm_eval_accuracy_stderr": results["rm"].get("eval/accuracy_stderr"),
                    "stage_wall_time_s": times, "total_wall_time_s": round(sum(t for t in times.values() if t), 1)})
    if config.ablation == "no-kl":
        from rlhf.evaluation.plots import plot_reward_hacking

        outcome["plot"] = str(plot_reward_hacking({"beta=%g" % config.kl_coef: root / "ppo", "beta=0": root / "ppo_no_kl"},
                                                  root / "reward_hacking.png"))
    report = format_report(outcome)
    write_text_atomic(root / "demo_table.md", report + "\n")
    write_json_atomic(root / "demo_results.json", outcome)
    print(f"\n{report}\n\nwall time: {outcome['total_wall_time_s']} s {json.dumps(times)}\n"
          f"results: {root / 'demo_results.json'}")
    return outcome


def rank_sft_samples(config: DemoConfig, rankings_file: Path, policy_path: Path, out_path: Path) -> Path:
    """The rankings file with ``policy_samples_per_ranking`` of each ranking's K synthetic
    responses replaced by SFT samples, re-ranked by the labeler who ranked it."""
    from rlhf.embedded.labelers import labeler_pool
    from rlhf.feedback import rank_policy_samples
    from rlhf.models.loading import load_causal_lm, load_tokenizer
    from rlhf.rollout.generation import SamplingParams

    records = [json.loads(line) for line in Path(rankings_file).read_text(encoding="utf-8").splitlines()]
    labelers = {labeler.name: labeler for labeler in labeler_pool(seed=config.seed, habit_rates=config.habit_rates())}
    tokenizer = load_tokenizer(policy_path, padding_side="left")
    policy = load_causal_lm(policy_path, tokenizer).eval()
    ranked = rank_policy_samples(policy, tokenizer, records, lambda record: labelers[record["labeler"]],
                                 config.policy_samples_per_ranking, config.ranking_k,
                                 SamplingParams(max_new_tokens=config.max_new_tokens, temperature=1.0), config.seed)
    if config.feedback == "ai":
        ranked = rank_with_ai(config, ranked, out_path.parent / "judge_cache.jsonl")
    return write_jsonl(out_path, ranked)


def rank_with_ai(config: DemoConfig, records: list[dict], cache_file: Path) -> list[dict]:
    """The same responses ranked by the AI judge instead of the people (--feedback ai); pairs
    whose verdict flips with the order give no label, records with none are left out."""
    from rlhf.feedback.constitution import load_constitution
    from rlhf.feedback.judge_http import JudgeCache
    from rlhf.feedback.judges import JudgeStats, LocalJudge, judge_rankings
    from rlhf.progress import phase_bar

    judge_path = Path(config.judge).expanduser()
    if not (judge_path / "config.json").is_file():
        raise ConfigError(f"--judge {judge_path} holds no model: run `rlhf ai fetch-smollm2` first, or pass a local "
                          "model folder")
    stats = JudgeStats()
    judge = JudgeCache(LocalJudge(str(judge_path)), cache_file)
    constitution, ranked, chunk = load_constitution(), [], 64
    for first in phase_bar(range(0, len(records), chunk), "" if config.disable_tqdm else "AI judge",
                           f"{len(records)} rankings"):
        ranked += judge_rankings(judge, constitution, records[first:first + chunk], config.seed, stats,
                                 config.keep_position_flips, first_index=first)
    print(f"AI judge {judge.name}: {len(ranked)} of {len(records)} rankings kept; {json.dumps(stats.summary())}")
    write_json_atomic(cache_file.with_name("judge_summary.json"), stats.summary())
    if not ranked:
        raise ConfigError(f"the AI judge {judge.name} gave no labels: its verdict changed with the order of the two "
                          f"responses on {stats.flipped} of {stats.pairs} pairs (position bias); use a better judge or "
                          "--keep_position_flips true")
    return ranked
