"""Signs of reward hacking, watched while an online run trains.

The reward model is a proxy: optimised hard enough, the policy finds what it scores highly and
people (or the gold rubric) do not (Gao et al. 2023). That shows in the run's own metrics before
anyone reads a sample: responses grow or stop ending, the policy's entropy collapses, the KL to
the reference speeds up, gold falls while the proxy still rises, and a k1 KL estimate below zero
says the samples are ones the reference likes better than the policy does (a sampling or
log-prob mismatch, not a small KL).

Each detector is a pure function of a metric's trajectory (the logged values, oldest first) that
returns its statistic, or None while there is too little history; ``MonitorWatcher`` keeps the
trajectories, compares each statistic with its threshold, warns once when a monitor starts
firing (the step and the number; later steps are in the metrics), and asks the run to stop only for monitors named in
``stop_on``. The online run (``OnlineRun.log``) feeds it, so PPO and the critic-free methods share it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Sequence

# name -> default threshold; the statistic fires when it is above the threshold (below, for negative_kl).
THRESHOLDS: dict[str, float] = {
    "length_drift": 0.5,       # |recent mean length / baseline mean length - 1|
    "end_falling": 0.1,        # baseline share of responses ending with EOS - recent share
    "entropy_collapse": 0.5,   # 1 - recent entropy / baseline entropy
    "kl_acceleration": 2.0,    # recent KL slope / max(earlier slope, KL_SLOPE_FLOOR)
    "proxy_gold_gap": 0.05,    # gold's fall from its peak while the proxy kept rising (gold units)
    "negative_kl": 0.01,       # fires when the recent mean k1 KL is below -threshold (nats)
}
# The metrics each monitor reads (one metric namespace: online.py and ppo.py log them).
INPUTS: dict[str, tuple[str, ...]] = {
    "length_drift": ("response/length",),
    "end_falling": ("response/ended_frac",),
    "entropy_collapse": ("policy/entropy",),
    "kl_acceleration": ("objective/kl",),
    "proxy_gold_gap": ("objective/scores", "gold/score"),
    "negative_kl": ("objective/kl_k1",),
}
MONITORS = tuple(THRESHOLDS)
KL_SLOPE_FLOOR = 0.05  # nats per step: an earlier slope below this counts as this (a flat start is not "2x faster")


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _baseline_and_recent(values: Sequence[float], baseline_steps: int, window: int):
    """(mean of the first ``baseline_steps`` values, mean of the last ``window``), or None until the
    two windows no longer overlap."""
    if len(values) < baseline_steps + window:
        return None
    return _mean(values[:baseline_steps]), _mean(values[-window:])


def length_drift(lengths: Sequence[float], baseline_steps: int = 5, window: int = 5) -> float | None:
    """Relative change of the mean response length from the first steps: hacked rewards often
    like longer (or, against a length penalty, shorter) answers (Singhal et al. 2023)."""
    pair = _baseline_and_recent(lengths, baseline_steps, window)
    if pair is None or pair[0] <= 0:
        return None
    return abs(pair[1] / pair[0] - 1.0)


def end_falling(ended_fracs: Sequence[float], baseline_steps: int = 5, window: int = 5) -> float | None:
    """How far the share of responses that end with end-of-text fell from the first steps: a
    policy that stops ending is running to the token limit, often to pad what the reward likes."""
    pair = _baseline_and_recent(ended_fracs, baseline_steps, window)
    return None if pair is None else pair[0] - pair[1]


def entropy_collapse(entropies: Sequence[float], baseline_steps: int = 5, window: int = 5) -> float | None:
    """Relative fall of the policy's token entropy from the first steps: a collapsed policy says
    one thing whatever it is asked (mode collapse on what the proxy scores highest)."""
    pair = _baseline_and_recent(entropies, baseline_steps, window)
    if pair is None or pair[0] <= 0:
        return None
    return 1.0 - pair[1] / pair[0]


def kl_acceleration(kls: Sequence[float], window: int = 5, slope_floor: float = KL_SLOPE_FLOOR) -> float | None:
    """Ratio of the KL's recent slope to its earlier one, over the means of the last three windows
    m1, m2, m3 (oldest first): (m3 - m2) / max(m2 - m1, slope_floor * window). Near 1 the KL grows
    steadily (as a KL-penalised run does); well above 1 it is speeding up, as it does once the
    policy has found an exploit the penalty no longer outweighs. None before 3 windows."""
    if len(kls) < 3 * window:
        return None
    m1, m2, m3 = (_mean(kls[len(kls) - (3 - i) * window: len(kls) - (2 - i) * window]) for i in range(3))
    return (m3 - m2) / max(m2 - m1, slope_floor * window)


def proxy_gold_gap(proxy: Sequence[float], gold: Sequence[float], window: int = 5) -> float | None:
    """How far gold fell from its peak while the proxy kept rising (Gao et al.'s over-optimisation):
    on running means over ``window`` steps, gold at its best window minus gold now, if the proxy now
    is above the proxy at gold's best window; 0 if the proxy fell too (the run got worse, not hacked)."""
    n = min(len(proxy), len(gold))
    if n < 2 * window:
        return None
    gold_runs = [_mean(gold[i:i + window]) for i in range(n - window + 1)]
    proxy_runs = [_mean(proxy[i:i + window]) for i in range(n - window + 1)]
    peak = max(range(len(gold_runs)), key=gold_runs.__getitem__)
    if proxy_runs[-1] <= proxy_runs[peak]:
        return 0.0
    return gold_runs[peak] - gold_runs[-1]


def negative_kl(k1: Sequence[float], window: int = 5) -> float | None:
    """Mean of the last ``window`` k1 KL estimates (mean of log pi - log pi_ref over sampled
    tokens). KL is never negative, and the k1 estimate is unbiased for it: a mean clearly below 0
    means the samples do not come from the policy whose log-probs were taken (a temperature, top-k
    or padding mismatch), and the KL penalty then pays the policy to move."""
    if len(k1) < window:
        return None
    return _mean(k1[-window:])


def statistic(name: str, history: dict[str, list[float]], baseline_steps: int, window: int) -> float | None:
    """The named monitor's statistic on the trajectories in ``history`` (None: too few or absent)."""
    series = [history.get(metric, []) for metric in INPUTS[name]]
    if name == "proxy_gold_gap":
        return proxy_gold_gap(series[0], series[1], window)
    if name == "kl_acceleration":
        return kl_acceleration(series[0], window)
    if name == "negative_kl":
        return negative_kl(series[0], window)
    return {"length_drift": length_drift, "end_falling": end_falling,
            "entropy_collapse": entropy_collapse}[name](series[0], baseline_steps, window)


def fires(name: str, value: float, threshold: float) -> bool:
    return value < -threshold if name == "negative_kl" else value > threshold


DESCRIPTIONS = {
    "length_drift": "mean response length moved by {value:.0%} from the first steps",
    "end_falling": "the share of responses ending with end-of-text fell by {value:.2f} from the first steps",
    "entropy_collapse": "policy entropy fell by {value:.0%} from the first steps",
    "kl_acceleration": "the KL to the reference grows {value:.1f}x faster than before",
    "proxy_gold_gap": "gold fell {value:.3f} from its peak while the reward kept rising",
    "negative_kl": "the k1 KL estimate is negative ({value:.3f} nats): samples and log-probs disagree",
}


@dataclass
class MonitorEvent:
    """What the summary keeps of one monitor: where it first fired, how often, its extreme value."""

    first_step: int
    first_value: float
    steps_fired: int = 1
    worst_value: float = 0.0
    last_step: int = 0


class MonitorWatcher:
    """Keeps the logged trajectories and checks every monitor each time metrics are logged."""

    def __init__(self, thresholds: dict[str, float] | None = None, stop_on: Sequence[str] = (), baseline_steps: int = 5,
                 window: int = 5, warn: bool = True):
        self.thresholds = {**THRESHOLDS, **(thresholds or {})}
        unknown = (set(self.thresholds) | set(stop_on)) - set(MONITORS)
        if unknown:
            raise ValueError(f"unknown monitors {sorted(unknown)}; monitors: {', '.join(MONITORS)}")
        self.stop_on, self.baseline_steps, self.window, self.warn = tuple(stop_on), baseline_steps, window, warn
        self.history: dict[str, list[float]] = {}
        self.events: dict[str, MonitorEvent] = {}
        self.stop_reason: str | None = None

    def observe(self, step: int, metrics: dict[str, float]) -> dict[str, float]:
        """Record this step's metrics; returns ``monitor/<name>`` statistics to log beside them.
        Warns the first time a monitor fires; sets ``stop_reason`` when one in ``stop_on`` fires."""
        for metric in {m for inputs in INPUTS.values() for m in inputs}:
            if metric in metrics:
                self.history.setdefault(metric, []).append(float(metrics[metric]))
        out = {}
        for name in MONITORS:
            value = statistic(name, self.history, self.baseline_steps, self.window)
            if value is None:
                continue
            out[f"monitor/{name}"] = value
            if fires(name, value, self.thresholds[name]):
                self._record(name, step, value)
        return out

    def _record(self, name: str, step: int, value: float) -> None:
        event = self.events.get(name)
        if event is None:
            self.events[name] = event = MonitorEvent(step, value, 0, value, step)
        event.steps_fired += 1
        event.last_step = step
        event.worst_value = min(event.worst_value, value) if name == "negative_kl" else max(event.worst_value, value)
        if event.steps_fired == 1 and self.warn:  # once per monitor: the later steps are in the metrics
            warnings.warn(f"monitor {name} at step {step}: {DESCRIPTIONS[name].format(value=value)} (threshold "
                          f"{self.thresholds[name]:g})" + ("; stopping the run as monitor_stop_on asks"
                                                            if name in self.stop_on else ""), stacklevel=3)
        if name in self.stop_on and self.stop_reason is None:
            self.stop_reason = f"{name} at step {step}: {DESCRIPTIONS[name].format(value=value)}"

    def summary(self) -> dict:
        """For summary.json: each monitor that fired, and why the run stopped early (if it did)."""
        fired = {name: {"first_step": e.first_step, "first_value": e.first_value, "steps_fired": e.steps_fired,
                        "worst_value": e.worst_value, "last_step": e.last_step} for name, e in self.events.items()}
        return {"monitors": fired, "stopped_by_monitor": self.stop_reason}

    def state_dict(self) -> dict:
        return {"history": {k: list(v) for k, v in self.history.items()},
                "events": {k: vars(e).copy() for k, e in self.events.items()}, "stop_reason": self.stop_reason}

    def load_state_dict(self, state: dict) -> None:
        self.history = {k: list(v) for k, v in state["history"].items()}
        self.events = {k: MonitorEvent(**v) for k, v in state["events"].items()}
        self.stop_reason = state["stop_reason"]
