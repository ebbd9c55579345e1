"""The reward-hacking picture: reward-model score, gold reward and KL over PPO steps, per run."""

from __future__ import annotations

import json
from pathlib import Path

PANELS = (("objective/scores", "reward-model score"), ("gold/score", "gold reward"), ("objective/kl", "KL to reference (nats)"))


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def plot_reward_hacking(runs: dict[str, str | Path], out_path: str | Path) -> Path:
    """One panel per quantity, one line per run (label -> PPO output directory); saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 3.4))
    for label, run_dir in runs.items():
        records = [m for m in read_metrics(run_dir) if "objective/scores" in m]
        for ax, (key, title) in zip(axes, PANELS):
            points = [(m["step"], m[key]) for m in records if key in m]
            if points:
                ax.plot(*zip(*points), label=label)
    for ax, (_, title) in zip(axes, PANELS):
        ax.set_title(title)
        ax.set_xlabel("PPO step")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    out_path = Path(out_path)
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return out_path
