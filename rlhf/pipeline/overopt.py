"""``rlhf overopt``: reward over-optimisation measured on the embedded task (Gao et al. 2023).

The reward model is a proxy; optimising it past a point lowers the true (gold) reward. With a
gold reward at hand the curve can be traced:

1. The demo's first stages (reused, or taken from ``--demo_dir``): labeler data, SFT, and the
   labelers' rankings of SFT samples mixed with synthetic responses.
2. Proxy labels on the same responses from two sources: the simulated labeler pool, and the gold
   labeler with ``flip_rate`` (25%) of its pairwise labels flipped (AlpacaFarm's noisy gold).
3. Proxy reward models on ``data_amounts`` rankings of each source, and ``ensemble_size - 1``
   more on the PPO proxy's data with other seeds (the ensemble; member 0 is the proxy itself).
4. Best-of-n of the SFT policy for n = 1, 2, 4, ..., bon_max_n from one batch of bon_max_n
   samples per prompt (the unbiased estimator), KL = log n - (n - 1) / n: proxy and gold per n.
5. PPO against the PPO proxy at each ``ppo_kl_coefs`` beta, and against the ensemble's worst case
   and mean - lambda std at beta = 0, evaluated on held-out prompts every ``eval_every`` steps:
   d = sqrt(KL to the SFT policy), proxy, gold.
6. Gao et al.'s forms fitted to each gold curve; a PNG plot, the JSON data and Markdown tables.

Every stage writes into ``output_dir``; with ``--resume`` finished stages are skipped.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch

from rlhf.atomic_io import write_json_atomic, write_jsonl, write_text_atomic
from rlhf.config.base import ConfigError, config_from_dict, save_config
from rlhf.embedded import EMBEDDED_BASE_MODEL
from rlhf.pipeline.demo import GOLD_FUNCTION, DemoConfig, rank_sft_samples, stage_options
from rlhf.pipeline.stages import StageClock, run_stage

SOURCES = ("pool", "gold_flip")


@dataclass
class OveroptConfig:
    """The over-optimisation study; the defaults are sized for about 20 minutes on 2 quiet CPU cores
    (docs/overoptimization.md has the measured run and a larger setting)."""

    output_dir: str = field(default="runs/overopt", metadata={"help": "Where every stage, the plot and the tables go."})
    model_name_or_path: str = field(default=EMBEDDED_BASE_MODEL, metadata={"help": "Base model (default: the embedded one)."})
    demo_dir: str = field(
        default="",
        metadata={"help": "A finished `rlhf demo` folder whose data, SFT model and SFT-sample rankings to reuse "
                  "(its seed and sizes then apply); empty: run those stages here."},
    )
    gold_reward_function: str = field(
        default="",
        metadata={"help": "Your own task's gold reward, module:name or path/to/file.py:name (f(prompts, responses, "
                  "ended) -> scores), as in `rlhf iterate`: the study then runs on your task, from your SFT policy "
                  "(model_name_or_path; no SFT stage) and your prompts_file and eval_prompts_file. Empty: the "
                  "embedded task."},
    )
    prompts_file: str = field(
        default="",
        metadata={"help": "With gold_reward_function: your training prompts; the first max(data_amounts) are sampled "
                  "(samples_per_prompt each) and labelled by your gold function, and PPO trains on all of them."},
    )
    eval_prompts_file: str = field(
        default="", metadata={"help": "With gold_reward_function: your held-out prompts (best-of-n and PPO curves)."})
    samples_per_prompt: int = field(
        default=4, metadata={"help": "With gold_reward_function: K responses of your policy per labelled prompt "
                                     "(up to K(K-1)/2 pairs each)."})
    seed: int = field(default=0, metadata={"help": "Seed of the data, the labelers and every stage."})
    num_demonstrations: int = field(default=1500, metadata={"help": "Labeler demonstrations for SFT (as the demo)."})
    num_rankings: int = field(default=1200, metadata={"help": "Ranked prompts for the proxies (as the demo; the "
                                                               "embedded task)."})
    sft_steps: int = field(default=300, metadata={"help": "SFT optimizer steps (as the demo)."})
    label_sources: str = field(
        default="",
        metadata={"help": "Whose labels the proxies learn: pool (the simulated labelers: noisy, length-biased; the "
                  "embedded task only) and/or gold_flip (the gold labeler with flip_rate of its pairs flipped, as "
                  "AlpacaFarm). Empty: pool,gold_flip on the embedded task, gold_flip with gold_reward_function."},
    )
    flip_rate: float = field(default=0.25, metadata={"help": "Share of the gold labeler's pairwise labels flipped."})
    data_amounts: str = field(
        default="200,800",
        metadata={"help": "Rankings (about 6 pairs each) per proxy reward model, comma-separated: one proxy per "
                  "source and amount."},
    )
    rm_epochs: float = field(default=1.0, metadata={"help": "Passes over its pairs each proxy trains for."})
    ensemble_size: int = field(default=3, metadata={"help": "Members of the ensemble (seeds seed .. seed + K - 1) "
                                                            "trained on the PPO proxy's data; 1: no ensemble runs."})
    bon_prompts: int = field(default=24, metadata={"help": "Held-out prompts of the best-of-n curves."})
    bon_max_n: int = field(default=256, metadata={"help": "Largest n (a power of two); this many samples per prompt."})
    ppo_proxy: str = field(
        default="", metadata={"help": "The proxy PPO optimises, source_amount; empty: the first source's smallest "
                                      "amount (pool_200 by default on the embedded task): the proxy with the least "
                                      "data is over-optimised soonest, so a short study sees gold peak and fall."})
    ppo_kl_coefs: str = field(default="0,0.05", metadata={"help": "beta of the PPO runs against the single proxy."})
    ensemble_aggregations: str = field(
        default="min,mean_minus_std",
        metadata={"help": "Ensemble rewards PPO optimises at beta = 0: min (worst case) and/or mean_minus_std."},
    )
    uncertainty_coef: float = field(default=1.0, metadata={"help": "lambda of mean_minus_std."})
    ppo_steps: int = field(default=40, metadata={"help": "Steps of each PPO run."})
    ppo_rollout_batch_size: int = field(default=32, metadata={"help": "Prompts per PPO step."})
    ppo_learning_rate: float = field(default=2e-5, metadata={"help": "PPO learning rate (twice the demo's: half its batch)."})
    eval_every: int = field(default=5, metadata={"help": "Held-out evaluation (a point of the RL curve) every this many steps."})
    eval_prompts: int = field(default=48, metadata={"help": "Held-out prompts of those evaluations (0: all of them)."})
    max_new_tokens: int = field(default=40, metadata={"help": "Longest sampled response."})
    disable_tqdm: bool = field(default=False, metadata={"help": "Hide progress bars."})
    resume: bool = field(default=False, metadata={"help": "Continue a killed study: finished stages are skipped."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Replace a study already in output_dir."})

    def validate(self) -> None:
        self._validate_task()
        if set(self.sources()) - set(SOURCES) or not self.sources():
            raise ConfigError(f"label_sources must be a comma-separated subset of {','.join(SOURCES)}, "
                              f"got {self.label_sources!r}")
        if not 0.0 <= self.flip_rate < 0.5:
            raise ConfigError(f"flip_rate must be in [0, 0.5), got {self.flip_rate}")
        amounts = self.amounts()
        most = 10**12 if self.gold_reward_function else self.num_rankings  # your task: checked on prompts_file
        if not amounts or min(amounts) < 1 or max(amounts) > most:
            bounds = "positive" if self.gold_reward_function else f"between 1 and num_rankings ({self.num_rankings})"
            raise ConfigError(f"data_amounts must be {bounds}, got {self.data_amounts!r}")
        if self.proxy_for_ppo() not in self.proxy_names():
            raise ConfigError(f"ppo_proxy {self.ppo_proxy!r} is not one of the proxies {', '.join(self.proxy_names())}")
        if self.bon_max_n < 1 or self.bon_max_n & (self.bon_max_n - 1):
            raise ConfigError(f"bon_max_n must be a power of two, got {self.bon_max_n}")
        if set(self.aggregations()) - {"min", "mean_minus_std"}:
            raise ConfigError(f"ensemble_aggregations must be a subset of min,mean_minus_std, "
                              f"got {self.ensemble_aggregations!r}")
        if any(beta < 0 for beta in self.kl_coefs()):
            raise ConfigError(f"ppo_kl_coefs must be >= 0, got {self.ppo_kl_coefs!r}")
        if self.eval_prompts < 0:
            raise ConfigError(f"eval_prompts must be 0 or more, got {self.eval_prompts}")
        for name in ("rm_epochs", "ensemble_size", "bon_prompts", "ppo_steps", "ppo_rollout_batch_size", "eval_every",
                     "num_rankings", "num_demonstrations", "sft_steps", "samples_per_prompt"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.ppo_rollout_batch_size % 16 and self.ppo_rollout_batch_size > 16:
            raise ConfigError(f"ppo_rollout_batch_size must be at most 16 or a multiple of 16, "
                              f"got {self.ppo_rollout_batch_size}")

    def _validate_task(self) -> None:
        """Your own task (gold_reward_function) needs your policy and prompts and has no simulated pool;
        the embedded task takes none of your task's options."""
        if not self.gold_reward_function:
            for name in ("prompts_file", "eval_prompts_file"):
                if getattr(self, name):
                    raise ConfigError(f"{name} is for your own task: pass --gold_reward_function too (module:name "
                                      "or path/to/file.py:name), or leave it out to run on the embedded task")
            return
        if self.demo_dir:
            raise ConfigError("demo_dir reuses an embedded-task demo; with gold_reward_function pass your SFT policy "
                              "as --model_name_or_path instead")
        if self.model_name_or_path == EMBEDDED_BASE_MODEL:
            raise ConfigError("gold_reward_function (your own task) needs --model_name_or_path: your SFT policy (the "
                              "default is the embedded task's untrained base model)")
        for name in ("prompts_file", "eval_prompts_file"):
            if not getattr(self, name):
                raise ConfigError(f"gold_reward_function (your own task) needs --{name}")
        if "pool" in self.sources():
            raise ConfigError("label_sources pool: the simulated labeler pool exists only on the embedded task; on "
                              "your own task the proxies learn gold_flip (your gold function's labels with flip_rate "
                              "of them flipped)")

    def sources(self) -> list[str]:
        if not self.label_sources.strip():
            return ["gold_flip"] if self.gold_reward_function else list(SOURCES)
        return [s.strip() for s in self.label_sources.split(",") if s.strip()]

    def proxy_for_ppo(self) -> str:
        """``ppo_proxy``, or by default the first source's smallest amount (pool_200 on the embedded task)."""
        return self.ppo_proxy or f"{self.sources()[0]}_{min(self.amounts(), default=0)}"

    def gold_spec(self) -> str:
        """The gold reward's module:name: yours, or the embedded task's."""
        return self.gold_reward_function or GOLD_FUNCTION

    def amounts(self) -> list[int]:
        try:
            return [int(a) for a in self.data_amounts.split(",") if a.strip()]
        except ValueError:
            raise ConfigError(f"data_amounts must be comma-separated integers, got {self.data_amounts!r}") from None

    def proxy_names(self) -> list[str]:
        return [f"{source}_{amount}" for source in self.sources() for amount in self.amounts()]

    def kl_coefs(self) -> list[float]:
        return [float(b) for b in self.ppo_kl_coefs.split(",") if b.strip()]

    def aggregations(self) -> list[str]:
        return [a.strip() for a in self.ensemble_aggregations.split(",") if a.strip()] if self.ensemble_size > 1 else []


