"""Two CPU processes (DDP over gloo, launched with torchrun) train like one process with twice the batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rlhf.config.base import parse_config
from rlhf.config.sft import SFTConfig
from rlhf.data import load_demonstrations, tokenize_demonstrations
from rlhf.models.loading import load_tokenizer
from rlhf.trainers import sft

TESTS = Path(__file__).parent


def torchrun(stage, args, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "rlhf",
           stage, *args, "--disable_tqdm", "true"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def summary_of(path):
    return json.loads((Path(path) / "summary.json").read_text())


def test_sft_two_processes_equal_one_process_with_double_batch(tiny_model_dir, toy_data, tmp_path):
    tokenizer = load_tokenizer(tiny_model_dir)
    lengths = {len(x["input_ids"]) for x in tokenize_demonstrations(load_demonstrations(toy_data["demos"]), tokenizer, 512)}
    assert len(lengths) == 1  # equal lengths: a mean of per-process means is then the mean over the big batch
    common = ["--model_name_or_path", str(tiny_model_dir), "--train_file", str(toy_data["demos"]), "--max_steps", "6",
              "--learning_rate", "1e-3", "--group_by_length", "false", "--seed", "3"]
    sft.run(parse_config(SFTConfig, [*common, "--output_dir", str(tmp_path / "one"), "--per_device_train_batch_size", "8",
                                     "--disable_tqdm", "true"]))
    torchrun("sft", [*common, "--output_dir", str(tmp_path / "two"), "--per_device_train_batch_size", "4"], tmp_path)
    assert summary_of(tmp_path / "two")["processes_in_sync"] is True
    one = load_file(tmp_path / "one" / "model" / "model.safetensors")
    two = load_file(tmp_path / "two" / "model" / "model.safetensors")
    start = load_file(Path(tiny_model_dir) / "model.safetensors")
    moved = max((one[k] - start[k]).abs().max().item() for k in start)
    assert moved > 1e-3  # training really changed the weights...
    for key in one:  # ...and identically in both layouts
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("stage", ["rm", "dpo", "ppo"])
def test_stage_runs_as_two_processes(stage, tiny_model_dir, toy_data, tmp_path):
    out = tmp_path / stage
    args = {"rm": ["--train_file", str(toy_data["pairs"]), "--max_steps", "4"],
            "dpo": ["--train_file", str(toy_data["pairs"]), "--max_steps", "4"],
            "ppo": ["--reward_function", "reward_functions:target_char_rate", "--prompts_file", str(toy_data["prompts"]),
                    "--max_steps", "2", "--rollout_batch_size", "8", "--per_device_train_batch_size", "4",
                    "--max_new_tokens", "6", "--eval_prompts_file", str(toy_data["prompts"])]}[stage]
    torchrun(stage, ["--model_name_or_path", str(tiny_model_dir), "--output_dir", str(out), *args], tmp_path)
    summary = summary_of(out)
    assert summary["processes_in_sync"] is True
    assert (out / "model" / "model.safetensors").is_file()
    if stage == "ppo":  # each process generated its own rollouts; metrics are averaged over both
        assert summary["eval/length"] > 0
