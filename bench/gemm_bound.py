"""How fast one PPO update of the bench could possibly be in fp32 on this machine: every matrix
multiply of the work (training, scoring, generation), each timed alone at its own shape with
torch.matmul, summed. Nothing else is counted (attention score products, softmax over the
vocabulary, layer norms, AdamW, the decode loop's bookkeeping), so a real update takes longer.

    python bench/gemm_bound.py            # PPO and GRPO, models a and b, 2 threads
    python bench/gemm_bound.py b

Why: a speed target against TRL is only reachable if TRL's seconds divided by the target exceed
this bound. On 2026-11-29 (2 quiet cores) model b's bound was 8.1 s against TRL 1.12's 15.7 s
per update, so 2x (7.9 s) cannot be met by any implementation of the same work with these GEMMs.
Run it alone: other jobs on the CPUs make every number larger.
"""

from __future__ import annotations

import sys
import time

import torch

import workload as W


def seconds(m: int, k: int, n: int, repeats: int = 20) -> float:
    """One (m x k) @ (k x n) product: the mean of ``repeats`` after 3 warm-ups."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return (time.perf_counter() - start) / repeats


def block_forward(rows: int, d: int) -> float:
    """A GPT-2 block's weight GEMMs for ``rows`` tokens: QKV, attention output, MLP up and down."""
    return sum(seconds(rows, k, n) for k, n in ((d, 3 * d), (d, d), (d, 4 * d), (4 * d, d)))


def block_backward(rows: int, d: int) -> float:
    """The gradients of those GEMMs: dX = dY W^T and dW = X^T dY for each."""
    return sum(seconds(rows, n, k) + seconds(k, rows, n) for k, n in ((d, 3 * d), (d, d), (d, 4 * d), (4 * d, d)))


def ppo_update_bound(model: str) -> dict[str, float]:
    """Seconds of the GEMMs of one bench PPO update (workload.py's shapes): rollout of B prompts,
    scoring by reference, value and reward, E epochs of B/minibatch optimizer steps on policy and
    value."""
    shape = W.MODELS[model]
    L, d, V = shape["n_layer"], shape["n_embd"], shape["vocab_size"]
    B, P, R, E = W.PPO_BATCH, W.PPO_PROMPT, W.PPO_RESPONSE, W.PPO_EPOCHS
    T, mb = P + R, B // W.PPO_MINIBATCHES
    kept = mb * (R + 1)  # logits positions the policy projects per minibatch
    minibatch = (2 * L * (block_forward(mb * T, d) + block_backward(mb * T, d))  # policy and value backbones
                 + seconds(kept, d, V) + seconds(kept, V, d) + seconds(V, kept, d))  # LM head forward, dX, dW
    training = minibatch * W.PPO_MINIBATCHES * E
    scoring = 3 * L * block_forward(B * T, d) + seconds(B * (R + 1), d, V)  # reference (with its head), value, reward
    generation = (L * block_forward(B * P, d) + seconds(B, d, V)  # prefill
                  + (R - 1) * (L * block_forward(B, d) + seconds(B, d, V)))  # one token per row per step
    return {"training": training, "scoring": scoring, "generation": generation,
            "total": training + scoring + generation}


def grpo_update_bound(model: str) -> dict[str, float]:
    """Seconds of the GEMMs of one bench GRPO update: G responses to each of the prompts (every
    response runs to the end: the upper end of the work), reward and reference forwards, one
    optimizer step on all responses at once."""
    shape = W.MODELS[model]
    L, d, V = shape["n_layer"], shape["n_embd"], shape["vocab_size"]
    B, P, R = W.GRPO_PROMPTS * W.GRPO_G, W.PPO_PROMPT, W.PPO_RESPONSE
    T, kept = P + R, B * (R + 1)
    training = (L * (block_forward(B * T, d) + block_backward(B * T, d))
                + seconds(kept, d, V) + seconds(kept, V, d) + seconds(V, kept, d))
    scoring = 2 * L * block_forward(B * T, d) + seconds(kept, d, V)  # reward, reference (with its head)
    generation = (L * block_forward(B * P, d) + seconds(B, d, V)
                  + (R - 1) * (L * block_forward(B, d) + seconds(B, d, V)))
    return {"training": training, "scoring": scoring, "generation": generation,
            "total": training + scoring + generation}


def main(argv: list[str]) -> None:
    torch.set_num_threads(W.THREADS)
    for model in argv or list(W.MODELS):
        for stage, bound in (("PPO", ppo_update_bound(model)), ("GRPO", grpo_update_bound(model))):
            print(f"model {model}: the GEMMs of one {stage} update, each alone: "
                  + ", ".join(f"{k} {v:.2f} s" for k, v in bound.items()))


if __name__ == "__main__":
    main(sys.argv[1:])