CONFIG_CLASS = OveroptConfig


def demo_config(config: OveroptConfig) -> DemoConfig:
    """The demo's settings for the stages the study shares with it."""
    return DemoConfig(output_dir=config.output_dir, model_name_or_path=config.model_name_or_path, seed=config.seed,
                      num_demonstrations=config.num_demonstrations, num_rankings=config.num_rankings,
                      sft_steps=config.sft_steps, max_new_tokens=config.max_new_tokens,
                      disable_tqdm=config.disable_tqdm, resume=config.resume,
                      overwrite_output_dir=config.overwrite_output_dir)


def base_stages(config: OveroptConfig, root: Path) -> dict[str, Path]:
    """Data, SFT and the pool's rankings of SFT samples: from ``demo_dir``, or run here as the demo does;
    on your own task (gold_reward_function), your policy and prompt files instead."""
    if config.gold_reward_function:
        from rlhf.pipeline.overopt_user import user_base

        return user_base(config)
    from rlhf.config.sft import SFTConfig
    from rlhf.embedded.task_data import generate_task_data
    from rlhf.trainers import sft

    if config.demo_dir:
        demo = Path(config.demo_dir)
        paths = {"data": demo / "data", "sft": demo / "sft" / "model", "rankings": demo / "data" / "rankings_policy.jsonl"}
        missing = [str(p) for p in paths.values() if not p.exists()]
        if missing:
            raise ConfigError(f"demo_dir {demo} is not a finished demo: missing {', '.join(missing)}")
        return {**paths, "prompts_train": demo / "data" / "prompts_train.jsonl",
                "prompts_eval": demo / "data" / "prompts_test.jsonl"}
    demo = demo_config(config)
    data = generate_task_data(root / "data", config.seed, config.num_demonstrations, config.num_rankings, 4)
    rankings = root / "data" / "rankings_policy.jsonl"
    options = stage_options(demo, root, {**data, "rankings_policy": rankings})
    run_stage("rlhf overopt", "sft", sft.run, config_from_dict(SFTConfig, options["sft"]), config.resume)
    if not (config.resume and rankings.is_file()):
        rank_sft_samples(demo, data["rankings_train"], root / "sft" / "model", rankings)
    return {"data": root / "data", "sft": root / "sft" / "model", "rankings": rankings,
            "prompts_train": data["prompts_train"], "prompts_eval": data["prompts_test"]}


