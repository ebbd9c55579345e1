"""Where one PPO optimizer step of the bench goes: policy and value forward + backward (our
PolicyAndValue and losses, one minibatch of 4 x 64 tokens), the gradient norm, fused AdamW and
zero_grad, each timed alone over a few steps, eager or compiled with inductor.

    python bench/minibatch_step.py a eager        # model a or b; eager or compile
    python bench/minibatch_step.py b compile 12   # 12 timed steps (default 10)

Run it alone on the machine, in our venv, after `python bench/prepare.py` (the bench's models).
The full update is 16 such steps plus the rollout; bench/README.md quotes both.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import workload as W  # noqa: E402
from rlhf.losses import ppo_policy_loss, ppo_value_loss  # noqa: E402
from rlhf.models.policy_value import PolicyAndValue  # noqa: E402
from rlhf.models.scalar_model import ScalarModel  # noqa: E402
from rlhf.rl_math import masked_mean  # noqa: E402
from rlhf.rollout.logprobs import entropy_from_logits, token_logprobs  # noqa: E402


def main(model_name: str, mode: str, steps: int) -> None:
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(W.THREADS)
    torch.manual_seed(W.SEED)
    assets = W.ASSETS / f"model_{model_name}"
    model = PolicyAndValue(AutoModelForCausalLM.from_pretrained(assets / "policy", dtype=torch.float32),
                           ScalarModel.from_pretrained(assets / "reward"))
    model.train()
    if mode == "compile":
        model.compile(backend="inductor", dynamic=True)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6, fused=True)
    b, P, R = W.PPO_BATCH // W.PPO_MINIBATCHES, W.PPO_PROMPT, W.PPO_RESPONSE
    ids = torch.randint(2, W.MODELS[model_name]["vocab_size"], (b, P + R))
    mask, loss_mask = torch.ones_like(ids), torch.ones(b, R)
    old_logprobs, advantages, old_values, returns = torch.randn(b, R) - 5, torch.randn(b, R), torch.randn(b, R), torch.randn(b, R)

    def forward_backward() -> None:
        logits, values = model(ids, mask, P, W.PPO_TEMPERATURE)
        pg_loss, _ = ppo_policy_loss(token_logprobs(logits, ids[:, P:]), old_logprobs, advantages, loss_mask, 0.2)
        vf_loss, _ = ppo_value_loss(values, old_values, returns, loss_mask, 0.2)
        masked_mean(entropy_from_logits(logits.detach()), loss_mask)  # a metric, as in the trainer
        (pg_loss + 0.1 * vf_loss).backward()

    parts = {"forward+backward": forward_backward,
             "gradient norm": lambda: torch.nn.utils.clip_grad_norm_(model.parameters(), math.inf),
             "AdamW": optimizer.step, "zero_grad": lambda: optimizer.zero_grad(set_to_none=True)}
    start = time.perf_counter()
    for part in parts.values():  # warm-up (and, compiled, the compilation)
        part()
    first = time.perf_counter() - start
    times: dict[str, list[float]] = {name: [] for name in parts}
    for _ in range(steps):
        for name, part in parts.items():
            t = time.perf_counter()
            part()
            times[name].append(time.perf_counter() - t)
    median = {name: sorted(v)[len(v) // 2] for name, v in times.items()}
    total = sum(median.values())
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"model {model_name}, {mode}, {params:.1f}M parameters; first step {first:.2f} s; per step: "
          + ", ".join(f"{name} {seconds * 1000:.0f} ms" for name, seconds in median.items())
          + f"; total {total * 1000:.0f} ms, x{W.PPO_MINIBATCHES * W.PPO_EPOCHS} = "
          f"{W.PPO_MINIBATCHES * W.PPO_EPOCHS * total:.2f} s")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "eager", int(sys.argv[3]) if len(sys.argv) > 3 else 10)
