"""The over-optimisation study: its curves and agreement statistics on hand-computed values, its
options' checks, and ``rlhf overopt`` end to end on a tiny model, resumed stage by stage."""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rlhf.config.base import parse_config
from rlhf.errors import UserError
from rlhf.evaluation.overopt import bon_curve, fit_curve, pairwise_agreement, powers_of_two, rl_curve

TESTS = Path(__file__).parent


def test_pairwise_agreement_by_hand():
    # pairs (0,1): gold 1 < 3, proxy 1 < 2 agree; (0,2): 1 < 2 and 1 < 3 agree; (1,2): gold 3 > 2, proxy 2 < 3: 2/3
    assert pairwise_agreement(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[1.0, 3.0, 2.0]])) == pytest.approx(2 / 3)
    # a gold tie is no pair: (0,2) and (1,2) agree -> 2/2
    assert pairwise_agreement(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[1.0, 1.0, 2.0]])) == 1.0
    # a proxy tie is half right: (0,1) 0.5, (0,2) 1, (1,2) 1 -> 2.5/3
    assert pairwise_agreement(torch.tensor([[1.0, 1.0, 3.0]]), torch.tensor([[1.0, 2.0, 3.0]])) == pytest.approx(2.5 / 3)
    # pairs never cross prompts: two prompts, one pair each, one right one wrong -> 1/2
    assert pairwise_agreement(torch.tensor([[1.0, 2.0], [1.0, 2.0]]), torch.tensor([[0.0, 1.0], [1.0, 0.0]])) == 0.5


def test_bon_curve_by_hand():
    proxy, gold = torch.tensor([[0.1, 0.5, 0.3, 0.2]]), torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    points = bon_curve(proxy, gold, powers_of_two(4))
    assert [p["n"] for p in points] == [1, 2, 4]
    assert points[0] == {"n": 1, "kl": 0.0, "d": 0.0, "proxy": pytest.approx(0.275), "gold": pytest.approx(2.5)}
    # n = 2: KL = log 2 - 1/2 = 0.193147, d = 0.439485; sorted by proxy the golds are [1, 4, 3, 2] and
    # the weights C(i-1, 1) / C(4, 2) = 0, 1/6, 2/6, 3/6: gold = 4/6 + 6/6 + 6/6 = 2.666667
    assert points[1]["kl"] == pytest.approx(0.193147, abs=1e-6) and points[1]["d"] == pytest.approx(0.439485, abs=1e-6)
    assert points[1]["gold"] == pytest.approx(8 / 3)
    assert points[2]["gold"] == pytest.approx(2.0) and points[2]["proxy"] == pytest.approx(0.5)  # the proxy's top


def test_rl_curve_starts_at_the_initial_policy_and_reads_evaluations():
    metrics = [{"step": 1, "objective/kl": 0.5}, {"step": 10, "eval/kl": -0.01, "eval/score": 0.1, "eval/gold": 0.5},
               {"step": 20, "eval/kl": 4.0, "eval/score": 0.9, "eval/gold": 0.6}]
    points = rl_curve(metrics, {"kl": 0.001, "score": 0.0, "gold": 0.45})
    assert [p["step"] for p in points] == [0, 10, 20]  # training lines without eval/ are not points
    assert points[1]["d"] == 0.0 and points[2]["d"] == 2.0  # a negative KL estimate counts as 0; sqrt(4) = 2
    # the fit is of gold - initial gold (0.05 and 0.15 at d = 0 and 2): only d > 0 points count -> too few
    assert fit_curve(points, "rl") is None
    points.append({"step": 30, "kl": 9.0, "d": 3.0, "proxy": 1.0, "gold": 0.40})
    fit = fit_curve(points, "rl")  # through (2, 0.15) and (3, -0.05) exactly
    assert fit["points"] == 2 and fit["residual_std"] == 0.0
    assert fit["alpha"] * 2 - fit["beta"] * 2 * math.log(2) == pytest.approx(0.15)
    assert fit["alpha"] * 3 - fit["beta"] * 3 * math.log(3) == pytest.approx(-0.05)