def gold_flip_comparisons(config: OveroptConfig, base: dict[str, Path], out_path: Path) -> Path:
    """The pool's ranked responses re-ranked by the gold labeler (the same SFT samples: same seed),
    expanded to pairs, ``flip_rate`` of them flipped; one comparisons record per pair, in ranking
    order (``_pairs_in`` counts them per ranking)."""
    from rlhf.embedded.labelers import gold_labeler
    from rlhf.embedded.task_data import comparison_records
    from rlhf.feedback import rank_policy_samples
    from rlhf.models.loading import load_causal_lm, load_tokenizer
    from rlhf.rollout.generation import SamplingParams

    demo = demo_config(config)
    records = [json.loads(line) for line in (base["data"] / "rankings_train.jsonl").read_text().splitlines()]
    tokenizer = load_tokenizer(base["sft"], padding_side="left")
    policy = load_causal_lm(base["sft"], tokenizer).eval()
    gold = gold_labeler()
    ranked = rank_policy_samples(policy, tokenizer, records, lambda record: gold, demo.policy_samples_per_ranking,
                                 demo.ranking_k, SamplingParams(max_new_tokens=config.max_new_tokens, temperature=1.0),
                                 config.seed)
    rng = random.Random(f"gold-flip-{config.seed}")
    out = []
    for index, ranking in enumerate(ranked):
        for pair in comparison_records([ranking]):
            if rng.random() < config.flip_rate:
                pair["chosen"], pair["rejected"] = pair["rejected"], pair["chosen"]
            out.append({**pair, "labeler": "gold_flip", "ranking_index": index})
    return write_jsonl(out_path, out)


