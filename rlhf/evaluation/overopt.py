"""Over-optimisation curves: proxy and gold reward against d = sqrt(KL to the initial policy), for
best-of-n and for RL (PPO evaluated along training), with Gao et al.'s fitted forms, a plot and
the tables. Pure bookkeeping over numbers the study measured (``rlhf.pipeline.overopt``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import torch

from rlhf.evaluation.compare import best_of_n_kl
from rlhf.evaluation.gao_fit import best_of_n_expectation, fit_gao


def powers_of_two(limit: int) -> list[int]:
    """1, 2, 4, ... up to ``limit``."""
    return [2 ** i for i in range(int(math.log2(limit)) + 1)] if limit >= 1 else []


def bon_curve(proxy: torch.Tensor, gold: torch.Tensor, ns: Sequence[int]) -> list[dict]:
    """One point per n: the analytic KL, d = sqrt(KL), and the expected proxy and gold of the
    best of n by the proxy, averaged over prompts (unbiased from the N samples per prompt)."""
    points = []
    for n in ns:
        kl = best_of_n_kl(n)
        points.append({"n": n, "kl": kl, "d": math.sqrt(kl),
                       "proxy": best_of_n_expectation(proxy, proxy, n).mean().item(),
                       "gold": best_of_n_expectation(proxy, gold, n).mean().item()})
    return points


def pairwise_agreement(proxy: torch.Tensor, gold: torch.Tensor) -> float:
    """Share of same-prompt pairs the proxy orders as gold does, among pairs gold does not tie:
    (P, N), (P, N) -> a rate (a proxy tie counts as half right). On the policy's own samples this
    is the reward model's accuracy where it matters: on what it will be asked to rank."""
    d_proxy = proxy.unsqueeze(2) - proxy.unsqueeze(1)  # (P, N, N) proxy_i - proxy_j
    d_gold = gold.unsqueeze(2) - gold.unsqueeze(1)  # (P, N, N)
    upper = torch.triu(torch.ones(proxy.shape[1], proxy.shape[1], dtype=torch.bool), diagonal=1)  # i < j
    counted = upper & (d_gold != 0)  # (P, N, N)
    agree = (torch.sign(d_proxy) == torch.sign(d_gold)).double() + 0.5 * (d_proxy == 0).double()
    pairs = counted.sum().item()
    return (agree * counted).sum().item() / pairs if pairs else float("nan")


def rl_curve(metrics: Sequence[dict], initial: dict) -> list[dict]:
    """One point per held-out evaluation of a PPO run (``eval/kl``, ``eval/score``, ``eval/gold``
    lines of its metrics.jsonl), after the initial policy's point ``initial`` ({kl, score, gold},
    the same evaluation of the starting policy: step 0). A negative KL estimate counts as 0."""
    points = [{"step": 0, "kl": initial["kl"], "d": math.sqrt(max(initial["kl"], 0.0)),
               "proxy": initial["score"], "gold": initial["gold"]}]
    for m in metrics:
        if "eval/gold" in m and "eval/kl" in m:
            points.append({"step": m["step"], "kl": m["eval/kl"], "d": math.sqrt(max(m["eval/kl"], 0.0)),
                           "proxy": m.get("eval/score", float("nan")), "gold": m["eval/gold"]})
    return points