@pytest.mark.parametrize("args,message", [
    (["--ppo_proxy", "pool_50"], "ppo_proxy 'pool_50' is not one of the proxies pool_200, pool_800, gold_flip_200, "
                                 "gold_flip_800"),
    (["--bon_max_n", "100"], "bon_max_n must be a power of two, got 100"),
    (["--label_sources", "pool,people"], "label_sources must be a comma-separated subset of pool,gold_flip"),
    (["--data_amounts", "300,5000"], "data_amounts must be between 1 and num_rankings (1200)"),
    (["--flip_rate", "0.5"], "flip_rate must be in [0, 0.5), got 0.5"),
    (["--ensemble_aggregations", "max"], "ensemble_aggregations must be a subset of min,mean_minus_std"),
])
def test_overopt_options_are_checked(args, message):
    from rlhf.pipeline.overopt import OveroptConfig

    with pytest.raises(UserError) as error:
        parse_config(OveroptConfig, args)
    assert message in str(error.value)


def rlhf(*args, cwd):
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    return subprocess.run([sys.executable, "-m", "rlhf", *map(str, args), "--disable_tqdm", "true"], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_overopt_runs_end_to_end_and_resumes_by_stage(tiny_demo_model_dir, tmp_path):
    out = tmp_path / "study"
    args = ["overopt", "--model_name_or_path", tiny_demo_model_dir, "--output_dir", out, "--num_demonstrations", 64,
            "--num_rankings", 32, "--sft_steps", 3, "--data_amounts", "16,32", "--rm_epochs", 0.1,
            "--ensemble_size", 2, "--bon_prompts", 2, "--bon_max_n", 8, "--ppo_proxy", "pool_32", "--ppo_steps", 2,
            "--eval_every", 1, "--eval_prompts", 8, "--ppo_rollout_batch_size", 8, "--max_new_tokens", 8]
    first = rlhf(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    results = json.loads((out / "overopt_results.json").read_text())
    assert set(results["proxies"]) == {"pool_16", "pool_32", "gold_flip_16", "gold_flip_32", "pool_32_seed1"}
    assert set(results["best_of_n"]["curves"]) == {"pool_16", "pool_32", "gold_flip_16", "gold_flip_32",
                                                   "ensemble min", "ensemble mean_minus_std"}
    curve = results["best_of_n"]["curves"]["pool_32"]
    assert [p["n"] for p in curve] == [1, 2, 4, 8] and curve[3]["kl"] == pytest.approx(math.log(8) - 7 / 8)
    assert set(results["rl"]) == {"beta=0", "beta=0.05", "min ensemble, beta=0", "mean_minus_std ensemble, beta=0"}
    for run in results["rl"].values():
        assert [p["step"] for p in run["curve"]] == [0, 1, 2]  # the initial policy, then every eval_every steps
    assert "PPO: beta=0" in results["fits"] and "best-of-n: pool_16" in results["fits"]
    assert (out / "overopt.png").stat().st_size > 10_000
    # 25% of the gold labeler's pairs are flipped: about a quarter of 32 rankings x up to 6 pairs
    pairs = [json.loads(line) for line in (out / "data" / "comparisons_gold_flip.jsonl").read_text().splitlines()]
    from rlhf.embedded.gold import gold_reward

    flipped = sum(gold_reward(p["prompt"], p["chosen"], True) < gold_reward(p["prompt"], p["rejected"], True)
                  for p in pairs)
    assert 0.1 < flipped / len(pairs) < 0.4

    refused = rlhf(*args, cwd=tmp_path)
    assert refused.returncode == 1 and "already holds a study: pass --resume" in refused.stderr
    # Lose the best-of-n samples and one PPO run: --resume skips every finished stage and redoes those two,
    # with the same numbers.
    (out / "bon" / "scores.json").unlink()
    shutil.rmtree(out / "ppo" / "beta0.05")
    again = rlhf(*args, "--resume", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("already finished") == 1 + 5 + 3  # SFT, five reward models, three PPO runs
    resumed = json.loads((out / "overopt_results.json").read_text())
    assert resumed["best_of_n"]["curves"] == results["best_of_n"]["curves"]
    for point, before in zip(resumed["rl"]["beta=0.05"]["curve"], results["rl"]["beta=0.05"]["curve"]):
        assert point == pytest.approx(before)