def proxy_data(config: OveroptConfig, base: dict[str, Path], root: Path) -> dict[str, Path]:
    """The training file of each proxy: the first ``amount`` rankings of its source."""
    folder = root / "data"
    files = {}
    if "pool" in config.sources():
        pool = base["rankings"].read_text(encoding="utf-8").splitlines()
        for amount in config.amounts():
            path = folder / f"proxy_pool_{amount}.jsonl"
            if not (config.resume and path.is_file()):
                write_jsonl(path, [json.loads(line) for line in pool[:amount]])
            files[f"pool_{amount}"] = path
    if "gold_flip" in config.sources():
        all_pairs = folder / "comparisons_gold_flip.jsonl"
        if not (config.resume and all_pairs.is_file()):
            if config.gold_reward_function:
                from rlhf.pipeline.overopt_user import user_gold_flip_comparisons

                user_gold_flip_comparisons(config, base, all_pairs)
            else:
                gold_flip_comparisons(config, base, all_pairs)
        pairs = [json.loads(line) for line in all_pairs.read_text(encoding="utf-8").splitlines()]
        for amount in config.amounts():
            path = folder / f"proxy_gold_flip_{amount}.jsonl"
            if not (config.resume and path.is_file()):
                write_jsonl(path, [p for p in pairs if p["ranking_index"] < amount])
            files[f"gold_flip_{amount}"] = path
    return files


