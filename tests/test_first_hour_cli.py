"""Issue 13, the command line: exact option names, one-line errors, output folders that are never
silently overwritten, --resume that refuses changed options, stale temporaries, Ctrl-C, pipeline
path checks up front, and --report_to's trackers."""

import json
import os
import signal
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from rlhf.cli.main import main
from rlhf.config.base import ConfigError, config_from_dict, parse_config, save_config
from rlhf.config.dpo import DPOConfig
from rlhf.config.ppo import PPOConfig
from rlhf.config.reward import RewardConfig
from rlhf.config.sft import SFTConfig

TESTS = Path(__file__).parent


def sft_args(tiny_model_dir, toy_data, out, *extra):
    return ["--model_name_or_path", str(tiny_model_dir), "--train_file", str(toy_data["demos"]), "--output_dir",
            str(out), "--max_steps", "2", "--per_device_train_batch_size", "4", "--disable_tqdm", "true", *map(str, extra)]


class FakeAccelerator:
    is_main_process, num_processes, process_index = True, 1, 0

    def wait_for_everyone(self):
        pass


# ---- 1. exact option names ----------------------------------------------------------------------

def test_an_abbreviated_option_is_an_error_not_a_prefix_match():
    with pytest.raises(ConfigError, match=r"unknown option\(s\) --max_step 3 for rlhf sft; did you mean --max_steps\?"):
        parse_config(SFTConfig, ["--train_file", "x", "--model_name_or_path", "m", "--max_step", "3"], prog="rlhf sft")


# ---- 2. one line for a user's mistake, a traceback for a bug or with --debug ---------------------

def test_user_errors_are_one_line_bugs_and_debug_keep_the_traceback(monkeypatch, capsys):
    from rlhf.errors import UserError
    from rlhf.trainers import sft

    def fail_with(err):
        def run(config):
            raise err
        monkeypatch.setattr(sft, "run", run)

    args = ["sft", "--train_file", "x.jsonl", "--report_to", "none"]
    fail_with(UserError("reward function f returned 2 scores for 4 responses"))
    assert main(args) == 1
    assert capsys.readouterr().err == "rlhf sft: error: reward function f returned 2 scores for 4 responses\n"
    with pytest.raises(UserError):
        main([*args, "--debug"])  # --debug anywhere: removed before parsing, re-raises
    fail_with(RuntimeError("a bug"))
    with pytest.raises(RuntimeError, match="a bug"):
        main(args)
    assert main(["--help"]) == 0 and "--debug" in capsys.readouterr().out


def test_ctrl_c_while_loading_is_one_line_and_exit_130(tiny_model_dir, toy_data, tmp_path, monkeypatch, capsys):
    from rlhf.trainers import sft

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sft, "load_model_and_tokenizer", interrupted)
    assert main(["sft", *sft_args(tiny_model_dir, toy_data, tmp_path / "out")]) == 130
    err = capsys.readouterr().err
    assert err.startswith("rlhf sft: interrupted by Ctrl-C") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()  # nothing written before everything had loaded


# ---- 3. --resume PATH and a tokenizer without eos ---------------------------------------------

def test_resume_from_a_missing_or_broken_checkpoint_says_what_to_do(tiny_model_dir, toy_data, tmp_path, capsys):
    from rlhf.trainers.resume import resolve_resume

    assert main(["sft", *sft_args(tiny_model_dir, toy_data, tmp_path / "out"), "--resume", str(tmp_path / "nope")]) == 1
    err = capsys.readouterr().err
    assert f"--resume {tmp_path / 'nope'}: no such checkpoint folder. Pass --resume alone" in err and "Traceback" not in err
    broken = tmp_path / "checkpoint-3"
    broken.mkdir()
    (broken / "manifest.json").write_text(json.dumps({"step": 3, "files": {"model.safetensors": {"size": 1, "sha256": ""}}}))
    with pytest.raises(ConfigError, match=r"the checkpoint is broken: missing model.safetensors. Pass --resume alone"):
        resolve_resume(SimpleNamespace(resume=str(broken), output_dir=str(tmp_path)), tmp_path)


