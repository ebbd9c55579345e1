"""Every CLI stage as a user runs it: a subprocess, tiny step counts, real files out."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

TESTS = Path(__file__).parent


def rlhf(*args, cwd):
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    return subprocess.run([sys.executable, "-m", "rlhf", *map(str, args), "--disable_tqdm", "true"], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def test_pipeline_runs_sft_rm_ppo_from_one_yaml(tiny_model_dir, toy_data, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "model_name_or_path": str(tiny_model_dir), "output_dir": str(tmp_path / "out"), "stages": "sft,rm,ppo",
        "sft": {"train_file": str(toy_data["demos"]), "max_steps": 3},
        "rm": {"train_file": str(toy_data["pairs"]), "max_steps": 3},
        "ppo": {"prompts_file": str(toy_data["prompts"]), "max_steps": 2, "rollout_batch_size": 8,
                "per_device_train_batch_size": 4, "max_new_tokens": 6},
    }))
    result = rlhf("pipeline", "--config", config, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    for stage in ("sft", "rm", "ppo"):
        assert (tmp_path / "out" / stage / "model" / "model.safetensors").is_file()
    # PPO read the reward model the pipeline trained, and started from the SFT model
    ppo_config = yaml.safe_load((tmp_path / "out" / "ppo" / "config.yaml").read_text())
    assert ppo_config["reward_model_path"] == str(tmp_path / "out" / "rm" / "model")
    assert ppo_config["model_name_or_path"] == str(tmp_path / "out" / "sft" / "model")


def test_bad_record_fails_with_file_line_field_and_writes_no_model(tiny_model_dir, tmp_path):
    data = tmp_path / "demos.jsonl"
    data.write_text('{"prompt": "a", "completion": " b"}\n{"prompt": "a", "completion": 3}\n')
    result = rlhf("sft", "--model_name_or_path", tiny_model_dir, "--train_file", data, "--output_dir", tmp_path / "out",
                  cwd=tmp_path)
    assert result.returncode == 1
    assert f"{data}, line 2, field 'completion'" in result.stderr
    assert not (tmp_path / "out" / "model").exists()


def test_missing_model_is_a_clear_error(toy_data, tmp_path):
    result = rlhf("sft", "--model_name_or_path", tmp_path / "no-such-model", "--train_file", toy_data["demos"],
                  "--output_dir", tmp_path / "out", cwd=tmp_path)
    assert result.returncode == 1
    assert "is not a local folder" in result.stderr and "never downloads" in result.stderr


def test_unwritable_output_dir_fails_at_start(tiny_model_dir, toy_data, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = rlhf("sft", "--model_name_or_path", tiny_model_dir, "--train_file", toy_data["demos"],
                  "--output_dir", blocker / "out", cwd=tmp_path)
    assert result.returncode == 1
    assert "cannot write to output_dir" in result.stderr


def test_demo_runs_end_to_end_with_tiny_sizes(tiny_demo_model_dir, tmp_path):
    result = rlhf("demo", "--model_name_or_path", tiny_demo_model_dir, "--output_dir", tmp_path / "demo",
                  "--num_demonstrations", 64, "--num_rankings", 32, "--sft_steps", 3, "--rm_steps", 3, "--ppo_steps", 2, "--ppo_no_kl_steps", 2,
                  "--dpo_steps", 3, "--eval_prompts", 8, "--eval_samples_per_prompt", 2, "--max_new_tokens", 8, "--ablation", "no-kl",
                  "--demonstration_kinds", "arithmetic,list,sentence,yesno", "--best_of_n", 2, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads((tmp_path / "demo" / "demo_results.json").read_text())
    assert set(outcome["table"]) == {"base", "sft", "sft (ideal demonstrations)", "best-of-2", "ppo", "dpo",
                                     "ppo (beta=0)"}
    assert outcome["table"]["best-of-2"]["kl"] == pytest.approx(math.log(2) - 0.5)
    assert set(outcome["habits"]) == set(outcome["table"])
    assert {"declines_harmless", "hedges", "two_sentences", "repeats_item"} <= set(outcome["habits"]["sft"])
    agreement = outcome["rm_agreement_on_sft_samples"]
    assert set(agreement) <= {"all", "arithmetic", "list", "sentence", "yesno", "harmful"}
    assert agreement["all"]["pairs"] == sum(v["pairs"] for k, v in agreement.items() if k != "all")
    for row in outcome["table"].values():
        assert {"gold", "score", "kl", "length"} <= set(row)
    assert abs(outcome["table"]["sft"]["kl"]) < 1e-4  # the SFT policy is the reference itself
    table = outcome["table"]
    assert table["sft"]["gold_gain_over_sft"] == 0 and table["sft"]["gold_gain_stderr"] == 0
    for row in table.values():  # the paired gain is the difference of the means over the same 8 x 2 samples
        assert row["gold_gain_over_sft"] == pytest.approx(row["gold"] - table["sft"]["gold"], abs=1e-9)
        # Both standard errors come from the same per-prompt means, so std(a - b) lies between
        # |std(a) - std(b)| and std(a) + std(b) (Cauchy-Schwarz on their covariance).
        sft_stderr = table["sft"]["gold_stderr"]
        low, high = abs(row["gold_stderr"] - sft_stderr), row["gold_stderr"] + sft_stderr
        assert low - 1e-9 <= row["gold_gain_stderr"] <= high + 1e-9
    assert (tmp_path / "demo" / "reward_hacking.png").stat().st_size > 10_000
    report = (tmp_path / "demo" / "demo_table.md").read_text()
    assert "| policy | gold reward |" in report and "| habit (applies to) |" in report
    from rlhf.embedded.task import parse_instruction

    def kinds(name):
        return {parse_instruction(json.loads(line)["prompt"]).kind
                for line in (tmp_path / "demo" / "data" / name).read_text().splitlines()}

    assert kinds("sft_train.jsonl") == {"arithmetic", "list", "sentence", "yesno"}  # harmful left out
    assert "harmful" in kinds("rankings_policy.jsonl")


def test_demo_rejects_an_unknown_habit(tmp_path):
    result = rlhf("demo", "--output_dir", tmp_path / "demo", "--demonstration_habits", "hedges=0.3,sings=0.5", cwd=tmp_path)
    assert result.returncode != 0
    assert "demonstration_habits: 'sings=0.5' is not a known habit" in result.stderr


def test_demo_rejects_step_counts_it_cannot_run():
    from rlhf.config.base import ConfigError, config_from_dict
    from rlhf.pipeline.demo import DemoConfig

    with pytest.raises(ConfigError, match="sft_steps must be at least 1, got 0"):
        config_from_dict(DemoConfig, {"sft_steps": 0})
    with pytest.raises(ConfigError, match="best_of_n must be 0 or more, got -1"):
        config_from_dict(DemoConfig, {"best_of_n": -1})


def test_demo_rejects_an_unknown_demonstration_kind(tmp_path):
    result = rlhf("demo", "--output_dir", tmp_path / "demo", "--demonstration_kinds", "arithmetic,poems", cwd=tmp_path)
    assert result.returncode != 0
    assert "demonstration_kinds must be a comma-separated subset of arithmetic,list,sentence,yesno,harmful" in result.stderr
