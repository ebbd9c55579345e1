"""KL-penalty coefficient controllers (the beta of r - beta * KL), with checkpointable state."""

from __future__ import annotations


class FixedKLController:
    """A constant KL coefficient."""

    def __init__(self, value: float) -> None:
        self.value = float(value)

    def update(self, current_kl: float, n_steps: int) -> None:
        pass

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])


class AdaptiveKLController:
    """Proportional controller steering the measured KL towards `target`.

    Ziegler et al. 2019 (arXiv:1909.08593) section 2.2, as in lm-human-preferences `AdaptiveKLController`:
        e_t      = clip(KL_t / KL_target - 1, -0.2, 0.2)
        beta_t+1 = beta_t * (1 + e_t * n_steps / horizon)
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: float) -> None:
        if target <= 0 or horizon <= 0:
            raise ValueError(f"AdaptiveKLController needs target > 0 and horizon > 0, got {target=}, {horizon=}")
        self.value, self.target, self.horizon = float(init_kl_coef), float(target), float(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        proportional_error = min(max(float(current_kl) / self.target - 1, -0.2), 0.2)
        mult = 1 + proportional_error * n_steps / self.horizon
        self.value *= mult

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])
