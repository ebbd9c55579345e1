"""Run one benchmark job with OUR trainers, as a user would: `rlhf <stage> --flags` (the CLI's
main() called in this process), timed from outside by probe.py.

    python bench/worker_ours.py JOB.json RESULT.json      (in /work/main/.venv)

The update clock hooks RunLogger: its construction (right before each trainer's loop) starts
training, and ``advance()`` (once per optimizer step, or per PPO step) ends an update. The
trainer's own metrics.jsonl (``time/elapsed_s``, and PPO's ``time/rollout_s``/``time/update_s``)
is read back as a cross-check.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import probe as P  # noqa: E402
import workload as W  # noqa: E402


def cli_args(job: dict, output_dir: str) -> list[str]:
    """The command line a user would type for this job."""
    a = W.assets_for(job["model"])
    stage = job["stage"]
    common = ["--model_name_or_path", a["policy"], "--output_dir", output_dir, "--seed", str(W.SEED),
              "--logging_steps", "1", "--report_to", "none", "--disable_tqdm", "true", "--bf16", "false",
              "--max_steps", str(job["warmup"] + job["updates"])]
    if stage == "sft":
        return ["sft", *common, "--train_file", a["sft_data"], "--per_device_train_batch_size", str(W.SYNTH_BATCH),
                "--max_length", str(W.SYNTH_LENGTH), "--eval_fraction", "0"]
    if stage in ("rm", "rm_hh", "dpo", "dpo_hh"):
        hh = stage.endswith("_hh")
        args = [stage.split("_")[0], *common, "--train_file", a["hh_data"] if hh else a["pair_data"],
                "--per_device_train_batch_size", str(W.HH_BATCH if hh else W.SYNTH_BATCH),
                "--max_length", str(W.HH_MAX_LENGTH if hh else W.SYNTH_LENGTH), "--eval_fraction", "0"]
        if stage.startswith("rm"):
            args += ["--stats_max_pairs", "16"]  # the reward statistics pass after training is not timed
        return args
    if stage == "ppo":
        return ["ppo", *common, "--prompts_file", a["prompt_data"], "--reward_model_path", a["reward"],
                "--value_model", "separate", "--rollout_batch_size", str(job["batch"]),
                "--per_device_train_batch_size", str(job["batch"] // W.PPO_MINIBATCHES),
                "--ppo_epochs", str(W.PPO_EPOCHS), "--kl_coef", str(W.PPO_KL_COEF),
                "--temperature", str(W.PPO_TEMPERATURE), "--max_new_tokens", str(job["response"]),
                "--max_prompt_length", str(W.PPO_PROMPT), "--sample_every", "0",
                # TRL's PPO never clips gradients; ours with 0 still computes the norm (clip at inf).
                "--max_grad_norm", "0", *W.PPO_OPTIONS.get(job.get("option", ""), [])]
    if stage == "grpo":
        return ["grpo", *common, "--prompts_file", a["prompt_data"], "--reward_model_path", a["reward"],
                "--rollout_batch_size", str(W.GRPO_PROMPTS), "--num_generations", str(W.GRPO_G),
                "--per_device_train_batch_size", str(W.GRPO_PROMPTS * W.GRPO_G), "--num_iterations", "1",
                "--beta", str(W.GRPO_BETA), "--loss_type", "token", "--temperature", str(W.PPO_TEMPERATURE),
                "--max_new_tokens", str(job["response"]), "--max_prompt_length", str(W.PPO_PROMPT),
                "--sample_every", "0", "--learning_rate", "1e-6"]  # TRL's GRPO clips at 1.0, as ours
    raise ValueError(f"unknown stage {stage}")


def install_clock(probe: P.Probe) -> None:
    from rlhf.trainers import run_logger

    original_init, original_advance = run_logger.RunLogger.__init__, run_logger.RunLogger.advance

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        probe.train_started()

    def advance(self, *args, **kwargs):
        probe.step_ended()
        return original_advance(self, *args, **kwargs)

    run_logger.RunLogger.__init__, run_logger.RunLogger.advance = init, advance


def metrics_timings(output_dir: Path) -> dict:
    """Per-step seconds from the trainer's own metrics.jsonl, for the cross-check."""
    path = output_dir / "metrics.jsonl"
    if not path.exists():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    train = [r for r in rows if "time/elapsed_s" in r and not any(k.startswith("eval/") for k in r)]
    elapsed = [r["time/elapsed_s"] for r in train]
    out = {"elapsed_diffs_s": [round(b - a, 4) for a, b in zip(elapsed, elapsed[1:])]}
    if train and "time/rollout_s" in train[0]:
        out["rollout_s"] = [r["time/rollout_s"] for r in train]
        out["update_s"] = [r["time/update_s"] for r in train]
    return out


def main() -> int:
    job = json.loads(Path(sys.argv[1]).read_text())
    result_path = sys.argv[2]
    P.configure_threads(W.THREADS)
    probe = P.Probe().install()
    install_clock(probe)
    output_dir = Path(job["run_dir"])
    argv = cli_args(job, str(output_dir))
    from rlhf.cli.main import main as rlhf_main

    code = rlhf_main(argv)
    result = {"lib": "ours", "job": job, "argv": ["rlhf", *argv], "exit_code": code, **probe.result(),
              "trainer_metrics": metrics_timings(output_dir)}
    try:
        import rlhf
        import transformers

        result["versions"] = {"rlhf": getattr(rlhf, "__version__", "?"), "transformers": transformers.__version__}
    except ImportError:
        pass
    P.write_json(result_path, result)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
