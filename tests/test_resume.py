"""Crash safety: SIGKILL at several points then --resume ends exactly like an uninterrupted run;
a corrupted checkpoint is skipped; SIGTERM saves and exits cleanly; NaN stops with a clear message."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

TESTS = Path(__file__).parent


def command(stage, args):
    return [sys.executable, "-m", "rlhf", stage, *map(str, args), "--disable_tqdm", "true"]


def env():
    return {**os.environ, "PYTHONPATH": str(TESTS), "OMP_NUM_THREADS": "2"}


def run(stage, args, cwd, expect=0):
    result = subprocess.run(command(stage, args), env=env(), cwd=cwd, capture_output=True, text=True, timeout=300)
    assert result.returncode == expect, result.stderr[-3000:]
    return result


def logged_steps(out):
    path = Path(out) / "metrics.jsonl"
    if not path.exists():
        return 0
    return sum(1 for line in path.read_text().splitlines() if '"time/elapsed_s"' in line and '"eval/' not in line)


def start_and_signal(stage, args, cwd, out, after_lines, sig):
    """Start a run and send ``sig`` once ``after_lines`` training steps were logged."""
    proc = subprocess.Popen(command(stage, args), env=env(), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 240
    while logged_steps(out) < after_lines:
        assert proc.poll() is None, f"run ended before step {after_lines}: {proc.stderr.read()[-2000:]}"
        assert time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=240)
    return proc.returncode, stderr


def run_in_process(stage, args, monkeypatch):
    """The uninterrupted reference, run in this process (same threads, same seeds as a subprocess)."""
    from rlhf.config.base import parse_config
    from rlhf.trainers import dpo, ppo, reward, sft

    monkeypatch.syspath_prepend(str(TESTS))
    module = {"sft": sft, "rm": reward, "dpo": dpo, "ppo": ppo}[stage]
    return module.run(parse_config(module.CONFIG_CLASS, [*map(str, args), "--disable_tqdm", "true"]))


def outcome(out):
    weights = load_file(Path(out) / "model" / "model.safetensors")
    metrics = [{k: v for k, v in json.loads(line).items() if not k.startswith("time/")}
               for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return weights, metrics


def assert_same_run(out_a, out_b):
    weights_a, metrics_a = outcome(out_a)
    weights_b, metrics_b = outcome(out_b)
    assert metrics_a == metrics_b  # same steps, each once, with the same values
    steps = [m["step"] for m in metrics_a if "train/learning_rate" in m]
    assert steps == sorted(set(steps))
    for key in weights_a:
        assert torch.equal(weights_a[key], weights_b[key]), key


def stage_args(stage, tiny_model_dir, toy_data):
    common = ["--model_name_or_path", tiny_model_dir, "--max_steps", 6, "--save_steps", 1, "--logging_steps", 1,
              "--save_total_limit", 2, "--learning_rate", 1e-3]
    return common + {
        "sft": ["--train_file", toy_data["demos"], "--per_device_train_batch_size", 4],
        "rm": ["--train_file", toy_data["pairs"], "--eval_fraction", 0, "--per_device_train_batch_size", 4],
        "dpo": ["--train_file", toy_data["pairs"], "--eval_fraction", 0, "--per_device_train_batch_size", 4],
        "ppo": ["--reward_function", "reward_functions:target_char_rate", "--prompts_file", toy_data["prompts"],
                "--rollout_batch_size", 8, "--per_device_train_batch_size", 4, "--max_new_tokens", 6],
    }[stage]


@pytest.mark.parametrize("stage", ["sft", "rm", "dpo", "ppo"])
def test_sigkill_at_several_points_then_resume_matches_uninterrupted(stage, tiny_model_dir, toy_data, tmp_path,
                                                                     monkeypatch):
    args = stage_args(stage, tiny_model_dir, toy_data)
    run_in_process(stage, [*args, "--output_dir", tmp_path / "straight"], monkeypatch)
    out = tmp_path / "killed"
    for kill_after in (2, 4):  # killed twice, the second time after resuming
        code, _ = start_and_signal(stage, [*args, "--output_dir", out, "--resume"], tmp_path, out, kill_after,
                                   signal.SIGKILL)
        assert code == -signal.SIGKILL
    run(stage, [*args, "--output_dir", out, "--resume"], tmp_path)
    assert_same_run(tmp_path / "straight", out)
    assert len(list((out / "checkpoints").glob("checkpoint-*"))) <= 2  # save_total_limit


def test_corrupted_or_half_written_checkpoints_are_skipped(tiny_model_dir, toy_data, tmp_path, monkeypatch):
    args = [*stage_args("sft", tiny_model_dir, toy_data), "--save_total_limit", 0]
    run_in_process("sft", [*args, "--output_dir", tmp_path / "straight"], monkeypatch)
    out = tmp_path / "run"
    start_and_signal("sft", [*args, "--output_dir", out], tmp_path, out, 4, signal.SIGKILL)
    checkpoints = sorted((out / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    newest = checkpoints[-1]
    weights = newest / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0xFF  # one flipped byte
    weights.write_bytes(bytes(data))
    half = out / "checkpoints" / "checkpoint-99"  # as if a crash hit before the manifest was written
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"partial")
    result = run("sft", [*args, "--output_dir", out, "--resume"], tmp_path)
    assert f"skipping {half}: no manifest" in result.stdout
    assert f"skipping {newest}: model.safetensors does not match its checksum" in result.stdout
    assert_same_run(tmp_path / "straight", out)


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tiny_model_dir, toy_data, tmp_path, monkeypatch):
    args = stage_args("ppo", tiny_model_dir, toy_data)
    args[args.index("--save_steps") + 1] = 0  # no periodic checkpoints: the signal alone must save one
    run_in_process("ppo", [*args, "--output_dir", tmp_path / "straight"], monkeypatch)
    out = tmp_path / "run"
    code, stderr = start_and_signal("ppo", [*args, "--output_dir", out], tmp_path, out, 2, signal.SIGTERM)
    assert code == 128 + signal.SIGTERM
    assert "stopped by SIGTERM at step" in stderr and "Traceback" not in stderr
    assert list((out / "checkpoints").glob("checkpoint-*"))
    run("ppo", [*args, "--output_dir", out, "--resume"], tmp_path)
    assert_same_run(tmp_path / "straight", out)


def test_nan_loss_stops_with_step_and_quantity(tiny_model_dir, toy_data, tmp_path, monkeypatch, capsys):
    from rlhf.trainers.optim import NonFiniteError

    args = stage_args("ppo", tiny_model_dir, toy_data) + ["--reward_normalization", "none", "--reward_clip", 0]
    args[args.index("reward_functions:target_char_rate")] = "reward_functions:huge_reward"  # NaN is refused up front
    with pytest.raises(NonFiniteError, match=r"step 1: non-finite loss = (nan|inf).*--max_nonfinite_skips"):
        run_in_process("ppo", [*args, "--output_dir", tmp_path / "a"], monkeypatch)
    assert not (tmp_path / "a" / "model").exists()
    # the option skips such steps up to its limit, then stops
    with pytest.raises(NonFiniteError, match=r"step 4: non-finite loss = (nan|inf)"):
        run_in_process("ppo", [*args, "--output_dir", tmp_path / "b", "--max_nonfinite_skips", 3, "--ppo_epochs", 1,
                               "--per_device_train_batch_size", 8], monkeypatch)
    assert capsys.readouterr().out.count("step skipped") == 3


def test_nan_in_sft_names_the_loss(tiny_model_dir, toy_data, tmp_path, monkeypatch):
    from safetensors.torch import save_file

    from rlhf.trainers.optim import NonFiniteError

    broken = tmp_path / "broken_model"
    broken.mkdir()
    for f in Path(tiny_model_dir).iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    weights = load_file(broken / "model.safetensors")
    weights["transformer.ln_f.weight"] = torch.full_like(weights["transformer.ln_f.weight"], float("nan"))
    save_file(weights, str(broken / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(NonFiniteError, match=r"step 1: non-finite loss/sft = nan"):
        run_in_process("sft", ["--model_name_or_path", broken, "--train_file", toy_data["demos"], "--max_steps", 2,
                               "--output_dir", tmp_path / "out"], monkeypatch)


def test_pipeline_killed_mid_stage_resumes_and_skips_finished_stages(tiny_model_dir, toy_data, tmp_path):
    import yaml

    config = tmp_path / "run.yaml"
    out = tmp_path / "out"
    config.write_text(yaml.safe_dump({
        "model_name_or_path": str(tiny_model_dir), "output_dir": str(out), "stages": "sft,rm",
        "sft": {"train_file": str(toy_data["demos"]), "max_steps": 3},
        "rm": {"train_file": str(toy_data["pairs"]), "max_steps": 6, "save_steps": 1, "logging_steps": 1,
               "eval_fraction": 0},
    }))
    code, _ = start_and_signal("pipeline", ["--config", config], tmp_path, out / "rm", 3, signal.SIGKILL)
    assert code == -signal.SIGKILL
    sft_model = out / "sft" / "model" / "model.safetensors"
    written = sft_model.stat().st_mtime_ns
    result = run("pipeline", ["--config", config, "--resume", "true"], tmp_path)
    assert "sft already finished" in result.stdout
    assert f"resuming from {out / 'rm' / 'checkpoints'}" in result.stdout
    assert sft_model.stat().st_mtime_ns == written  # the finished stage was not run again
    steps = [json.loads(line)["step"] for line in (out / "rm" / "metrics.jsonl").read_text().splitlines()
             if "loss/rm" in line]
    assert steps == [1, 2, 3, 4, 5, 6]
