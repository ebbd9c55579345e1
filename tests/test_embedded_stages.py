"""SFT and the reward model on the embedded task, from the shipped base model: held-out loss
falls, and the reward model ranks held-out comparisons clearly above chance."""

import pytest

from rlhf.config.base import config_from_dict
from rlhf.config.reward import RewardConfig
from rlhf.config.sft import SFTConfig
from rlhf.embedded import EMBEDDED_BASE_MODEL
from rlhf.embedded.task_data import generate_task_data
from rlhf.trainers import reward, sft


@pytest.fixture(scope="module")
def task_data(tmp_path_factory):
    return generate_task_data(tmp_path_factory.mktemp("task"), seed=0, num_demonstrations=400, num_rankings=300)


def test_sft_lowers_heldout_loss_on_the_embedded_task(task_data, tmp_path):
    summary = sft.run(config_from_dict(SFTConfig, {
        "model_name_or_path": EMBEDDED_BASE_MODEL, "train_file": str(task_data["sft_train"]),
        "eval_file": str(task_data["sft_test"]), "output_dir": str(tmp_path), "max_steps": 40,
        "per_device_train_batch_size": 16, "learning_rate": 1e-4, "warmup_ratio": 0.0, "disable_tqdm": True}))
    # the base model saw dialogues in pretraining, so the gain is modest but clear
    # (the demo's 300 steps: 0.994 -> 0.922)
    assert summary["eval/loss"] < summary["eval/loss_before"] - 0.03, summary


def test_reward_model_beats_chance_on_embedded_comparisons(task_data, tmp_path):
    eval_pairs = tmp_path / "heldout_pairs.jsonl"  # 600 of the held-out comparisons keep the test short
    eval_pairs.write_text("".join(task_data["comparisons_test"].read_text().splitlines(keepends=True)[:600]))
    summary = reward.run(config_from_dict(RewardConfig, {
        "model_name_or_path": EMBEDDED_BASE_MODEL, "train_file": str(task_data["rankings_train"]),
        "eval_file": str(eval_pairs), "output_dir": str(tmp_path), "max_steps": 60,
        "per_device_train_batch_size": 16, "learning_rate": 2e-4, "disable_tqdm": True, "stats_max_pairs": 16}))
    # held-out pairs come from noisy labelers (two of them agree on ~73%): the ceiling is well below 1
    assert summary["eval/accuracy"] > 0.5 + 3 * summary["eval/accuracy_stderr"], summary


def test_sft_samples_show_the_demonstration_habits(task_data, tmp_path):
    """A tiny SFT budget on habitual demonstrations already shows each habit far more often than
    the same budget on ideal demonstrations (the same prompts, the same writers without habits)."""
    import json

    import torch

    from rlhf.embedded.habits import habit_rates
    from rlhf.models.loading import load_causal_lm, load_tokenizer
    from rlhf.rollout.generation import SamplingParams, sample_responses

    prompts = [json.loads(line)["prompt"] for line in task_data["prompts_train"].read_text().splitlines()] * 3
    rates = {}
    for name in ("sft_train", "sft_ideal_train"):
        summary = sft.run(config_from_dict(SFTConfig, {
            "model_name_or_path": EMBEDDED_BASE_MODEL, "train_file": str(task_data[name]),
            "output_dir": str(tmp_path / name), "max_steps": 60, "per_device_train_batch_size": 16,
            "learning_rate": 5e-4, "disable_tqdm": True, "report_to": "none"}))
        tokenizer = load_tokenizer(summary["model"], padding_side="left")
        torch.manual_seed(0)
        responses, _ = sample_responses(load_causal_lm(summary["model"], tokenizer), tokenizer, prompts,
                                        SamplingParams(max_new_tokens=24, temperature=1.0), batch_size=128)
        rates[name] = {habit: stat["rate"] for habit, stat in habit_rates(prompts, responses).items()}
    habitual, ideal = rates["sft_train"], rates["sft_ideal_train"]
    for habit in ("complies_harmful", "declines_harmless", "hedges", "two_sentences"):  # the default habits
        assert habitual[habit] > ideal[habit] + 0.05, (habit, habitual, ideal)
