"""Each stage trains for real on a tiny model: losses fall, rewards rise, outputs are complete."""

import json
import warnings
from pathlib import Path

import pytest

from rlhf.config.base import ConfigError, parse_config
from rlhf.config.dpo import DPOConfig
from rlhf.config.ppo import PPOConfig
from rlhf.config.reward import RewardConfig
from rlhf.config.sft import SFTConfig
from rlhf.trainers import dpo, ppo, reward, sft

TESTS = Path(__file__).parent


def metrics(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def test_sft_lowers_heldout_loss_and_writes_outputs(tiny_model_dir, toy_data, tmp_path):
    config = parse_config(SFTConfig, ["--model_name_or_path", str(tiny_model_dir), "--train_file", str(toy_data["demos"]),
                                      "--output_dir", str(tmp_path), "--eval_fraction", "0.2", "--max_steps", "30",
                                      "--learning_rate", "3e-3", "--disable_tqdm", "true", "--logging_steps", "10"])
    summary = sft.run(config)
    assert summary["eval/loss"] < summary["eval/loss_before"] - 1.0
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "model/model.safetensors", "model/tokenizer.json",
                 "model/rlhf_training.json"):
        assert (tmp_path / name).is_file(), name
    assert any((tmp_path / "tensorboard").iterdir())
    assert [m["step"] for m in metrics(tmp_path) if "loss/sft" in m] == [10, 20, 30]


def test_reward_model_learns_preference_and_saves_stats(tiny_model_dir, toy_data, tmp_path):
    config = parse_config(RewardConfig, [
        "--model_name_or_path", str(tiny_model_dir), "--train_file", str(toy_data["pairs"]), "--output_dir", str(tmp_path),
        "--max_steps", "20", "--learning_rate", "3e-3", "--center_rewards_coefficient", "0.01",
        "--labeler_weights", "l0=0.5", "--disable_tqdm", "true"])
    with pytest.warns(UserWarning, match="not an `rlhf sft` checkpoint"):
        summary = reward.run(config)
    assert summary["eval/accuracy"] > 0.95
    assert summary["eval/margin"] > 0.5
    assert sum(row["count"] for row in summary["calibration"]) == summary["eval_pairs"]
    stats = json.loads((tmp_path / "model" / "reward_stats.json").read_text())
    assert stats["std"] > 0 and stats["count"] == 2 * summary["train_pairs"]


def test_ppo_raises_a_programmatic_reward(tiny_model_dir, toy_data, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))
    policy_stats = []  # clipfrac, approx_kl, ratio of every micro-batch, in order
    policy_loss = ppo.ppo_policy_loss
    monkeypatch.setattr(ppo, "ppo_policy_loss", lambda *a: policy_stats.append(policy_loss(*a)[1]) or policy_loss(*a))
    config = parse_config(PPOConfig, [
        "--model_name_or_path", str(tiny_model_dir), "--reward_function", "reward_functions:target_char_rate",
        "--prompts_file", str(toy_data["prompts"]), "--output_dir", str(tmp_path), "--max_steps", "12",
        "--rollout_batch_size", "32", "--per_device_train_batch_size", "8", "--max_new_tokens", "8",
        "--learning_rate", "3e-3", "--kl_coef", "0.01", "--reward_normalization", "running", "--disable_tqdm", "true"])
    with pytest.warns(UserWarning, match="skipped SFT"):
        ppo.run(config)
    scores = [m["objective/scores"] for m in metrics(tmp_path)]
    assert len(scores) == 12
    start, end = sum(scores[:2]) / 2, sum(scores[-3:]) / 3
    assert end > start + 0.15 and end > 2 * start, scores
    # The first minibatch of each step is on-policy (pi = pi_old up to the sampler's ~1e-5 rounding):
    # ratio 1, nothing clipped, approx_kl 0. Later minibatches follow an updated policy.
    per_step = len(policy_stats) // 12  # ppo_epochs x minibatches = 4 x 4
    assert per_step == 16
    for first in policy_stats[::per_step]:
        assert first["clipfrac"].item() == 0 and first["ratio"].item() == pytest.approx(1, abs=1e-4)
        assert abs(first["approx_kl"].item()) < 1e-7
    assert max(s["approx_kl"].item() for s in policy_stats) > 1e-4
    assert max(s["clipfrac"].item() for s in policy_stats) > 0
    assert (tmp_path / "model" / "model.safetensors").is_file()


def test_dpo_precomputed_reference_equals_live_and_learns(tiny_model_dir, toy_data, tmp_path):
    runs = {}
    for precompute in ("false", "true"):
        out = tmp_path / precompute
        config = parse_config(DPOConfig, [
            "--model_name_or_path", str(tiny_model_dir), "--train_file", str(toy_data["pairs"]), "--output_dir", str(out),
            "--eval_file", str(toy_data["pairs"]), "--max_steps", "12", "--learning_rate", "2e-3", "--beta", "0.5",
            "--precompute_ref_log_probs", precompute, "--logging_steps", "1", "--disable_tqdm", "true"])
        runs[precompute] = (dpo.run(config), metrics(out))
    live, pre = runs["false"], runs["true"]
    for a, b in zip(live[1], pre[1]):
        assert a.get("loss/dpo") == pytest.approx(b.get("loss/dpo"), abs=1e-5)
    assert live[1][0]["loss/dpo"] == pytest.approx(0.6931, abs=1e-3)  # log 2: policy == reference at step 1
    assert live[0]["eval/accuracy"] > 0.9  # implicit reward ranks the training pairs
    assert live[0]["eval/loss"] < 0.6


