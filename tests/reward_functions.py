"""Programmatic rewards for the PPO tests (imported by module:name like a user's own function)."""

TARGET = "e"


def target_char_rate(prompts, responses, ended):
    """Fraction of the response's characters that are the target character: a reward a random
    tiny model earns sometimes (so PPO has a signal) and can raise a lot."""
    return [response.count(TARGET) / max(1, len(response)) for response in responses]


def nan_reward(prompts, responses, ended):
    """A broken reward, to check that a non-finite loss stops the run with a clear message."""
    return [float("nan")] * len(responses)


def huge_reward(prompts, responses, ended):
    """Finite but near float32's limit: accepted as a reward, it overflows PPO's value loss to
    inf/NaN, to check that a non-finite loss stops the run with a clear message."""
    return [3e38] * len(responses)


def ended_then_target_char(prompts, responses, ended):
    """1 for a response that reached end-of-text, plus its target-character rate: best-of-n keeps
    an ended response when one of its samples ended (tests of rejection-sampling demonstrations)."""
    return [float(e) + rate for e, rate in zip(ended, target_char_rate(prompts, responses, ended))]


def length_reward(prompts, responses, ended):
    """Characters in the response: a second reward for GRPO's weighted sum of rewards."""
    return [float(len(response)) for response in responses]


def prompt_digits_reward(prompts, responses, ended):
    """The sum of the prompt's digits / 10 plus target_char_rate: differs between prompts even when greedy
    sampling gives every prompt the same response (GRPO's two-process test samples greedily)."""
    return [sum(int(c) for c in str(p) if c.isdigit()) / 10 + r
            for p, r in zip(prompts, target_char_rate(prompts, responses, ended))]
