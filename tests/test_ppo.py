"""PPO's options, each checked on what it must do: the shared value head learns the returns,
adaptive KL moves beta toward the target, whiten_rewards whitens, rm_stats uses the reward
model's statistics."""

import json
import math
import warnings
from pathlib import Path

import pytest
import torch

from ppo_fixtures import ppo_config, scored_rollout
from rlhf.config.base import ConfigError, parse_config
from rlhf.config.ppo import PPOConfig
from rlhf.rl_math import RunningMoments, masked_mean, masked_var
from rlhf.trainers import ppo

TESTS = Path(__file__).parent


def metrics(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def run_ppo(tiny_model_dir, toy_data, out, *extra):
    config = parse_config(PPOConfig, [
        "--model_name_or_path", str(tiny_model_dir), "--prompts_file", str(toy_data["prompts"]), "--output_dir", str(out),
        "--max_steps", "3", "--rollout_batch_size", "8", "--per_device_train_batch_size", "8", "--ppo_epochs", "2",
        "--max_new_tokens", "6", "--learning_rate", "3e-3", "--disable_tqdm", "true", "--report_to", "none",
        *map(str, extra)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ppo.run(config), [m for m in metrics(out) if "objective/kl" in m]


def test_shared_value_head_learns_the_returns(tiny_model_dir, toy_data):
    """Updates on one rollout bring the head's values to the GAE returns: the value loss falls
    several-fold (a head that gets no gradient, or reads the wrong hidden state, would not)."""
    from rlhf.trainers.optim import NonFiniteGuard, make_optimizer, make_scheduler
    from rlhf.trainers.ppo import make_experience, ppo_update

    config = ppo_config(tiny_model_dir, toy_data, "--vf_coef", 1, "--cliprange_value", 1000, "--ppo_epochs", 1,
                        "--learning_rate", "3e-3")
    model, reward, samples, accelerator = scored_rollout(tiny_model_dir, toy_data, config)
    assert model.value_head is not None and model.value_model is None
    exp = make_experience(model, samples, config.kl_coef, RunningMoments(), reward, config, accelerator)
    assert exp.old_values.shape == exp.returns.shape == samples.rollout.response_mask.shape
    head_before = model.value_head.weight.detach().clone()
    optimizer = make_optimizer(model.parameters(), config)
    scheduler = make_scheduler(optimizer, config, 15)
    losses = [ppo_update(model, optimizer, scheduler, exp, config, accelerator, NonFiniteGuard(), step)["loss/value"].item()
              for step in range(15)]
    assert all(math.isfinite(x) for x in losses)
    assert sum(losses[-3:]) / 3 < 0.25 * losses[0], losses
    assert not torch.equal(model.value_head.weight.detach(), head_before)


def test_ppo_runs_with_the_shared_value_head(tiny_model_dir, toy_data, tmp_path):
    summary, rows = run_ppo(tiny_model_dir, toy_data, tmp_path, "--reward_function",
                            "reward_functions:target_char_rate", "--value_model", "shared")
    assert len(rows) == 3
    for row in rows:
        assert all(math.isfinite(v) for v in row.values() if isinstance(v, float)), row
    assert rows[0]["val/explained_var"] != rows[-1]["val/explained_var"]  # the values changed
    assert (tmp_path / "model" / "model.safetensors").is_file()
    assert not (tmp_path / "value_model").exists()  # the head is part of the policy run, not a model to save


@pytest.mark.parametrize("target_kl, direction", [(1e-3, 1), (1e3, -1)])
def test_adaptive_kl_moves_beta_toward_the_target(target_kl, direction, tiny_model_dir, toy_data, tmp_path):
    """beta_t+1 = beta_t * (1 + clip(KL_t / target - 1, -0.2, 0.2) * n / horizon), with the KL each
    step measured; a KL above the target raises beta, below it lowers it."""
    horizon = 8  # = n (rollouts per step): each step moves beta by up to 20%
    summary, rows = run_ppo(tiny_model_dir, toy_data, tmp_path, "--reward_function",
                            "reward_functions:target_char_rate", "--adaptive_kl", "true", "--kl_coef", 0.1, "--value_model", "shared",
                            "--target_kl", target_kl, "--kl_horizon", horizon, "--kl_estimator", "k3")
    # k3 is >= 0 per token: after the first update the KL is above 1e-3 every step (k1's batch mean
    # of 8 samples can come out negative, which would move beta the other way, correctly).
    betas = [row["objective/kl_coef"] for row in rows] + [summary["final_kl_coef"]]
    assert betas[0] == pytest.approx(0.1)
    for row, beta, next_beta in zip(rows, betas, betas[1:]):
        error = min(max(row["objective/kl"] / target_kl - 1, -0.2), 0.2)
        assert next_beta == pytest.approx(beta * (1 + error * 8 / horizon), rel=1e-5)
    if direction > 0:  # the policy moves away from the reference: KL far above 1e-3 after the first update
        assert all(row["objective/kl"] > 1.2e-3 for row in rows[1:])
        assert betas[-1] == pytest.approx(betas[1] * 1.2 ** 2, rel=1e-5) and betas[-1] > betas[0]
    else:  # KL far below 1000: beta falls by 20% every step
        assert betas[-1] == pytest.approx(0.1 * 0.8 ** 3, rel=1e-5)


def test_whiten_rewards_gives_unit_variance_and_keeps_the_mean(tiny_model_dir, toy_data, monkeypatch):
    from rlhf.trainers.ppo import make_experience

    config = ppo_config(tiny_model_dir, toy_data, "--kl_coef", 0.05)
    model, reward, samples, accelerator = scored_rollout(tiny_model_dir, toy_data, config)
    mask = samples.rollout.response_mask.float()
    gae_rewards, exps = [], {}
    gae = ppo.gae

    def spy(rewards, *args):  # the per-token rewards that go into GAE
        gae_rewards.append(rewards)
        return gae(rewards, *args)

    monkeypatch.setattr(ppo, "gae", spy)
    for whiten in (False, True):
        config.whiten_rewards = whiten
        exps[whiten] = make_experience(model, samples, config.kl_coef, RunningMoments(), reward, config, accelerator)
    raw, whitened = gae_rewards  # (B, R) without and with whitening
    assert abs(masked_var(raw, mask).item() - 1) > 0.1  # not already white...
    assert masked_var(whitened, mask).item() == pytest.approx(1.0, abs=1e-3)  # ...whitened: variance 1
    assert masked_mean(whitened, mask).item() == pytest.approx(masked_mean(raw, mask).item(), abs=1e-5)  # mean kept
    assert torch.equal(whitened * (1 - mask), torch.zeros_like(whitened))  # padding stays 0
    assert not torch.allclose(exps[False].returns, exps[True].returns)


def test_rm_stats_normalises_with_the_reward_models_saved_statistics(tiny_model_dir, toy_data, tmp_path):
    """End to end with a reward model whose reward_stats.json says mean 0.3, std 0.5: each step's
    normalised score is (score - 0.3) / 0.5 (no clipping)."""
    from rlhf.models.loading import load_tokenizer
    from rlhf.models.scalar_model import REWARD_STATS_FILE, ScalarModel

    rm_dir = tmp_path / "rm"
    tokenizer = load_tokenizer(str(tiny_model_dir))
    torch.manual_seed(0)
    ScalarModel.from_pretrained(str(tiny_model_dir), tokenizer, allow_new_head=True).save_pretrained(rm_dir)
    tokenizer.save_pretrained(rm_dir)
    (rm_dir / REWARD_STATS_FILE).write_text(json.dumps({"mean": 0.3, "std": 0.5, "count": 10}))
    _, rows = run_ppo(tiny_model_dir, toy_data, tmp_path / "run", "--reward_model_path", rm_dir,
                      "--reward_normalization", "rm_stats", "--reward_clip", 0, "--max_steps", 2, "--value_model", "shared")
    assert len(rows) == 2
    for row in rows:
        assert row["objective/scores_normalized"] == pytest.approx((row["objective/scores"] - 0.3) / 0.5, abs=1e-5)
        assert row["objective/scores"] != pytest.approx(row["objective/scores_normalized"], abs=1e-3)
    (rm_dir / REWARD_STATS_FILE).unlink()
    with pytest.raises(ConfigError, match="rm_stats: the reward model has no saved reward_stats.json"):
        run_ppo(tiny_model_dir, toy_data, tmp_path / "nostats", "--reward_model_path", rm_dir,
                "--reward_normalization", "rm_stats", "--max_steps", 1, "--value_model", "shared")
    assert not (tmp_path / "nostats").exists()  # refused before anything loaded or was written