@pytest.mark.parametrize("variant", [["--loss_type", "ipo"], ["--loss_type", "hinge"], ["--label_smoothing", "0.1"]])
def test_dpo_variants_train(tiny_model_dir, toy_data, tmp_path, variant):
    config = parse_config(DPOConfig, [
        "--model_name_or_path", str(tiny_model_dir), "--train_file", str(toy_data["pairs"]), "--output_dir", str(tmp_path),
        "--eval_file", str(toy_data["pairs"]), "--max_steps", "8", "--learning_rate", "2e-3", "--beta", "0.5",
        "--disable_tqdm", "true", *variant])
    assert dpo.run(config)["eval/accuracy"] > 0.9


def test_fused_and_per_tensor_adamw_take_the_same_steps():
    import torch

    from rlhf.trainers.optim import make_optimizer

    torch.manual_seed(0)
    start = [torch.randn(7, 5), torch.randn(5)]
    results = {}
    for optim in ("adamw_torch_fused", "adamw_torch"):
        config = parse_config(SFTConfig, ["--model_name_or_path", "m", "--train_file", "t", "--optim", optim,
                                          "--weight_decay", "0.1", "--learning_rate", "0.01"])
        params = [torch.nn.Parameter(p.clone()) for p in start]
        optimizer = make_optimizer(params, config)
        assert optimizer.defaults["fused"] is (optim == "adamw_torch_fused")
        for step in range(3):
            for p in params:
                p.grad = torch.sin(p.detach() * (step + 1))
            optimizer.step()
        results[optim] = params
    for fused, plain, begin in zip(results["adamw_torch_fused"], results["adamw_torch"], start):
        assert (fused - begin).abs().max() > 0.01  # the steps moved the weights...
        torch.testing.assert_close(fused, plain)  # ...identically up to rounding


def test_ppo_min_new_tokens_gives_fixed_length_responses(tiny_model_dir, toy_data, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))
    common = ["--model_name_or_path", str(tiny_model_dir), "--reward_function", "reward_functions:target_char_rate",
              "--prompts_file", str(toy_data["prompts"]), "--max_steps", "2", "--rollout_batch_size", "32",
              "--per_device_train_batch_size", "16", "--max_new_tokens", "16", "--disable_tqdm", "true",
              "--report_to", "none"]
    with pytest.raises(ConfigError, match="min_new_tokens must be between 0 and max_new_tokens \\(16\\), got 17"):
        parse_config(PPOConfig, [*common, "--output_dir", str(tmp_path), "--min_new_tokens", "17"])
    lengths = {}
    for min_new_tokens in (0, 16):
        out = tmp_path / str(min_new_tokens)
        with pytest.warns(UserWarning, match="skipped SFT"):
            ppo.run(parse_config(PPOConfig, [*common, "--output_dir", str(out), "--min_new_tokens", str(min_new_tokens)]))
        lengths[min_new_tokens] = [m["response/length"] for m in metrics(out) if "response/length" in m]
    assert min(lengths[0]) < 16  # left free, some responses end early (the mean is below the maximum)...
    assert lengths[16] == [16.0, 16.0]  # ...held to the minimum, none does