def count_pairs(path: Path) -> int:
    """Pairs in a rankings (K(K-1)/2 each) or comparisons file."""
    total = 0
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        k = len(record["responses"]) if "responses" in record else 2
        total += k * (k - 1) // 2
    return total


def train_proxies(config: OveroptConfig, base: dict[str, Path], files: dict[str, Path], root: Path) -> dict[str, dict]:
    """Each proxy reward model, and the ensemble members; {name: {"path", "eval_accuracy", "seed"}}."""
    from rlhf.config.reward import RewardConfig
    from rlhf.trainers import reward

    demo = demo_config(config)
    template = stage_options(demo, root, {"rankings_policy": base.get("rankings", ""), "sft_train": "", "sft_test": "",
                                          "sft_ideal_train": "", "prompts_train": "", "prompts_test": ""})["rm"]
    jobs = [(name, path, config.seed) for name, path in files.items()]
    jobs += [(f"{config.proxy_for_ppo()}_seed{config.seed + k}", files[config.proxy_for_ppo()], config.seed + k)
             for k in range(1, config.ensemble_size)]
    proxies = {}
    for name, train_file, seed in jobs:
        steps = max(1, math.ceil(count_pairs(train_file) * 0.9 * config.rm_epochs / 16))
        options = {**template, "model_name_or_path": str(base["sft"]), "train_file": str(train_file), "seed": seed,
                   "output_dir": str(root / "rm" / name), "max_steps": steps, "save_steps": 100}
        summary, _ = run_stage("rlhf overopt", f"reward model {name} ({steps} steps)", reward.run,
                               config_from_dict(RewardConfig, options), config.resume)
        proxies[name] = {"path": str(root / "rm" / name / "model"), "eval_accuracy": summary.get("eval/accuracy"),
                         "seed": seed, "steps": steps, "train_file": str(train_file)}
    return proxies


def ensemble_paths(config: OveroptConfig, proxies: dict[str, dict]) -> list[str]:
    ppo_proxy = config.proxy_for_ppo()
    return [proxies[ppo_proxy]["path"]] + [proxies[f"{ppo_proxy}_seed{config.seed + k}"]["path"]
                                           for k in range(1, config.ensemble_size)]


def run(config: OveroptConfig) -> dict:
    from rlhf.pipeline.overopt_stages import best_of_n_stage, initial_points, ppo_runs, report

    root = Path(config.output_dir)
    if (root / "overopt_config.yaml").exists() and not (config.resume or config.overwrite_output_dir):
        raise ConfigError(f"output_dir {root} already holds a study: pass --resume to continue it, "
                          "--overwrite_output_dir to replace it, or choose another --output_dir")
    save_config(config, root, name="overopt_config.yaml")
    timed = StageClock("rlhf overopt")

    torch.manual_seed(config.seed)
    base = timed("your policy and prompts" if config.gold_reward_function else "data, SFT and the labelers' rankings",
                 base_stages, config, root)
    files = timed("proxy labels", proxy_data, config, base, root)
    proxies = timed("proxy reward models", train_proxies, config, base, files, root)
    members = ensemble_paths(config, proxies) if config.ensemble_size > 1 else []
    bon = timed("best-of-n", best_of_n_stage, config, base, proxies, members, root)
    initial = timed("initial policy's evaluation", initial_points, config, base, proxies, members, root)
    rl = timed("PPO runs", ppo_runs, config, base, proxies, members, root)
    return report(config, root, proxies, bon, initial, rl, timed.times)
