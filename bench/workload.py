"""What the benchmark runs: the two model shapes, the work of each stage, and the run modes.

Plain data and the standard library only: the orchestrator, both workers (our venv and the TRL
venvs) and the report import this file, so both libraries read one definition of the work.
"""

from __future__ import annotations

from pathlib import Path

BENCH = Path(__file__).resolve().parent
ASSETS = BENCH / ".assets"  # tokenizers, models, data files (git-ignored, rebuilt by prepare.py)
RUNS = BENCH / ".runs"  # the trainers' output folders (git-ignored)
RESULTS = BENCH / "results"
VENVS = BENCH / ".venvs"

SEED = 0
THREADS = 2

# (a) ~11M parameters, small vocabulary; (b) a 50257-token vocabulary, where the logits dominate.
MODELS = {
    "a": {"n_layer": 6, "n_embd": 384, "n_head": 6, "vocab_size": 1024},
    "b": {"n_layer": 4, "n_embd": 512, "n_head": 8, "vocab_size": 50257},
}
N_POSITIONS = 1024
EOS, PAD = "<|endoftext|>", "<|pad|>"  # ids 0 and 1 in both tokenizers

# Fixed-length synthetic work: every sequence is exactly PROMPT + RESPONSE tokens, eos included.
SYNTH_BATCH, SYNTH_PROMPT, SYNTH_LENGTH = 16, 32, 128
# The natural workload: HH-RLHF harmless-base comparisons at their own lengths.
HH_BATCH, HH_MAX_LENGTH = 16, 512
# PPO: rollout of PPO_BATCH prompts of PPO_PROMPT tokens, responses of exactly `response` tokens.
PPO_PROMPT, PPO_BATCH, PPO_RESPONSE = 32, 16, 32
PPO_EPOCHS, PPO_MINIBATCHES, PPO_KL_COEF, PPO_TEMPERATURE = 4, 4, 0.05, 0.7
PPO_SCALING_RESPONSES = (32, 64, 128)  # at batch 16
PPO_SCALING_BATCHES = (8, 16, 32)  # at response 32
# Options that cut compute for users, ours only (not identical work): a value head on the policy's
# backbone instead of a second backbone; LoRA (rank 16, every linear layer but the LM head) on
# policy and value, the reference being the policy with adapters disabled; and both.
PPO_OPTIONS = {
    "shared": ["--value_model", "shared"],
    "lora": ["--use_peft", "true", "--lora_r", "16", "--lora_alpha", "32", "--lora_target_modules", "all-linear"],
    "lora_shared": ["--value_model", "shared", "--use_peft", "true", "--lora_r", "16", "--lora_alpha", "32",
                    "--lora_target_modules", "all-linear"],
    # Identical work to the baseline, compiled (issue 19): its first update carries the compile time.
    "compile": ["--torch_compile", "true"],
}

# GRPO: GRPO_PROMPTS prompts of PPO_PROMPT tokens, each answered GRPO_G times (16 responses of up to
# PPO_RESPONSE tokens at PPO_TEMPERATURE), a reward model, the reference for beta * k3 in the loss,
# one pass (num_iterations 1), one optimizer step on the 16 responses, token-level loss (TRL's bnpo).
GRPO_PROMPTS, GRPO_G, GRPO_BETA = 4, 4, 0.04

# Which venv runs which library. PPO left TRL's core after 1.12 (trl.experimental.ppo).
TRL_VENV = {"ppo": "trl112", "other": "trl116"}
TRL_VERSIONS = {"trl112": "1.12.0", "trl116": "1.16.0"}

# Stage -> what one update is, for the tables.
STAGE_UNITS = {
    "sft": "one optimizer step on 16 sequences of 128 tokens (prompt 32, loss on the 96 response tokens)",
    "rm": "one optimizer step on 16 pairs (32 sequences of 128 tokens)",
    "dpo": "one optimizer step on 16 pairs (policy forward+backward and reference forward on 32 sequences of 128)",
    "ppo": "one PPO step: generate, score, reference and value forwards, 4 epochs x 4 minibatches (16 optimizer steps)",
    "grpo": "one GRPO step: 4 prompts x G=4 responses of 32 tokens, reward model and reference forwards, "
            "one optimizer step on the 16 responses",
    "rm_hh": "one optimizer step on 16 HH-RLHF pairs (natural lengths, <= 512 tokens)",
    "dpo_hh": "one optimizer step on 16 HH-RLHF pairs (natural lengths, <= 512 tokens)",
}


def job_id(job: dict) -> str:
    """A short name for a job, e.g. ``ppo-a-b16-r64`` or ``sft-b``."""
    name = f"{job['stage']}-{job['model']}"
    if job["stage"] == "ppo":
        name += f"-b{job['batch']}-r{job['response']}"
    if job.get("option"):
        name += f"-{job['option']}"
    return name


def plan(quick: bool, models: list[str], stages: list[str], scaling: bool, scaling_model: str,
         options: bool = False) -> list[dict]:
    """The jobs of one repeat (each run once per library; option jobs by ours only). ``quick``:
    fewer timed updates."""
    warmup, updates = (1, 2) if quick else (2, 5)
    jobs = []
    for model in models:
        for stage in stages:
            job = {"stage": stage, "model": model, "warmup": warmup, "updates": updates}
            if stage == "ppo":
                job.update(batch=PPO_BATCH, response=PPO_RESPONSE)
            if stage == "grpo":  # batch counts responses, as PPO's episodes
                job.update(batch=GRPO_PROMPTS * GRPO_G, response=PPO_RESPONSE)
            jobs.append(job)
    if scaling and "ppo" in stages:
        shapes = [(PPO_BATCH, r) for r in PPO_SCALING_RESPONSES] + [(b, PPO_RESPONSE) for b in PPO_SCALING_BATCHES]
        seen = {job_id(j) for j in jobs}
        for batch, response in shapes:
            job = {"stage": "ppo", "model": scaling_model, "warmup": warmup, "updates": updates,
                   "batch": batch, "response": response}
            if job_id(job) not in seen:
                seen.add(job_id(job))
                jobs.append(job)
    if options and "ppo" in stages:
        jobs += [{"stage": "ppo", "model": model, "warmup": warmup, "updates": updates, "batch": PPO_BATCH,
                  "response": PPO_RESPONSE, "option": option} for model in models for option in PPO_OPTIONS]
    return jobs


def assets_for(model: str) -> dict[str, str]:
    """Paths of one model's assets (built by prepare.py)."""
    root = ASSETS / f"model_{model}"
    return {
        "policy": str(root / "policy"),
        "reward": str(root / "reward"),
        "sft_data": str(root / "sft.jsonl"),
        "pair_data": str(root / "pairs.jsonl"),
        "prompt_data": str(root / "prompts.jsonl"),
        "hh_data": str(root / "hh_pairs.jsonl"),
        "hh_order": str(root / "hh_batch_order.json"),
    }
