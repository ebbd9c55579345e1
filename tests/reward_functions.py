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
