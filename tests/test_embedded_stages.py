"""SFT and the reward model on the embedded task, from the shipped base model: held-out loss
falls, and the reward model ranks held-out comparisons clearly above chance."""

import pytest

from rlhf.config.base import config_from_dict
from rlhf.config.reward import RewardConfig
from rlhf.config.sft import SFTConfig
from rlhf.embedded import EMBEDDED_BASE_MODEL
from rlhf.feedback.labelers import generate_task_data
from rlhf.trainers import reward, sft


@pytest.fixture(scope="module")
def task_data(tmp_path_factory):
    return generate_task_data(tmp_path_factory.mktemp("task"), seed=0, num_demonstrations=400, num_rankings=300)


def test_sft_lowers_heldout_loss_on_the_embedded_task(task_data, tmp_path):
    summary = sft.run(config_from_dict(SFTConfig, {
        "model_name_or_path": EMBEDDED_BASE_MODEL, "train_file": str(task_data["sft_train"]),
        "eval_file": str(task_data["sft_test"]), "output_dir": str(tmp_path), "max_steps": 25,
        "per_device_train_batch_size": 16, "learning_rate": 5e-4, "disable_tqdm": True}))
    # the base model has seen the format in pretraining; demonstrations still teach it a lot
    assert summary["eval/loss"] < 0.8 * summary["eval/loss_before"], summary


def test_reward_model_beats_chance_on_embedded_comparisons(task_data, tmp_path):
    summary = reward.run(config_from_dict(RewardConfig, {
        "model_name_or_path": EMBEDDED_BASE_MODEL, "train_file": str(task_data["rankings_train"]),
        "eval_file": str(task_data["comparisons_test"]), "output_dir": str(tmp_path), "max_steps": 60,
        "per_device_train_batch_size": 16, "learning_rate": 2e-4, "disable_tqdm": True, "stats_max_pairs": 64}))
    # 2 standard errors above chance, and clearly so in absolute terms
    assert summary["eval/accuracy"] > 0.5 + 2 * summary["eval/accuracy_stderr"]
    assert summary["eval/accuracy"] > 0.65, summary
