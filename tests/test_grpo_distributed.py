"""`rlhf grpo` under the invariance tests PPO passes: two processes (torchrun) train like one with the
doubled batch, and a run killed twice and resumed ends bit-identical to an uninterrupted one."""

import signal
from pathlib import Path

import torch
from safetensors.torch import load_file

from test_distributed import summary_of, torchrun
from test_resume import assert_same_run, run, start_and_signal

TESTS = Path(__file__).parent


def run_in_process(args, monkeypatch):
    from rlhf.config.base import parse_config
    from rlhf.config.grpo import GRPOConfig
    from rlhf.trainers import grpo

    monkeypatch.syspath_prepend(str(TESTS))
    return grpo.run(parse_config(GRPOConfig, [*map(str, args), "--disable_tqdm", "true"]))


def test_grpo_two_processes_equal_one_process_with_double_batch(tiny_model_dir, toy_data, tmp_path, monkeypatch):
    """Greedy sampling (top_k 1) makes each response a function of its prompt alone, so the two layouts
    see the same responses: each of the 2 processes answers all 4 prompts every step, the one process
    answers them twice (two passes of its sampler). REINFORCE++ whitens over the (gathered) global batch;
    the KL to the reference is in the reward. Here both processes hold the same rows, so this checks the
    gradient averaging and the run as a whole; test_grpo_math checks the gathering with unequal rows."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(Path(toy_data["prompts"]).read_text().splitlines(keepends=True)[:4]))
    common = ["--model_name_or_path", tiny_model_dir, "--reward_function", "reward_functions:prompt_digits_reward",
              "--prompts_file", prompts, "--max_steps", 3, "--num_generations", 2, "--top_k", 1,
              "--max_new_tokens", 6, "--min_new_tokens", 6, "--advantage", "reinforce_pp", "--kl_in_reward", "true",
              "--beta", 0.05, "--learning_rate", 1e-3, "--report_to", "none", "--sample_every", 0]
    run_in_process([*common, "--output_dir", tmp_path / "one", "--rollout_batch_size", 8,
                    "--per_device_train_batch_size", 16], monkeypatch)
    torchrun("grpo", [*map(str, common), "--output_dir", str(tmp_path / "two"), "--rollout_batch_size", "4",
                      "--per_device_train_batch_size", "8"], tmp_path)
    assert summary_of(tmp_path / "two")["processes_in_sync"] is True
    one = load_file(tmp_path / "one" / "model" / "model.safetensors")
    two = load_file(tmp_path / "two" / "model" / "model.safetensors")
    start = load_file(Path(tiny_model_dir) / "model.safetensors")
    assert max((one[k] - start[k]).abs().max().item() for k in start) > 1e-3  # it trained...
    # ...identically in both layouts, up to float rounding: the one process runs each prompt once for its
    # 2 responses (rlhf/models/shared_prefix.py), DDP's processes run every row in full (1.5e-5 apart here).
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=5e-5)
    kl_one, kl_two = (summary_of(tmp_path / name)["objective/kl"] for name in ("one", "two"))
    assert kl_one > 0 and abs(kl_one - kl_two) < 1e-4 * max(1.0, kl_one)


def test_grpo_sigkill_twice_then_resume_matches_uninterrupted(tiny_model_dir, toy_data, tmp_path, monkeypatch):
    args = ["--model_name_or_path", tiny_model_dir, "--reward_function", "reward_functions:target_char_rate",
            "--prompts_file", toy_data["prompts"], "--max_steps", 6, "--save_steps", 1, "--logging_steps", 1,
            "--save_total_limit", 2, "--learning_rate", 1e-3, "--rollout_batch_size", 4, "--num_generations", 2,
            "--per_device_train_batch_size", 4, "--max_new_tokens", 6, "--num_iterations", 2]
    run_in_process([*args, "--output_dir", tmp_path / "straight"], monkeypatch)
    out = tmp_path / "killed"
    for kill_after in (2, 4):  # killed twice, the second time after resuming
        code, _ = start_and_signal("grpo", [*args, "--output_dir", out, "--resume"], tmp_path, out, kill_after,
                                   signal.SIGKILL)
        assert code == -signal.SIGKILL
    run("grpo", [*args, "--output_dir", out, "--resume"], tmp_path)
    assert_same_run(tmp_path / "straight", out)