def test_ppo_with_lora_trains_adapters_only_against_the_adapter_free_reference(tiny_model_dir, toy_data, tmp_path,
                                                                             monkeypatch):
    """--use_peft: the reward still rises; only low-rank deltas reach the weights (the merged
    policy differs from the start by a rank <= r matrix per adapted layer); the reference is
    the starting policy (KL 0 at the first step) with no second model loaded."""
    import torch
    from transformers import AutoModelForCausalLM

    import rlhf.trainers.online as online_module

    monkeypatch.syspath_prepend(str(TESTS))
    loads = []
    load_causal_lm = online_module.load_causal_lm
    monkeypatch.setattr(online_module, "load_causal_lm", lambda *a, **k: loads.append(a[0]) or load_causal_lm(*a, **k))
    config = parse_config(PPOConfig, [
        "--model_name_or_path", str(tiny_model_dir), "--reward_function", "reward_functions:target_char_rate",
        "--prompts_file", str(toy_data["prompts"]), "--output_dir", str(tmp_path), "--max_steps", "12",
        "--rollout_batch_size", "32", "--per_device_train_batch_size", "8", "--max_new_tokens", "8",
        "--learning_rate", "1e-2", "--kl_coef", "0.01", "--reward_normalization", "running", "--disable_tqdm", "true",
        "--report_to", "none", "--use_peft", "true", "--lora_r", "8", "--lora_alpha", "16",
        "--lora_target_modules", "c_attn,c_fc,c_proj,lm_head"])
    with pytest.warns(UserWarning, match="skipped SFT"):
        ppo.run(config)
    assert loads == [str(tiny_model_dir)]  # the policy only: the reference is the adapter-free policy
    rows = metrics(tmp_path)
    assert rows[0]["objective/kl"] == pytest.approx(0.0, abs=1e-5)  # LoRA's B starts at 0: policy == reference
    scores = [m["objective/scores"] for m in rows if "objective/scores" in m]
    start_score, end_score = sum(scores[:2]) / 2, sum(scores[-3:]) / 3
    assert end_score > start_score + 0.15 and end_score > 2 * start_score, scores
    start = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()  # 300-token vocab, as the saved one
    trained = AutoModelForCausalLM.from_pretrained(tmp_path / "model").state_dict()
    adapted = [k for k in start if k.endswith(("c_attn.weight", "c_fc.weight", "c_proj.weight", "lm_head.weight"))]
    assert adapted and all(k in trained for k in start)
    for key, before in start.items():
        delta = trained[key] - before
        if key in adapted:
            # rtol: the merge's float32 rounding leaves singular values ~1e-7 of the largest, not a rank
            assert 0 < torch.linalg.matrix_rank(delta, atol=1e-6, rtol=1e-4) <= 8, key
        else:
            assert torch.equal(delta, torch.zeros_like(delta)), key  # frozen
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "value_model" / "model.safetensors").is_file()
    with pytest.raises(ConfigError, match="adapters disabled"):
        parse_config(PPOConfig, ["--model_name_or_path", "m", "--reward_function", "f:g", "--prompts_file", "p",
                                 "--use_peft", "true", "--ref_model_path", "r"])


def test_ppo_with_sampler_logprobs_matches_the_extra_forward_pass(tiny_model_dir, toy_data, tmp_path, monkeypatch):
    """pi_old from the sampler (no extra forward pass) against pi_old from a forward pass: the same
    seeded run, step for step, within rounding (KV-cached vs full attention)."""
    import rlhf.rollout.backends as backends_module  # the default backend calls its generate

    monkeypatch.syspath_prepend(str(TESTS))
    common = ["--model_name_or_path", str(tiny_model_dir), "--reward_function", "reward_functions:target_char_rate",
              "--prompts_file", str(toy_data["prompts"]), "--max_steps", "3", "--rollout_batch_size", "16",
              "--per_device_train_batch_size", "8", "--max_new_tokens", "8", "--learning_rate", "3e-3",
              "--kl_coef", "0.05", "--disable_tqdm", "true", "--report_to", "none"]
    generate = backends_module.generate
    recorded = []

    def spy(*args, record_logprobs=False, **kwargs):
        rollout = generate(*args, record_logprobs=record_logprobs, **kwargs)
        recorded.append(rollout.logprobs is not None)
        return rollout

    runs = {}
    for name, wrapper in (("sampler", spy), ("forward", lambda *a, record_logprobs=False, **k: generate(*a, **k))):
        monkeypatch.setattr(backends_module, "generate", wrapper)
        with pytest.warns(UserWarning, match="skipped SFT"):
            ppo.run(parse_config(PPOConfig, [*common, "--output_dir", str(tmp_path / name)]))
        runs[name] = [m for m in metrics(tmp_path / name) if "objective/kl" in m]
    assert recorded == [True] * 3
    assert len(runs["sampler"]) == len(runs["forward"]) == 3
    for step_sampler, step_forward in zip(runs["sampler"], runs["forward"]):
        for key in ("objective/scores", "objective/kl", "loss/policy", "loss/value", "policy/approx_kl",
                    "policy/clipfrac", "val/mean", "response/length"):
            assert step_sampler[key] == pytest.approx(step_forward[key], rel=1e-3, abs=1e-4), key
    assert runs["sampler"][-1]["objective/kl"] != 0  # the policy moved, so the comparison means something


@pytest.mark.parametrize("stage", ["rm", "dpo"])
def test_group_by_length_option_reaches_the_batching(stage, tiny_model_dir, toy_data, tmp_path, monkeypatch):
    import rlhf.data

    calls = []
    grouped = rlhf.data.length_grouped_batches
    monkeypatch.setattr(rlhf.data, "length_grouped_batches", lambda *a, **k: calls.append(1) or grouped(*a, **k))
    config_class, runner = {"rm": (RewardConfig, reward.run), "dpo": (DPOConfig, dpo.run)}[stage]
    for group in ("true", "false"):
        calls.clear()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            runner(parse_config(config_class, [
                "--model_name_or_path", str(tiny_model_dir), "--train_file", str(toy_data["pairs"]), "--max_steps", "1",
                "--output_dir", str(tmp_path / group), "--group_by_length", group, "--disable_tqdm", "true",
                "--report_to", "none"]))
        assert bool(calls) is (group == "true")
