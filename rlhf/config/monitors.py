"""Options of the reward-hacking monitors an online run watches (rlhf/trainers/monitors.py),
shared by every online method: a stage's config inherits ``MonitorOptions``."""

from __future__ import annotations

from dataclasses import dataclass, field

from rlhf.config.base import ConfigError, parse_name_values

# Kept here (config must not import trainers); rlhf/trainers/monitors.py has their definitions.
MONITOR_NAMES = ("length_drift", "end_falling", "entropy_collapse", "kl_acceleration", "proxy_gold_gap", "negative_kl")


@dataclass
class MonitorOptions:
    """When a monitor warns, and which stop the run."""

    monitor_stop_on: str = field(
        default="",
        metadata={"help": "Comma-separated monitors that stop the run (the policy saved, the summary written, "
                  "stopped_by_monitor saying why) instead of only warning; 'all' for every one. Monitors: "
                  + ", ".join(MONITOR_NAMES) + " (docs/ppo.md#monitors)."},
    )
    monitor_thresholds: str = field(
        default="",
        metadata={"help": "Monitor thresholds to change, name=value pairs (defaults: length_drift=0.5, "
                  "end_falling=0.1, entropy_collapse=0.5, kl_acceleration=2, proxy_gold_gap=0.05, negative_kl=0.01)."},
    )
    monitor_baseline_steps: int = field(
        default=5,
        metadata={"help": "Logged steps at the start whose mean is the monitors' baseline (length, end share, entropy)."},
    )
    monitor_window: int = field(
        default=5,
        metadata={"help": "Logged steps averaged for a monitor's recent value (the KL slope compares three such windows)."},
    )

    def validate(self) -> None:
        super().validate()
        self.monitor_stop_list()
        thresholds = self.monitor_threshold_values()
        for name, value in thresholds.items():
            if value < 0:
                raise ConfigError(f"monitor_thresholds: {name} must be >= 0, got {value:g}")
        if self.monitor_baseline_steps < 1 or self.monitor_window < 1:
            raise ConfigError("monitor_baseline_steps and monitor_window must be at least 1")

    def monitor_stop_list(self) -> list[str]:
        names = [n.strip() for n in self.monitor_stop_on.split(",") if n.strip()]
        if names == ["all"]:
            return list(MONITOR_NAMES)
        unknown = [n for n in names if n not in MONITOR_NAMES]
        if unknown:
            raise ConfigError(f"monitor_stop_on: unknown monitor {unknown[0]!r}; monitors: {', '.join(MONITOR_NAMES)}")
        return names

    def monitor_threshold_values(self) -> dict[str, float]:
        values = parse_name_values(self.monitor_thresholds, "monitor_thresholds")
        unknown = [n for n in values if n not in MONITOR_NAMES]
        if unknown:
            raise ConfigError(f"monitor_thresholds: unknown monitor {unknown[0]!r}; monitors: {', '.join(MONITOR_NAMES)}")
        return values
