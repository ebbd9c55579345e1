"""Config: defaults < YAML < command line, unknown keys rejected, resolved config saved."""

import pytest
import yaml

from rlhf.config.base import ConfigError, parse_config, save_config
from rlhf.config.dpo import DPOConfig
from rlhf.config.ppo import PPOConfig
from rlhf.config.reward import RewardConfig
from rlhf.config.sft import SFTConfig
from rlhf.pipeline.pipeline import PipelineConfig, stage_configs


def test_yaml_then_command_line_override(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("train_file: demos.jsonl\nlearning_rate: 0.001\nmax_steps: 7\n")
    config = parse_config(SFTConfig, ["--config", str(path), "--learning_rate", "1e-5", "--model_name_or_path", "m"])
    assert config.train_file == "demos.jsonl"
    assert config.max_steps == 7  # from YAML
    assert config.learning_rate == 1e-5  # the flag wins over YAML
    assert config.per_device_train_batch_size == 8  # the dataclass default


def test_unknown_yaml_key_names_file_and_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train_file: d.jsonl\nlearnig_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown option\(s\) learnig_rate"):
        parse_config(SFTConfig, ["--config", str(path)])


def test_validate_messages():
    with pytest.raises(ConfigError, match="sft needs --train_file"):
        parse_config(SFTConfig, ["--model_name_or_path", "m"])
    with pytest.raises(ConfigError, match="model_name_or_path is required"):
        parse_config(SFTConfig, ["--train_file", "t"])
    with pytest.raises(ConfigError, match="exactly one of --reward_model_path and --reward_function"):
        parse_config(PPOConfig, ["--model_name_or_path", "m", "--prompts_file", "p"])
    with pytest.raises(ConfigError, match="rollout_batch_size .* multiple"):
        parse_config(PPOConfig, ["--model_name_or_path", "m", "--prompts_file", "p", "--reward_function", "a:b",
                                 "--rollout_batch_size", "10", "--per_device_train_batch_size", "4"])
    with pytest.raises(ConfigError, match="label_smoothing applies to the sigmoid loss only"):
        parse_config(DPOConfig, ["--model_name_or_path", "m", "--train_file", "t", "--loss_type", "ipo",
                                 "--label_smoothing", "0.1"])
    with pytest.raises(ConfigError, match="optim must be adamw_torch_fused or adamw_torch, got 'sgd'"):
        parse_config(SFTConfig, ["--model_name_or_path", "m", "--train_file", "t", "--optim", "sgd"])
    with pytest.raises(ConfigError, match="labeler_weights: expected name=weight"):
        parse_config(RewardConfig, ["--model_name_or_path", "m", "--train_file", "t", "--labeler_weights", "alice"])


def test_labeler_weights_parse():
    config = parse_config(RewardConfig, ["--model_name_or_path", "m", "--train_file", "t",
                                         "--labeler_weights", "alice=0.5, bob=2"])
    assert config.parsed_labeler_weights() == {"alice": 0.5, "bob": 2.0}


def test_the_command_defaults_the_model_to_the_embedded_one_not_the_config():
    from rlhf.cli.main import _default_model
    from rlhf.embedded import EMBEDDED_BASE_MODEL
    from rlhf.pipeline.pipeline import PipelineConfig

    assert SFTConfig.__dataclass_fields__["model_name_or_path"].default == ""
    assert _default_model(SFTConfig) == {"model_name_or_path": EMBEDDED_BASE_MODEL}
    assert _default_model(PipelineConfig) == {}  # the pipeline names its base model itself
    config = parse_config(SFTConfig, ["--train_file", "t"], defaults=_default_model(SFTConfig))
    assert config.model_name_or_path == EMBEDDED_BASE_MODEL


def test_saved_config_round_trips(tmp_path):
    config = parse_config(SFTConfig, ["--model_name_or_path", "m", "--train_file", "d.jsonl", "--seed", "3"])
    path = save_config(config, tmp_path)
    assert yaml.safe_load(path.read_text())["seed"] == 3
    again = parse_config(SFTConfig, ["--config", str(path)])
    assert again == config


def test_pipeline_chains_stage_outputs(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({
        "model_name_or_path": "/models/base", "output_dir": str(tmp_path / "out"), "stages": "ppo,sft,rm",
        "sft": {"train_file": "demos.jsonl"}, "rm": {"train_file": "pairs.jsonl", "learning_rate": 1e-5},
        "ppo": {"prompts_file": "prompts.jsonl", "max_steps": 3},
    }))
    stages = dict(stage_configs(parse_config(PipelineConfig, ["--config", str(path)])))
    assert list(stages) == ["sft", "rm", "ppo"]  # pipeline order, whatever the order given
    assert stages["sft"].model_name_or_path == "/models/base"
    assert stages["rm"].model_name_or_path == str(tmp_path / "out" / "sft" / "model")
    assert stages["rm"].learning_rate == 1e-5
    assert stages["ppo"].model_name_or_path == str(tmp_path / "out" / "sft" / "model")
    assert stages["ppo"].reward_model_path == str(tmp_path / "out" / "rm" / "model")
    assert stages["ppo"].output_dir == str(tmp_path / "out" / "ppo")


def test_cli_help_lists_options_and_defaults(capsys):
    from rlhf.cli.main import main

    assert main(["--help"]) == 0
    assert "ppo" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["ppo", "--help"])
    out = capsys.readouterr().out
    assert "--kl_coef" in out and "(default: 0.05)" in out


def test_unknown_flag_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown option\\(s\\) --learnig_rate 3"):
        parse_config(SFTConfig, ["--train_file", "d.jsonl", "--learnig_rate", "3"])


def test_ppo_reward_aggregation_is_checked():
    base = ["--model_name_or_path", "m", "--prompts_file", "p.jsonl", "--reward_model_path", "rm1,rm2"]
    config = parse_config(PPOConfig, base + ["--reward_aggregation", "mean_minus_std", "--reward_uncertainty_coef", "0.5"])
    assert (config.reward_aggregation, config.reward_uncertainty_coef) == ("mean_minus_std", 0.5)
    with pytest.raises(ConfigError, match="reward_aggregation must be mean, min or mean_minus_std, got 'max'"):
        parse_config(PPOConfig, base + ["--reward_aggregation", "max"])
    with pytest.raises(ConfigError, match="reward_uncertainty_coef must be >= 0, got -1.0"):
        parse_config(PPOConfig, base + ["--reward_uncertainty_coef", "-1"])
