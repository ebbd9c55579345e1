"""A fake runs folder for the dashboard's tests (ASGI client and browser): a finished SFT run, a
PPO run still being written, a failed run, and a demo with its table, plot, held-out samples and a stage."""

import base64
import json
import os

# A real 1x1 PNG, so a browser draws it.
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")
SCRIPT = "<script>alert('x')</script>"


def write_lines(path, records, tail=""):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail, encoding="utf-8")


def touch(path, mtime):
    os.utime(path, (mtime, mtime))


def make_runs(root, now):
    """sft (finished), ppo_live (running: changed 10 s before ``now``, a sample with a script in
    it, a last line half written), dead (no update for an hour, no summary: failed), and
    exp/demo with its table, plot, held-out samples and one stage. Returns ``root``."""
    sft = [{"step": 0, "eval/loss": 2.0, "time/elapsed_s": 0.5},
           {"step": 25, "loss/sft": 1.4, "train/learning_rate": 5e-4, "time/elapsed_s": 3.0},
           {"step": 50, "loss/sft": float("nan"), "train/learning_rate": 4e-4, "time/elapsed_s": 6.0}]
    write_lines(root / "sft" / "metrics.jsonl", sft)
    (root / "sft" / "summary.json").write_text(json.dumps({"stage": "sft", "steps": 50}))
    ppo = [{"step": s, "objective/scores": 0.1 * s, "objective/kl": 0.01 * s, "objective/kl_coef": 0.2,
            "gold/score": 0.5 + 0.01 * s, "response/length": 9.0, "loss/policy": -0.02, "loss/value": 0.3}
           for s in (1, 2, 3)]
    write_lines(root / "ppo_live" / "metrics.jsonl", ppo, tail='{"step": 4, "objective/sco')  # being written
    write_lines(root / "ppo_live" / "samples.jsonl", [{"step": 3, "prompt": "Say hi", "response": SCRIPT,
                                                       "score": 0.25, "gold_score": 0.5}])
    write_lines(root / "dead" / "metrics.jsonl", [{"step": 1, "loss/dpo": 0.69}])
    demo = root / "exp" / "demo"
    (demo / "demo_config.yaml").parent.mkdir(parents=True)
    (demo / "demo_config.yaml").write_text("seed: 0\n")
    (demo / "demo_results.json").write_text(json.dumps({
        "table": {"sft": {"gold": 0.51, "gold_stderr": 0.013, "gold_gain_over_sft": 0.0, "score": -0.02, "kl": 0.0,
                          "length": 9.1},
                  "ppo": {"gold": 0.646, "gold_stderr": 0.02, "gold_gain_over_sft": 0.136, "gold_gain_stderr": 0.016,
                          "score": 0.598, "kl": 1.01, "length": 8.7}},
        "rm_eval_accuracy": 0.678, "rm_eval_accuracy_stderr": 0.018}))
    (demo / "reward_hacking.png").write_bytes(PNG)
    samples = []
    for prompt in ("Is a pear a fruit?", "Say <b>hi</b>"):
        for policy, gold in (("dpo", 0.6), ("ppo (beta=0)", 0.1), ("base", 0.3), ("sft", 0.5), ("ppo", 0.7)):
            samples.append({"policy": policy, "prompt": prompt, "response": f"{policy} says {SCRIPT}",
                            "score": gold - 0.1, "gold": gold})
    write_lines(demo / "demo_samples.jsonl", samples)
    write_lines(demo / "sft" / "metrics.jsonl", sft[:2])
    (demo / "sft" / "summary.json").write_text(json.dumps({"stage": "sft"}))
    (demo / "data").mkdir()
    write_lines(demo / "data" / "metrics.jsonl", [])  # data/ is never a run
    for path in root.rglob("*"):
        touch(path, now - 3600)
    for name in ("metrics.jsonl", "samples.jsonl"):
        touch(root / "ppo_live" / name, now - 10)
    return root
