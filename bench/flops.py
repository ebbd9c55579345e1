"""Model FLOPs of one update: the work the ALGORITHM needs, counted the same for both libraries
(so a library that does extra work, or pads more, gets a lower utilisation, not more credit).

Symbols: L layers, d width, V vocabulary, N = 12 L d^2 (weights of the blocks; embeddings,
biases, layer norms and the scalar heads are left out), T tokens of a sequence.

    forward of one sequence     F(T) = 2 N T + 4 L d T^2        (matmuls; attention QK^T and AV over
                                                               the full T x T, the PaLM convention)
    forward + backward          3 F(T)
    logits, per position kept   2 d V forward, 6 d V forward + backward
                                (only positions whose log-prob is used: response tokens)
    generation, prompt P, R new tokens with a KV cache:
        F(P) + sum_{i=1}^{R-1} (2 N + 4 L d (P + i)) + 2 d V R

Stages (B rows of a batch, E PPO epochs):
    sft      B [3 F(T) + 6 d V R]                         R = response tokens (the loss)
    rm       sum over 2B rows of 3 F(T)
    dpo      sum over 2B rows of [3 F(T) + 6 d V R] + [F(T) + 2 d V R]   (policy; reference)
    ppo      B [gen(P, R) + F(T) + 2dVR (reference) + F(T) (value) + F(T) (reward)
               + E (3 F(T) + 6 d V R (policy) + 3 F(T) (value))]
             The old log-probs come from the sampling pass: TRL reuses the sampling logits,
             ours recomputes them with one more policy forward, which is not counted.
    grpo     B [gen(P, R) + F(T) (reward) + F(T) + 2dVR (reference) + 3 F(T) + 6 d V R (policy)]
Stdlib only.
"""

from __future__ import annotations


def dims(shape: dict) -> tuple[int, int, int, int]:
    L, d, V = shape["n_layer"], shape["n_embd"], shape["vocab_size"]
    return L, d, V, 12 * L * d * d


def forward(shape: dict, T: int) -> float:
    L, d, V, N = dims(shape)
    return 2 * N * T + 4 * L * d * T * T


def logits(shape: dict, positions: int, backward: bool) -> float:
    L, d, V, N = dims(shape)
    return (6 if backward else 2) * d * V * positions


def generation(shape: dict, P: int, R: int) -> float:
    L, d, V, N = dims(shape)
    decode = sum(2 * N + 4 * L * d * (P + i) for i in range(1, R))
    return forward(shape, P) + decode + logits(shape, R, backward=False)


def sft(shape: dict, B: int, T: int, R: int) -> float:
    return B * (3 * forward(shape, T) + logits(shape, R, True))


def rm(shape: dict, rows: list[tuple[int, int, int]]) -> float:
    """``rows``: (prompt, chosen, rejected) token counts of each pair."""
    return sum(3 * forward(shape, p + c) + 3 * forward(shape, p + r) for p, c, r in rows)


def dpo(shape: dict, rows: list[tuple[int, int, int]]) -> float:
    total = 0.0
    for p, c, r in rows:
        for response in (c, r):
            T = p + response
            total += 3 * forward(shape, T) + logits(shape, response, True)  # policy
            total += forward(shape, T) + logits(shape, response, False)  # reference
    return total


def ppo(shape: dict, B: int, P: int, R: int, epochs: int) -> float:
    T = P + R
    rollout = generation(shape, P, R) + 3 * forward(shape, T) + logits(shape, R, False)
    train = epochs * (3 * forward(shape, T) + logits(shape, R, True) + 3 * forward(shape, T))
    return B * (rollout + train)


def grpo(shape: dict, B: int, P: int, R: int) -> float:
    """B responses: generation, reward and reference forwards, one policy forward + backward (on-policy:
    the old log-probs are the sampling pass's, or the detached training forward's)."""
    T = P + R
    rollout = generation(shape, P, R) + 2 * forward(shape, T) + logits(shape, R, False)
    return B * (rollout + 3 * forward(shape, T) + logits(shape, R, True))


def flops_per_update(stage: str, shape: dict, job: dict, consts, hh_rows: list | None = None) -> list[float] | float:
    """FLOPs of one update (for HH: a list, one per batch in order)."""
    W = consts
    if stage == "sft":
        R = W.SYNTH_LENGTH - W.SYNTH_PROMPT
        return sft(shape, W.SYNTH_BATCH, W.SYNTH_LENGTH, R)
    if stage in ("rm", "dpo"):
        R = W.SYNTH_LENGTH - W.SYNTH_PROMPT
        rows = [(W.SYNTH_PROMPT, R, R)] * W.SYNTH_BATCH
        return rm(shape, rows) if stage == "rm" else dpo(shape, rows)
    if stage in ("rm_hh", "dpo_hh"):
        f = rm if stage == "rm_hh" else dpo
        return [f(shape, [tuple(r) for r in batch]) for batch in hh_rows]
    if stage == "ppo":
        return ppo(shape, job["batch"], W.PPO_PROMPT, job["response"], W.PPO_EPOCHS)
    if stage == "grpo":
        return grpo(shape, job["batch"], W.PPO_PROMPT, job["response"])
    raise ValueError(stage)
