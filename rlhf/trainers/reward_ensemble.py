"""``rlhf rm-ensemble``: K reward models from one command, for ensemble-based conservative optimisation.

A policy optimised against one reward model finds that model's particular errors. Members
trained with different seeds (different head initialisation and data order) and, optionally,
different bootstrap samples of the data err in different places, so their worst case (min) or
their mean minus their disagreement is harder to exploit (Coste et al. 2024, arXiv:2310.02743).
PPO takes the ensemble as ``--reward_model_path m0,m1,... --reward_aggregation min`` (or
``mean_minus_std``); ``ensemble.json`` holds that path list.

Each member is an ordinary ``rlhf rm`` run in ``output_dir/member_k`` with seed ``seed + k``;
with ``--resume`` finished members are skipped and an interrupted one resumes from its checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

from rlhf.atomic_io import write_json_atomic, write_jsonl
from rlhf.config.base import ConfigError
from rlhf.config.reward import RewardConfig
from rlhf.config.reward_ensemble import RewardEnsembleConfig
from rlhf.data import read_records
from rlhf.trainers import reward

CONFIG_CLASS = RewardEnsembleConfig
ENSEMBLE_FILE = "ensemble.json"


def member_configs(config: RewardEnsembleConfig, data_files: list[tuple[str, str]] | None = None) -> list[RewardConfig]:
    """One ``rlhf rm`` config per member: the ensemble's options with seed ``seed + k``, output
    ``output_dir/member_k`` and, when given, that member's (train_file, eval_file)."""
    shared = {f.name: getattr(config, f.name) for f in dataclasses.fields(RewardConfig)}
    members = []
    for k in range(config.num_models):
        options = {**shared, "seed": config.seed + k, "output_dir": str(Path(config.output_dir) / f"member_{k}")}
        if data_files:
            options["train_file"], options["eval_file"] = data_files[k]
        member = RewardConfig(**options)
        member.validate()
        members.append(member)
    return members


def bootstrap_files(config: RewardEnsembleConfig) -> list[tuple[str, str]]:
    """Per member, a bootstrap sample of the training records (as many, drawn with replacement,
    seeded by ``seed + k``) and the held-out file: ``eval_file``, or a seeded ``eval_fraction``
    of the records set aside before resampling (the same for every member). Records, not pairs,
    are resampled: a ranking's K(K-1)/2 pairs stay together."""
    folder = Path(config.output_dir) / "bootstrap"
    records = [raw for raw, _ in read_records(config.train_file)]
    eval_file = config.eval_file
    if not eval_file and config.eval_fraction > 0:
        order = list(range(len(records)))
        random.Random(f"ensemble-heldout-{config.seed}").shuffle(order)
        held = set(order[: max(1, int(len(records) * config.eval_fraction))])
        eval_file = str(write_jsonl(folder / "heldout.jsonl", [records[i] for i in sorted(held)]))
        records = [r for i, r in enumerate(records) if i not in held]
    files = []
    for k in range(config.num_models):
        rng = random.Random(f"ensemble-bootstrap-{config.seed + k}")
        sample = [records[rng.randrange(len(records))] for _ in records]
        files.append((str(write_jsonl(folder / f"member_{k}.jsonl", sample)), eval_file))
    return files


def run(config: RewardEnsembleConfig) -> dict:
    root = Path(config.output_dir)
    if (root / ENSEMBLE_FILE).exists() and not (config.resume or config.overwrite_output_dir):
        raise ConfigError(f"output_dir {root} already holds an ensemble ({ENSEMBLE_FILE}): pass --resume to continue "
                          "it, --overwrite_output_dir to replace it, or choose another --output_dir")
    if not Path(config.train_file).exists():
        raise FileNotFoundError(f"train_file {config.train_file} does not exist")
    members = member_configs(config, bootstrap_files(config) if config.bootstrap else None)
    summaries = []
    for k, member in enumerate(members):
        summary_path = Path(member.output_dir) / "summary.json"
        if config.resume and summary_path.is_file() and (Path(member.output_dir) / "model").is_dir():
            print(f"\n=== rlhf rm-ensemble: member {k} already finished in {member.output_dir}, skipped", flush=True)
            summaries.append(json.loads(summary_path.read_text(encoding="utf-8")))
            continue
        print(f"\n=== rlhf rm-ensemble: member {k + 1} of {len(members)} (seed {member.seed}) -> {member.output_dir}",
              flush=True)
        summaries.append(reward.run(member))
    paths = [str(Path(m.output_dir) / "model") for m in members]
    accuracies = [s.get("eval/accuracy") for s in summaries]
    result = {"num_models": len(members), "bootstrap": config.bootstrap, "members": paths,
              "seeds": [m.seed for m in members], "reward_model_path": ",".join(paths),
              "eval_accuracy": accuracies}
    write_json_atomic(root / ENSEMBLE_FILE, result)
    shown = ", ".join("?" if a is None else f"{a:.3f}" for a in accuracies)
    print(f"\nrlhf rm-ensemble: {len(members)} reward models (held-out accuracy {shown}); use them with\n"
          f"  rlhf ppo --reward_model_path {result['reward_model_path']} --reward_aggregation min")
    return result
