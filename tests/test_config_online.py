"""`rlhf ppo` and `rlhf grpo` share one declaration of the options they mean alike (OnlineRLConfig):
same defaults, same help, same error for the same bad value; a saved config.yaml is read by name,
so the new order of its keys does not stop a run from resuming."""

import dataclasses
import re

import pytest
import yaml

from rlhf.config.base import ConfigError, TrainingConfig, parse_config, save_config
from rlhf.config.grpo import GRPOConfig
from rlhf.config.monitors import MonitorOptions
from rlhf.config.online import OnlineRLConfig, with_help
from rlhf.config.ppo import PPOConfig
from rlhf.trainers.resume import check_resume_config

ARGS = ["--model_name_or_path", "m", "--prompts_file", "p.jsonl", "--reward_function", "a:b", "--report_to", "none"]
# Options a stage words in its own terms ("PPO steps"); their default is still the base's.
REWORDED = {PPOConfig: {"max_steps", "learning_rate", "logging_steps", "eval_steps"}, GRPOConfig: {"skip_bad_rewards"}}


def fields_of(cls) -> dict:
    return {f.name: f for f in dataclasses.fields(cls)}


@pytest.mark.parametrize("stage", [PPOConfig, GRPOConfig])
def test_the_shared_options_are_declared_once_in_the_base(stage):
    online, own = fields_of(OnlineRLConfig), fields_of(stage)
    shared = set(OnlineRLConfig.__annotations__) - {"command"}
    assert {"prompts_file", "temperature", "max_new_tokens", "skip_bad_rewards", "gold_reward_function"} <= shared
    # A stage re-declares only what it rewords; one more copy in ppo.py or grpo.py could drift from the other.
    assert shared & set(stage.__annotations__) == REWORDED[stage]
    for name in shared:
        assert own[name].default == online[name].default, name
        if name not in REWORDED[stage]:
            assert own[name].metadata["help"] == online[name].metadata["help"], name


def test_both_stages_keep_the_training_and_monitor_options():
    inherited = {f.name for f in dataclasses.fields(TrainingConfig)} | {f.name for f in dataclasses.fields(MonitorOptions)}
    assert inherited <= set(fields_of(PPOConfig)) and inherited <= set(fields_of(GRPOConfig))


def test_with_help_changes_the_wording_only():
    reworded = with_help("max_steps", "PPO steps (rollout + optimisation) to run.")
    assert (reworded.default, reworded.metadata["help"]) == (100, "PPO steps (rollout + optimisation) to run.")
    assert PPOConfig().max_steps == GRPOConfig().max_steps == OnlineRLConfig().max_steps == 100
    assert fields_of(GRPOConfig)["skip_bad_rewards"].metadata["help"].startswith(
        fields_of(PPOConfig)["skip_bad_rewards"].metadata["help"] + " In GRPO the skipped score's place")


@pytest.mark.parametrize("extra, message", [
    (["--min_new_tokens", "49"], "min_new_tokens must be between 0 and max_new_tokens (48), got 49"),
    (["--min_new_tokens", "-1"], "min_new_tokens must be between 0 and max_new_tokens (48), got -1"),
    (["--temperature", "0"], "temperature must be > 0 (log-probs are taken at the sampling temperature)"),
    (["--prompt_truncation", "middle"], "prompt_truncation must be one of keep_head, left, skip, got 'middle'"),
    (["--prompt_field", ""], "prompt_field must name a field of the data records, got an empty name"),
    (["--prompts_file", ""], "{command} needs --prompts_file"),
    (["--model_name_or_path", ""], "model_name_or_path is required: a local folder of a model in save_pretrained format"),
])
@pytest.mark.parametrize("stage", [PPOConfig, GRPOConfig])
def test_a_bad_shared_option_gets_the_same_message_from_both_commands(stage, extra, message):
    with pytest.raises(ConfigError, match="^" + re.escape(message.format(command=stage.command)) + "$"):
        parse_config(stage, ARGS + extra)


@pytest.mark.parametrize("stage", [PPOConfig, GRPOConfig])
def test_a_saved_config_with_its_keys_in_another_order_still_resumes(stage, tmp_path):
    """Runs saved before the base class existed list their options in another order: resume reads
    config.yaml by name, and `--config` of it gives the same config back."""
    config = parse_config(stage, ARGS + ["--output_dir", str(tmp_path), "--temperature", "0.7"])
    saved = yaml.safe_load(save_config(config, tmp_path).read_text())
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(dict(reversed(list(saved.items()))), sort_keys=False))
    config.resume = "latest"
    check_resume_config(config, tmp_path)  # raises ConfigError naming any option that differs
    again = parse_config(stage, ["--config", str(tmp_path / "config.yaml")])
    assert dataclasses.asdict(again) == dataclasses.asdict(config) | {"resume": ""}
    config.temperature = 0.9
    with pytest.raises(ConfigError, match=r"options differ from the run .*: temperature 0\.7 -> 0\.9\."):
        check_resume_config(config, tmp_path)