def test_a_tokenizer_without_eos_is_a_user_error_saying_what_to_set(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    from rlhf.errors import UserError
    from rlhf.models.loading import load_tokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.eos_token = None
    tokenizer.save_pretrained(tmp_path)
    with pytest.raises(UserError, match=r'no end-of-text \(eos\) token.*set "eos_token" in .*tokenizer_config.json'):
        load_tokenizer(tmp_path)


# ---- 4. output folders --------------------------------------------------------------------------

def test_each_stage_has_its_own_default_output_dir():
    assert [c.output_dir for c in (SFTConfig(), RewardConfig(), PPOConfig(), DPOConfig())] == \
        ["runs/sft", "runs/rm", "runs/ppo", "runs/dpo"]


def test_a_folder_holding_a_run_is_refused_unless_resume_or_overwrite(tiny_model_dir, toy_data, tmp_path):
    from rlhf.trainers.setup import check_output_dir

    out = tmp_path / "out"
    (out / "model").mkdir(parents=True)
    (out / "config.yaml").write_text("seed: 0\n")

    def config(*extra):
        return parse_config(SFTConfig, sft_args(tiny_model_dir, toy_data, out, *extra))

    with pytest.raises(ConfigError, match=rf"output_dir {out} already holds a run \(config.yaml, model/\): pass "
                                          "--resume to continue it, --overwrite_output_dir to replace it"):
        check_output_dir(config())
    check_output_dir(config("--overwrite_output_dir", "true"))
    with pytest.raises(ConfigError, match="pass one of them"):
        config("--overwrite_output_dir", "true", "--resume")


def test_an_input_inside_the_output_dir_is_refused_whatever_the_options(tiny_model_dir, toy_data, tmp_path):
    from rlhf.trainers.setup import check_output_dir

    out = tmp_path / "out"
    (out / "model").mkdir(parents=True)  # `rlhf rm --model_name_or_path runs/out/model --output_dir runs/out`
    for extra in ([], ["--overwrite_output_dir", "true"], ["--resume"]):
        config = parse_config(RewardConfig, ["--model_name_or_path", str(out / "model"), "--train_file",
                                             str(toy_data["pairs"]), "--output_dir", str(out), *extra])
        with pytest.raises(ConfigError, match=rf"model_name_or_path {out / 'model'} lies inside output_dir {out}"):
            check_output_dir(config)
    data = out / "pairs.jsonl"  # a data file beside a run is fine, unless the run is to be replaced
    data.write_bytes(Path(toy_data["pairs"]).read_bytes())
    fresh = ["--model_name_or_path", str(tiny_model_dir), "--train_file", str(data), "--output_dir", str(out)]
    check_output_dir(parse_config(RewardConfig, [*fresh, "--resume"]))
    with pytest.raises(ConfigError, match=rf"train_file {data} lies inside output_dir"):
        check_output_dir(parse_config(RewardConfig, [*fresh, "--overwrite_output_dir", "true"]))


def test_demo_refuses_a_folder_holding_a_demo_unless_resume_or_overwrite(tmp_path):
    from rlhf.pipeline import demo

    (tmp_path / "demo_config.yaml").write_text("seed: 0\n")
    with pytest.raises(ConfigError, match=rf"output_dir {tmp_path} already holds a demo: pass --resume"):
        demo.run(config_from_dict(demo.DemoConfig, {"output_dir": str(tmp_path)}))
    assert (tmp_path / "demo_config.yaml").read_text() == "seed: 0\n"


def test_nothing_is_written_before_the_inputs_are_validated(tiny_model_dir, tmp_path):
    from rlhf.data.errors import DataError
    from rlhf.trainers import sft

    data = tmp_path / "demos.jsonl"
    data.write_text('{"prompt": "a", "completion": " b"}\n{"prompt": "a", "completion": 3}\n')
    config = parse_config(SFTConfig, ["--model_name_or_path", str(tiny_model_dir), "--train_file", str(data),
                                      "--output_dir", str(tmp_path / "out")])
    with pytest.raises(DataError):
        sft.run(config)
    assert not (tmp_path / "out").exists()


def test_overwrite_replaces_the_old_run_and_keep_checkpoints_false_keeps_the_model_only(tiny_model_dir, toy_data,
                                                                                          tmp_path):
    from rlhf.trainers import sft

    out = tmp_path / "out"
    sft.run(parse_config(SFTConfig, sft_args(tiny_model_dir, toy_data, out, "--save_steps", 1)))
    assert (out / "checkpoints" / "checkpoint-1").is_dir()
    with pytest.raises(ConfigError, match="already holds a run"):
        sft.run(parse_config(SFTConfig, sft_args(tiny_model_dir, toy_data, out)))
    sft.run(parse_config(SFTConfig, sft_args(tiny_model_dir, toy_data, out, "--save_steps", 1, "--overwrite_output_dir",
                                             "true", "--keep_checkpoints", "false", "--learning_rate", 1e-3)))
    assert len(list((out / "tensorboard").iterdir())) == 1  # the old run's events file was removed
    assert yaml.safe_load((out / "config.yaml").read_text())["learning_rate"] == 1e-3
    assert (out / "model" / "model.safetensors").is_file() and not (out / "checkpoints").exists()


def test_prepare_removes_stale_temporaries_and_keeps_a_resumed_run(tmp_path, capsys):
    from rlhf.trainers.setup import prepare_output_dir

    out = tmp_path / "out"
    kept = out / "checkpoints" / "checkpoint-2"
    kept.mkdir(parents=True)
    (kept / "manifest.json").write_text(json.dumps({"step": 2, "files": {}}))
    stale = [out / "checkpoints" / ".tmp-checkpoint-3", out / ".model.tmp-ab12cd34", out / ".model.old-ab12cd34"]
    for path in stale:
        path.mkdir()
        (path / "weights").write_text("half")
    (out / ".metrics.jsonl.tmp-123").write_text("half")
    (out / "metrics.jsonl").write_text('{"step": 1}\n')
    config = SFTConfig(model_name_or_path="m", train_file="t", output_dir=str(out), resume="latest")
    prepare_output_dir(config, FakeAccelerator())
    assert not any(p.exists() for p in stale) and not (out / ".metrics.jsonl.tmp-123").exists()
    assert kept.is_dir() and (out / "metrics.jsonl").read_text() == '{"step": 1}\n'  # resumed: kept
    assert "left by a run killed while saving" in capsys.readouterr().out


# ---- 5. --resume compares the options ------------------------------------------------------------

def test_resume_refuses_changed_options_unless_allowed(tmp_path):
    from rlhf.trainers.resume import check_resume_config

    base = dict(model_name_or_path="m", train_file="t", output_dir=str(tmp_path), max_steps=6, learning_rate=1e-3)
    save_config(SFTConfig(**base), tmp_path)
    changed = SFTConfig(**{**base, "max_steps": 8, "learning_rate": 1e-4, "resume": "latest", "disable_tqdm": True})
    with pytest.raises(ConfigError, match=r"options differ from the run in .*config.yaml: learning_rate 0.001 -> 0.0001, "
                                          r"max_steps 6 -> 8\. .*--resume_allow_changes learning_rate,max_steps"):
        check_resume_config(changed, tmp_path)
    changed.resume_allow_changes = "max_steps,learning_rate"
    check_resume_config(changed, tmp_path)
    with pytest.raises(ConfigError, match="resume_allow_changes: unknown option"):
        SFTConfig(**{**base, "resume_allow_changes": "max_step"}).validate()


# ---- 7. Ctrl-C: the first asks for a checkpoint, the second stops at once --------------------------

def wait_for_signal():
    deadline = time.time() + 5
    while time.time() < deadline:
        time.sleep(0.01)  # the handler runs between bytecodes of the main thread


def test_first_sigint_asks_for_a_checkpoint_second_stops_at_once(capfd):
    from rlhf.trainers.signals import ForcedStop, StopSignals

    with StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        assert stop.signum == signal.SIGINT
        assert "Press Ctrl-C again to stop at once" in capfd.readouterr().err
        with pytest.raises(ForcedStop):
            os.kill(os.getpid(), signal.SIGINT)
            wait_for_signal()


def test_cli_exits_130_on_a_forced_stop(monkeypatch, capsys):
    from rlhf.trainers import sft
    from rlhf.trainers.signals import ForcedStop

    def run(config):
        raise ForcedStop(signal.SIGINT)

    monkeypatch.setattr(sft, "run", run)
    assert main(["sft", "--train_file", "x.jsonl", "--report_to", "none"]) == 130
    assert capsys.readouterr().err.startswith("rlhf sft: stopped at once by a second SIGINT; nothing was saved")


# ---- 8. every input path of every pipeline stage before any stage runs ---------------------------

def test_input_paths_are_read_from_the_field_names():
    from rlhf.config.base import input_paths

    config = PPOConfig(model_name_or_path="m", prompts_file="p.jsonl", reward_function="rewards/my.py:score",
                       gold_reward_function="pkg.gold:score", ref_model_path="ref")
    assert input_paths(config) == [("model_name_or_path", "m"), ("ref_model_path", "ref"),
                                   ("prompts_file", "p.jsonl"), ("reward_function", "rewards/my.py")]
    config = PPOConfig(model_name_or_path="m", prompts_file="p", reward_model_path="rm1, rm2", value_model_path="v")
    assert [p for _, p in input_paths(config)] == ["m", "rm1", "rm2", "v", "p"]


def test_pipeline_checks_every_stage_path_before_running_any(tiny_model_dir, toy_data, tmp_path):
    from rlhf.pipeline import pipeline

    out = tmp_path / "out"
    config = config_from_dict(pipeline.PipelineConfig, {
        "model_name_or_path": str(tiny_model_dir), "output_dir": str(out), "stages": "sft,rm,ppo",
        "sft": {"train_file": str(toy_data["demos"]), "max_steps": 1},
        "rm": {"train_file": str(toy_data["pairs"]), "max_steps": 1},
        "ppo": {"prompts_file": str(tmp_path / "promts.jsonl"), "max_steps": 1,
                "reward_function": str(tmp_path / "missing.py") + ":score"}})
    with pytest.raises(ConfigError, match=rf"^stage ppo: prompts_file '{tmp_path / 'promts.jsonl'}' does not exist; "
                                          rf"reward_function '{tmp_path / 'missing.py'}' does not exist$"):
        pipeline.run(config)  # the sft and rm models the earlier stages would write are not reported
    assert not out.exists()


def test_pipeline_calls_the_reward_function_before_running_any_stage(tiny_model_dir, toy_data, tmp_path):
    from rlhf.pipeline import pipeline
    from rlhf.rewards.functions import RewardFunctionError

    rewards = tmp_path / "my_rewards.py"
    rewards.write_text("def score(prompts, responses, ended):\n    return [1.0]  # one value for the whole batch\n")
    out = tmp_path / "out"
    config = parse_config(pipeline.PipelineConfig, [
        "--model_name_or_path", str(tiny_model_dir), "--output_dir", str(out), "--stages", "sft,ppo",
        "--sft", json.dumps({"train_file": str(toy_data["demos"]), "max_steps": 1}),  # JSON on the command line
        "--ppo", json.dumps({"prompts_file": str(toy_data["prompts"]), "reward_function": f"{rewards}:score"})])
    with pytest.raises(RewardFunctionError, match=r"returned 1 values for 2 responses"):
        pipeline.run(config)
    assert not out.exists()  # found before SFT ran


# ---- 9. --report_to ------------------------------------------------------------------------------

def test_report_to_names_the_missing_package(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(ConfigError, match=r"report_to mlflow needs the mlflow package, which is not installed: "
                                          r"pip install mlflow"):
        SFTConfig(model_name_or_path="m", train_file="t", report_to="tensorboard,mlflow").validate()
    with pytest.raises(ConfigError, match="report_to: unknown tracker neptune"):
        SFTConfig(model_name_or_path="m", train_file="t", report_to="neptune").validate()


def test_report_to_routes_other_trackers_through_accelerate(monkeypatch, tmp_path):
    import accelerate
    from accelerate.tracking import GeneralTracker

    from rlhf.trainers.run_logger import RunLogger
    from rlhf.trainers.setup import make_accelerator

    made = {}
    monkeypatch.setattr(accelerate, "Accelerator", lambda **kwargs: made.update(kwargs))
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: object())  # every tracker "installed"
    make_accelerator(SFTConfig(model_name_or_path="m", train_file="t", report_to="tensorboard,wandb,comet_ml"))
    assert made["log_with"] == ["wandb", "comet_ml"]  # TensorBoard stays our own SummaryWriter
    monkeypatch.undo()

    class FakeTracker(GeneralTracker):
        name, requires_logging_directory, main_process_only = "fake", False, True

        def __init__(self):
            super().__init__()
            self.logged, self.config, self.finished = [], None, False

        @property
        def tracker(self):
            return self

        def store_init_configuration(self, values):
            self.config = values

        def log(self, values, step=None, **kwargs):
            self.logged.append((step, values))

        def finish(self):
            self.finished = True

    fake = FakeTracker()
    accelerator = accelerate.Accelerator(cpu=True, log_with=[fake])
    save_config(SFTConfig(model_name_or_path="m", train_file="t", output_dir=str(tmp_path)), tmp_path)
    logger = RunLogger(tmp_path, accelerator, total_steps=2, report_to="none", disable_tqdm=True)
    logger.log(1, {"loss/sft": 2.5, "note": "text"})
    logger.close()
    assert fake.config["train_file"] == "t"
    assert [(step, {k: v for k, v in values.items() if k != "time/elapsed_s"}) for step, values in fake.logged] == \
        [(1, {"loss/sft": 2.5})]
    assert fake.finished


def test_the_command_prints_our_warnings_as_advice_without_source_lines(tiny_model_dir, toy_data, tmp_path):
    import subprocess
    import sys

    args = ["rm", "--model_name_or_path", str(tiny_model_dir), "--train_file", str(toy_data["pairs"]),
            "--output_dir", str(tmp_path / "rm"), "--max_steps", "1", "--stats_max_pairs", "4",
            "--disable_tqdm", "true", "--report_to", "none"]
    done = subprocess.run([sys.executable, "-m", "rlhf", *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "warning: " + str(tiny_model_dir) + " is not an `rlhf sft` checkpoint" in done.stderr
    assert "_warn_common_mistakes(" not in done.stderr and "UserWarning" not in done.stderr  # advice only
