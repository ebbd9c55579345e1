"""``rlhf rm-ensemble``: K reward models from one command, differing in seed (and bootstrap sample),
that ``rlhf ppo`` takes as one ensemble reward. (The aggregations themselves, mean / min /
mean - lambda std, are checked against hand values in test_rewards.py.)"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rlhf.config.base import parse_config
from rlhf.config.reward_ensemble import RewardEnsembleConfig
from rlhf.errors import UserError

TESTS = Path(__file__).parent


def rlhf(*args, cwd):
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    return subprocess.run([sys.executable, "-m", "rlhf", *map(str, args), "--disable_tqdm", "true"], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def test_member_configs_differ_in_seed_and_folder_only(tmp_path, toy_data):
    from rlhf.trainers.reward_ensemble import member_configs

    config = parse_config(RewardEnsembleConfig, ["--model_name_or_path", "m", "--train_file", str(toy_data["pairs"]),
                                                 "--output_dir", str(tmp_path / "ens"), "--num_models", "3",
                                                 "--seed", "5", "--learning_rate", "1e-4"])
    members = member_configs(config)
    assert [m.seed for m in members] == [5, 6, 7]
    assert [m.output_dir for m in members] == [str(tmp_path / "ens" / f"member_{k}") for k in range(3)]
    assert {m.learning_rate for m in members} == {1e-4} and {m.train_file for m in members} == {str(toy_data["pairs"])}


def test_bootstrap_holds_out_the_same_records_and_resamples_the_rest(tmp_path):
    from conftest import write_jsonl
    from rlhf.data import read_records
    from rlhf.trainers.reward_ensemble import bootstrap_files

    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": f"q{i}", "chosen": " a", "rejected": " b"} for i in range(40)])
    config = parse_config(RewardEnsembleConfig, ["--model_name_or_path", "m", "--train_file", str(pairs),
                                                 "--output_dir", str(tmp_path / "ens"), "--num_models", "2",
                                                 "--bootstrap", "true", "--eval_fraction", "0.25"])
    files = bootstrap_files(config)
    heldout = {r["prompt"] for r, _ in read_records(files[0][1])}
    assert files[0][1] == files[1][1] and len(heldout) == 10  # 25% of 40 records, the same for both members
    samples = [[r["prompt"] for r, _ in read_records(train)] for train, _ in files]
    for sample in samples:
        assert len(sample) == 30 and not set(sample) & heldout  # as many as remain; none held out
        assert len(set(sample)) < 30  # drawn with replacement: some twice (P(all distinct) = 30!/30^30 ~ 1e-12)
    assert samples[0] != samples[1]


def test_num_models_must_be_positive():
    with pytest.raises(UserError, match="num_models must be at least 1, got 0"):
        parse_config(RewardEnsembleConfig, ["--model_name_or_path", "m", "--train_file", "x.jsonl", "--num_models", "0"])


@pytest.mark.slow
def test_rm_ensemble_cli_trains_members_ppo_uses_them_and_resume_skips_them(tiny_model_dir, toy_data, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "ens"
    args = ["rm-ensemble", "--model_name_or_path", tiny_model_dir, "--train_file", toy_data["pairs"],
            "--output_dir", out, "--num_models", 2, "--max_steps", 2, "--per_device_train_batch_size", 4,
            "--report_to", "none", "--bootstrap", "true"]
    result = rlhf(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    ensemble = json.loads((out / "ensemble.json").read_text())
    assert ensemble["seeds"] == [0, 1] and ensemble["members"] == [str(out / f"member_{k}" / "model") for k in range(2)]
    heads = [load_file(str(Path(p) / "model.safetensors")) for p in ensemble["members"]]
    key = next(k for k in heads[0] if "score" in k or "head" in k and "lm_head" not in k)
    assert not (heads[0][key] == heads[1][key]).all()  # different seeds, different reward heads

    again = rlhf(*args, "--resume", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("already finished") == 2
    refused = rlhf(*args, cwd=tmp_path)
    assert refused.returncode == 1 and "already holds an ensemble (ensemble.json): pass --resume" in refused.stderr

    ppo = rlhf("ppo", "--model_name_or_path", tiny_model_dir, "--reward_model_path", ensemble["reward_model_path"],
               "--reward_aggregation", "min", "--prompts_file", toy_data["prompts"], "--output_dir", tmp_path / "ppo",
               "--max_steps", 1, "--rollout_batch_size", 8, "--per_device_train_batch_size", 4, "--max_new_tokens", 6,
               "--report_to", "none", cwd=tmp_path)
    assert ppo.returncode == 0, ppo.stderr
