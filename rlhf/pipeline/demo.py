"""``rlhf demo``: the whole InstructGPT pipeline on the embedded task, offline, measured.

1. Data: simulated labelers write demonstrations and rank synthetic candidate responses.
2. SFT on the demonstrations, from the embedded base model.
3. Comparisons on the SFT policy's own samples: labelers rank K responses per prompt, half
   sampled from the SFT policy and half synthetic (InstructGPT ranks policy samples).
4. Reward model from the SFT model on those rankings.
5. PPO from the SFT model against the reward model, with a KL penalty to the SFT model.
6. DPO from the SFT model on the same comparisons.
7. A table on held-out prompts: gold reward, reward-model score, KL to the SFT reference and
   length of the base, SFT, PPO and DPO policies, with each stage's wall time.
With ``--ablation no-kl`` PPO also runs with beta = 0 and a plot shows reward hacking:
the reward model's score rises while the gold reward falls.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from rlhf.config.base import ConfigError, config_from_dict, save_config
from rlhf.embedded import EMBEDDED_BASE_MODEL
from rlhf.embedded.task import KINDS
from rlhf.feedback.labelers import generate_task_data, labeler_pool, ranking_record, write_jsonl
from rlhf.pipeline.pipeline import finished_summary

GOLD_FUNCTION = "rlhf.embedded.gold:gold_rewards"


@dataclass
class DemoConfig:
    """Sizes and step counts of the demo; the defaults finish in about 10 minutes on 2 CPU cores."""

    output_dir: str = field(default="runs/demo", metadata={"help": "Where every stage and the final table are written."})
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
                  "arithmetic, list, sentence, yesno, harmful); rankings and PPO prompts always cover all five. "
                  "Leaving harmful out makes refusing something only the comparisons can teach (docs/embedded.md "
                  "has what that measured)."},
    )
    num_rankings: int = field(default=1200, metadata={"help": "Prompts ranked by labelers for the reward model and DPO."})
    ranking_k: int = field(default=4, metadata={"help": "Responses ranked per prompt (K(K-1)/2 comparisons each)."})
    policy_samples_per_ranking: int = field(default=2, metadata={"help": "Of the K responses, how many are sampled from the SFT policy."})
    sft_steps: int = field(default=300, metadata={"help": "SFT optimizer steps."})
    rm_steps: int = field(default=750, metadata={"help": "Reward-model optimizer steps (about 2 epochs of the comparisons)."})
    ppo_steps: int = field(default=40, metadata={"help": "PPO steps (rollout + update)."})
    dpo_steps: int = field(default=200, metadata={"help": "DPO optimizer steps."})
    kl_coef: float = field(
        default=0.2,
        metadata={"help": "beta of PPO's KL penalty. At 0.1 the policy still learned to pad answers with filler "
                  "sentences that the reward model overrates (see docs/embedded.md)."},
    )
    max_new_tokens: int = field(default=40, metadata={"help": "Longest sampled response."})
    eval_prompts: int = field(default=0, metadata={"help": "Held-out prompts in the final table (0: all)."})
    eval_samples_per_prompt: int = field(
        default=8,
        metadata={"help": "Responses sampled per held-out prompt for the final table: more samples, smaller "
                  "standard errors (115 prompts x 1 sample leave about +-0.03 on the mean gold reward)."},
    )
    disable_tqdm: bool = field(default=False, metadata={"help": "Hide progress bars."})
    resume: bool = field(
        default=False,
        metadata={"help": "Continue a killed demo: finished stages are skipped, the interrupted one resumes from its "
                  "newest intact checkpoint."},
    )

    def validate(self) -> None:
        if self.ablation not in ("", "no-kl"):
            raise ConfigError(f"ablation must be empty or no-kl, got {self.ablation!r}")
        kinds = self.demonstration_kind_list()
        if not kinds or set(kinds) - set(KINDS):
            raise ConfigError(f"demonstration_kinds must be a comma-separated subset of {','.join(KINDS)}, "
                              f"got {self.demonstration_kinds!r}")
        if not 0 <= self.policy_samples_per_ranking <= self.ranking_k:
            raise ConfigError("policy_samples_per_ranking must be between 0 and ranking_k")

    def demonstration_kind_list(self) -> list[str]:
        return [k.strip() for k in self.demonstration_kinds.split(",") if k.strip()]


CONFIG_CLASS = DemoConfig


def stage_options(config: DemoConfig, root: Path, data: dict[str, Path]) -> dict[str, dict]:
    """Every stage's options, tuned for the embedded 4M-parameter model on a CPU."""
    common = {"seed": config.seed, "disable_tqdm": config.disable_tqdm, "max_length": 192,
              "resume": "latest" if config.resume else ""}
    sft_model, rm_model = str(root / "sft" / "model"), str(root / "rm" / "model")
    ppo = {**common, "model_name_or_path": sft_model, "reward_model_path": rm_model, "output_dir": str(root / "ppo"),
           "prompts_file": str(data["prompts_train"]), "eval_prompts_file": str(data["prompts_test"]),
           "gold_reward_function": GOLD_FUNCTION, "max_steps": config.ppo_steps, "rollout_batch_size": 64,
           "per_device_train_batch_size": 16, "ppo_epochs": 4, "learning_rate": 1e-5, "kl_coef": config.kl_coef,
           "max_new_tokens": config.max_new_tokens, "temperature": 1.0, "reward_normalization": "rm_stats",
           "missing_eos_penalty": 1.0, "logging_steps": 1, "sample_every": 10, "save_steps": 10}
    return {
        "sft": {**common, "model_name_or_path": config.model_name_or_path, "train_file": str(data["sft_train"]),
                "eval_file": str(data["sft_test"]), "output_dir": str(root / "sft"), "max_steps": config.sft_steps,
                "per_device_train_batch_size": 16, "learning_rate": 5e-4, "logging_steps": 25, "save_steps": 100},
        "rm": {**common, "model_name_or_path": sft_model, "train_file": str(data["rankings_policy"]),
               "eval_fraction": 0.1, "output_dir": str(root / "rm"), "max_steps": config.rm_steps,
               "per_device_train_batch_size": 16, "learning_rate": 2e-4, "center_rewards_coefficient": 0.01,
               "logging_steps": 25, "save_steps": 100},
        "ppo": ppo,
        "ppo_no_kl": {**ppo, "kl_coef": 0.0, "output_dir": str(root / "ppo_no_kl")},
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
    from rlhf.trainers import dpo, ppo, reward, sft

    root = Path(config.output_dir)
    save_config(config, root, name="demo_config.yaml")
    times: dict[str, float] = {}

    def timed(name, function, *args):
        start = time.time()
        print(f"\n=== rlhf demo: {name}", flush=True)
        result = function(*args)
        times[name] = round(time.time() - start, 1)
        return result

    def train(name, runner, config_class):
        """A training stage; with --resume a finished one is skipped (its summary keeps its time)."""
        stage_config = config_from_dict(config_class, options[name])
        done = finished_summary(stage_config.output_dir) if config.resume else None
        if done is not None:
            print(f"\n=== rlhf demo: {name} already finished, skipped", flush=True)
            times[name] = done.get("wall_time_s")
            return done
        return timed(name, runner, stage_config)

    # 1. Data from simulated labelers (deterministic; every file is written atomically).
    data = timed("data", lambda: generate_task_data(root / "data", config.seed, config.num_demonstrations,
                                                    config.num_rankings, config.ranking_k,
                                                    demonstration_kinds=config.demonstration_kind_list()))
    policy_rankings = root / "data" / "rankings_policy.jsonl"
    options = stage_options(config, root, {**data, "rankings_policy": policy_rankings})
    # 2. SFT.
    results = {"sft": train("sft", sft.run, SFTConfig)}
    # 3. Labelers rank SFT samples mixed with synthetic candidates.
    if not (config.resume and policy_rankings.is_file()):
        timed("rankings", rank_policy_samples, config, data["rankings_train"], root / "sft" / "model", policy_rankings)
    # 4-6. Reward model, PPO, DPO.
    results["rm"] = train("rm", reward.run, RewardConfig)
    results["ppo"] = train("ppo", ppo.run, PPOConfig)
    results["dpo"] = train("dpo", dpo.run, DPOConfig)
    if config.ablation == "no-kl":
        results["ppo_no_kl"] = train("ppo_no_kl", ppo.run, PPOConfig)

    # 7. The table on held-out prompts.
    policies = {"base": config.model_name_or_path, "sft": root / "sft" / "model", "ppo": root / "ppo" / "model",
                "dpo": root / "dpo" / "model"}
    if config.ablation == "no-kl":
        policies["ppo (beta=0)"] = root / "ppo_no_kl" / "model"
    rows = timed("evaluation", evaluate_policies, config, policies, data["prompts_test"], root / "sft" / "model",
                 root / "rm" / "model")
    train_time = {"sft": times.get("sft"), "ppo": times.get("ppo"), "dpo": times.get("dpo"),
                  "ppo (beta=0)": times.get("ppo_no_kl")}
    for name, row in rows.items():
        row["train_time_s"] = train_time.get(name)
    outcome = {
        "table": rows, "rm_eval_accuracy": results["rm"].get("eval/accuracy"),
        "rm_eval_accuracy_stderr": results["rm"].get("eval/accuracy_stderr"), "stage_wall_time_s": times,
        "total_wall_time_s": round(sum(t for t in times.values() if t), 1),
    }
    if config.ablation == "no-kl":
        from rlhf.evaluation.plots import plot_reward_hacking

        outcome["plot"] = str(plot_reward_hacking({"beta=%g" % config.kl_coef: root / "ppo", "beta=0": root / "ppo_no_kl"},
                                                  root / "reward_hacking.png"))
    table = format_table(rows)
    (root / "demo_table.md").write_text(table + "\n", encoding="utf-8")
    (root / "demo_results.json").write_text(json.dumps(outcome, indent=2), encoding="utf-8")
    print(f"\n{table}\n\nreward model held-out accuracy: {outcome['rm_eval_accuracy']:.3f} "
          f"(± {outcome['rm_eval_accuracy_stderr']:.3f})\nwall time: {outcome['total_wall_time_s']} s "
          f"{json.dumps(times)}\nresults: {root / 'demo_results.json'}")
    return outcome


@torch.no_grad()
def rank_policy_samples(config: DemoConfig, rankings_file: Path, policy_path: Path, out_path: Path) -> Path:
    """Replace ``policy_samples_per_ranking`` of each ranking's K synthetic responses with samples
    from the SFT policy, and have the same labeler rank the mixed set (with end-of-text flags)."""
    from rlhf.models.loading import load_causal_lm, load_tokenizer
    from rlhf.rollout.generation import SamplingParams, sample_responses

    records = [json.loads(line) for line in Path(rankings_file).read_text(encoding="utf-8").splitlines()]
    labelers = {l.name: l for l in labeler_pool(seed=config.seed)}
    m = config.policy_samples_per_ranking
    rng = random.Random(f"policy-rankings-{config.seed}")
    if m == 0:
        return write_jsonl(out_path, records)
    tokenizer = load_tokenizer(policy_path, padding_side="left")
    policy = load_causal_lm(policy_path, tokenizer).eval()
    sampling = SamplingParams(max_new_tokens=config.max_new_tokens, temperature=1.0)
    torch.manual_seed(config.seed)
    samples, ended = sample_responses(policy, tokenizer, [r["prompt"] for r in records for _ in range(m)], sampling,
                                      batch_size=64 * m)  # m samples of 64 rankings per batch
    out = []
    for i, record in enumerate(records):
        keep = [(r, True) for r in record["responses"][: config.ranking_k - m]]
        drawn = [(samples[i * m + j], ended[i * m + j]) for j in range(m)]
        mixed = [(r, e) for r, e in keep + drawn if r.strip()]
        texts = list(dict.fromkeys(r for r, _ in mixed))  # distinct, in order
        if len(texts) < 2:
            continue
        ended_of = {r: e for r, e in mixed}
        out.append(ranking_record(labelers[record["labeler"]], record["prompt"], texts, rng,
                                  ended=[ended_of[r] for r in texts]))
    return write_jsonl(out_path, out)


def evaluate_policies(config: DemoConfig, policies: dict, prompts_file: Path, reference_path: Path,
                      reward_path: Path) -> dict[str, dict]:
    """Gold reward, RM score, KL to the SFT reference and length of each policy on held-out prompts."""
    from rlhf.data import load_prompts, tokenize_prompts
    from rlhf.evaluation.policy_eval import evaluate_policy
    from rlhf.models.loading import load_causal_lm, load_tokenizer
    from rlhf.rollout.generation import SamplingParams
    from rlhf.rollout.rewards import RewardModelScorer, load_function

    tokenizer = load_tokenizer(reference_path, padding_side="left")
    prompts = tokenize_prompts(load_prompts(prompts_file, tokenizer=tokenizer), tokenizer, max_prompt_length=128)
    if config.eval_prompts:
        prompts = prompts[: config.eval_prompts]
    reference = load_causal_lm(reference_path, tokenizer).eval()
    reward = RewardModelScorer([str(reward_path)], tokenizer, torch.device("cpu"))
    gold = load_function(GOLD_FUNCTION)
    sampling = SamplingParams(max_new_tokens=config.max_new_tokens, temperature=1.0)
    repeats = max(1, config.eval_samples_per_prompt)
    rows, per_prompt = {}, {}
    for name, path in policies.items():
        policy = load_causal_lm(path, tokenizer).eval()
        golds: list[float] = []
        rows[name] = evaluate_policy(policy, reference, tokenizer, prompts * repeats, sampling, reward=reward,
                                     gold_function=gold, batch_size=64, seed=config.seed, gold_values=golds)
        per_prompt[name] = torch.tensor(golds, dtype=torch.float64).view(repeats, len(prompts)).mean(0)  # (P,)
        rows[name]["gold_stderr"] = _stderr(per_prompt[name])
    for name, row in rows.items():  # paired over prompts: the prompt-to-prompt spread cancels in the difference
        gain = per_prompt[name] - per_prompt["sft"]
        row["gold_gain_over_sft"], row["gold_gain_stderr"] = gain.mean().item(), _stderr(gain)
    return rows


def _stderr(values: torch.Tensor) -> float:
    """Standard error of the mean of ``values`` (independent prompts)."""
    return (values.std() / values.numel() ** 0.5).item() if values.numel() > 1 else 0.0


def format_table(rows: dict[str, dict]) -> str:
    header = ("| policy | gold reward | gold - SFT (paired) | RM score | KL to SFT | length (tokens) | ended | "
              "train time (s) |")
    lines = [header, "|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        time_s = "" if r.get("train_time_s") is None else f"{r['train_time_s']:.0f}"
        gain = "" if name == "sft" else f"{r['gold_gain_over_sft']:+.3f} ± {r['gold_gain_stderr']:.3f}"
        lines.append(f"| {name} | {r['gold']:.3f} ± {r['gold_stderr']:.3f} | {gain} | {r['score']:.3f} | "
                     f"{r['kl']:.2f} | {r['length']:.1f} | {r['ended_frac']:.2f} | {time_s} |")
    return "\n".join(lines)