def fit_curve(points: Sequence[dict], form: str) -> dict | None:
    """Gao et al.'s form fitted to gold - gold(first point), where the first point is the initial
    policy (d = 0 for best-of-1, the starting policy's evaluation for RL); None with fewer than two
    points past d = 0."""
    base = points[0]["gold"]
    usable = [p for p in points[1:] if p["d"] > 0]
    if len(usable) < 2:
        return None
    return fit_gao(form, [p["d"] for p in usable], [p["gold"] - base for p in usable]).to_dict()


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def plot_overopt(bon: dict[str, list[dict]], rl: dict[str, list[dict]], fits: dict[str, dict], out_path: str | Path
                 ) -> Path:
    """2 x 2 panels: gold (top) and proxy (bottom) minus their initial values, against d, for
    best-of-n (left) and RL (right); fitted gold curves dotted. Saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rlhf.evaluation.gao_fit import gao_curve

    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), sharex="col")
    for col, (curves, method, form) in enumerate(((bon, "best-of-n", "bon"), (rl, "PPO", "rl"))):
        for label, points in curves.items():
            d = [p["d"] for p in points]
            line, = axes[0, col].plot(d, [p["gold"] - points[0]["gold"] for p in points], marker="o", ms=3, label=label)
            axes[1, col].plot(d, [p["proxy"] - points[0]["proxy"] for p in points], marker="o", ms=3,
                              color=line.get_color(), label=label)
            fit = fits.get(f"{method}: {label}")
            if fit is not None:
                grid = [max(d) * i / 60 for i in range(61)]
                axes[0, col].plot(grid, [gao_curve(form, x, fit["alpha"], fit["beta"]) for x in grid], ls=":",
                                  color=line.get_color())
        axes[0, col].set_title(f"{method}: gold reward - initial (fits dotted)")
        axes[1, col].set_title(f"{method}: proxy reward - initial")
        axes[1, col].set_xlabel("d = sqrt(KL to the initial policy), sqrt(nats)")
        for row in range(2):
            axes[row, col].axhline(0, color="grey", lw=0.6)
            axes[row, col].grid(alpha=0.3)
            axes[row, col].legend(fontsize=7)
    fig.tight_layout()
    out_path = Path(out_path)
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return out_path


def format_proxy_table(proxies: dict[str, dict], agreement: dict[str, float]) -> str:
    """Each proxy's steps, held-out accuracy on its own labels, and agreement with gold on the SFT
    policy's samples (``agreement``; the ensembles' rows have only that)."""
    lines = ["| proxy | steps | held-out accuracy (own labels) | agrees with gold on SFT samples (pairs) |",
             "|---|---|---|---|"]
    for name, value in agreement.items():
        proxy = proxies.get(name, {})
        accuracy = proxy.get("eval_accuracy")
        lines.append(f"| {name} | {proxy.get('steps', '')} | {'' if accuracy is None else f'{accuracy:.3f}'} | "
                     f"{value:.3f} |")
    return "\n".join(lines)


def format_fit_table(fits: dict[str, dict | None]) -> str:
    lines = ["| curve | form | alpha | beta | R^2 | residual std | points | peak d |", "|---|---|---|---|---|---|---|---|"]
    for name, fit in fits.items():
        if fit is None:
            lines.append(f"| {name} | | | | | | too few points | |")
            continue
        peak = "none" if fit["peak_d"] is None else f"{fit['peak_d']:.2f}"
        form = "d(a - b d)" if fit["form"] == "bon" else "d(a - b log d)"
        lines.append(f"| {name} | {form} | {fit['alpha']:.4f} | {fit['beta']:.4f} | {fit['r2']:.3f} | "
                     f"{fit['residual_std']:.4f} | {fit['points']} | {peak} |")
    return "\n".join(lines)


def format_bon_table(bon: dict[str, list[dict]]) -> str:
    names = list(bon)
    ns = [p["n"] for p in next(iter(bon.values()))]
    lines = ["| n | KL (nats) | d | " + " | ".join(f"{name}: gold / proxy" for name in names) + " |",
             "|---|---|---|" + "---|" * len(names)]
    for i, n in enumerate(ns):
        cells = [f"{bon[name][i]['gold']:.3f} / {bon[name][i]['proxy']:.3f}" for name in names]
        p = bon[names[0]][i]
        lines.append(f"| {n} | {p['kl']:.3f} | {p['d']:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_summary(points: Sequence[dict]) -> dict:
    """Initial, peak and final gold of an RL curve, with d at each."""
    peak = max(points, key=lambda p: p["gold"])
    return {"gold_initial": points[0]["gold"], "gold_peak": peak["gold"], "d_at_peak": peak["d"],
            "step_at_peak": peak.get("step"), "gold_final": points[-1]["gold"], "proxy_final": points[-1]["proxy"],
            "d_final": points[-1]["d"], "kl_final": points[-1]["kl"], "steps": points[-1].get("step")}


def format_rl_table(rl: dict[str, list[dict]], descriptions: dict[str, str]) -> str:
    lines = ["| run | reward | gold: start | gold: peak (at d, step) | gold: end | proxy: end | KL at end (nats) |",
             "|---|---|---|---|---|---|---|"]
    for name, points in rl.items():
        s = run_summary(points)
        lines.append(f"| {name} | {descriptions.get(name, '')} | {s['gold_initial']:.3f} | {s['gold_peak']:.3f} "
                     f"({s['d_at_peak']:.2f}, {s['step_at_peak']}) | {s['gold_final']:.3f} | {s['proxy_final']:.3f} | "
                     f"{s['kl_final']:.2f} |")
    return "\n".join(lines)
