"""What the dashboard knows about runs, read from the files every ``rlhf`` stage and ``rlhf demo``
already write; no database, no hooks in the trainers, so a run started before the server is
seen as well as one started after it.

A run is a folder holding ``metrics.jsonl`` (one JSON line per logged step), ``summary.json``
(written last, so it marks a finished run) or ``demo_config.yaml`` (a demo, whose stages are runs
of their own in its sub-folders). Its state follows from those files: finished once the summary
(``demo_results.json`` for a demo) is there, running while some file changed in the last
``stale_after_s`` seconds, otherwise failed (stopped, killed or crashed: nothing says which).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

METRICS_FILE, SUMMARY_FILE, SAMPLES_FILE = "metrics.jsonl", "summary.json", "samples.jsonl"
DEMO_CONFIG, DEMO_RESULTS, DEMO_TABLE = "demo_config.yaml", "demo_results.json", "demo_table.md"
DEMO_SAMPLES, DEMO_PLOT = "demo_samples.jsonl", "reward_hacking.png"
TRAINING_INFO = Path("model") / "rlhf_training.json"
# Folders inside a run that are never runs themselves (and can be large): not walked.
SKIP_DIRS = {"model", "checkpoints", "tensorboard", "value_model", "data", "__pycache__"}
MAX_DEPTH = 4  # runs_dir/<experiment>/<demo>/<stage>: deep enough for a demo inside a folder of experiments

# Charts, in page order: a metric goes to the first group whose rule matches its name. Metrics
# of time and of the optimizer go to "other" (shown folded), so the first charts are the paper's.
CHART_GROUPS: list[tuple[str, tuple[str, ...]]] = [
    ("reward", ("objective/scores", "objective/rlhf_reward", "objective/scores_normalized", "eval/score",
                "rewards/chosen", "rewards/rejected", "rewards/margin", "rm/margin")),
    ("KL", ("objective/kl", "eval/kl", "policy/approx_kl")),
    ("beta", ("objective/kl_coef",)),
    ("gold", ("gold/", "eval/gold")),
    ("length", ("response/length", "eval/length")),
    ("losses", ("loss/", "eval/loss")),
    ("accuracy", ("rm/accuracy", "rewards/accuracy", "eval/accuracy")),
]
STAGE_BY_LOSS = {"loss/sft": "sft", "loss/rm": "rm", "loss/dpo": "dpo", "loss/policy": "ppo"}


def chart_groups(keys: list[str]) -> dict[str, list[str]]:
    """Metric names grouped into the dashboard's charts (a rule ending in "/" matches a prefix,
    any other an exact name); ``step`` is the x axis and never a series."""
    groups: dict[str, list[str]] = {name: [] for name, _ in CHART_GROUPS}
    groups["other"] = []
    for key in keys:
        if key == "step":
            continue
        for name, rules in CHART_GROUPS:
            if any(key.startswith(rule) if rule.endswith("/") else key == rule for rule in rules):
                groups[name].append(key)
                break
        else:
            groups["other"].append(key)
    return {name: members for name, members in groups.items() if members}


def finite_or_none(value: Any) -> Any:
    """JSON has no NaN or infinity (a browser's JSON.parse rejects them): such a value becomes null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_metrics(path: Path, after: int = 0) -> tuple[list[dict], int]:
    """The records of ``metrics.jsonl`` from line ``after`` on, and the line count to ask from next
    time. A last line without its newline is being written: it is left for the next poll."""
    if not path.is_file():
        return [], after
    with open(path, "rb") as handle:
        data = handle.read()
    lines = data.split(b"\n")
    complete = lines[:-1]  # the piece after the last newline is empty or still being written
    records = []
    for line in complete[after:]:
        try:
            record = json.loads(line)
        except ValueError:
            record = None  # a line damaged by a kill mid-write: skipped, still counted
        if isinstance(record, dict):
            records.append({k: finite_or_none(v) for k, v in record.items()})
    return records, len(complete)


def read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def read_jsonl_tail(path: Path, limit: int) -> list[dict]:
    """The last ``limit`` complete JSON records of a JSONL file (none if it is missing)."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines()[-limit:]:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            out.append(record)
    return out


@dataclass
class RunInfo:
    """One run as the dashboard lists it; ``id`` is its path under the runs folder."""

    id: str
    path: Path
    stage: str
    state: str  # running, finished or failed
    updated: float  # newest mtime of its files (seconds since the epoch)
    steps: int | None  # the last logged step
    is_demo: bool

    def as_json(self) -> dict:
        return {"id": self.id, "stage": self.stage, "state": self.state, "updated": self.updated,
                "steps": self.steps, "is_demo": self.is_demo}


def is_run_dir(path: Path) -> bool:
    return any((path / name).is_file() for name in (METRICS_FILE, SUMMARY_FILE, DEMO_CONFIG))


def find_runs(runs_dir: Path, now: float | None = None, stale_after_s: float = 300.0) -> list[RunInfo]:
    """Every run under ``runs_dir`` (itself included), newest first."""
    runs_dir = Path(runs_dir)
    now = time.time() if now is None else now
    found = []
    for folder in _walk(runs_dir):
        if is_run_dir(folder):
            found.append(describe_run(runs_dir, folder, now, stale_after_s))
    return sorted(found, key=lambda run: (-run.updated, run.id))


def _walk(root: Path):
    stack = [(root, 0)]
    while stack:
        folder, depth = stack.pop()
        yield folder
        if depth >= MAX_DEPTH:
            continue
        try:
            children = sorted(os.scandir(folder), key=lambda e: e.name, reverse=True)
        except OSError:
            continue
        for entry in children:
            if entry.is_dir(follow_symlinks=False) and entry.name not in SKIP_DIRS and not entry.name.startswith("."):
                stack.append((Path(entry.path), depth + 1))


def describe_run(runs_dir: Path, folder: Path, now: float, stale_after_s: float = 300.0) -> RunInfo:
    is_demo = (folder / DEMO_CONFIG).is_file()
    finished_marker = folder / (DEMO_RESULTS if is_demo else SUMMARY_FILE)
    mtimes = [p.stat().st_mtime for p in (folder / name for name in
              (METRICS_FILE, SUMMARY_FILE, SAMPLES_FILE, DEMO_CONFIG, DEMO_RESULTS, "config.yaml")) if p.is_file()]
    if is_demo:  # a demo is as fresh as its newest stage
        mtimes += [(sub / name).stat().st_mtime for sub in folder.iterdir() if sub.is_dir()
                   for name in (METRICS_FILE, SUMMARY_FILE) if (sub / name).is_file()]
    updated = max(mtimes, default=folder.stat().st_mtime)
    if finished_marker.is_file():
        state = "finished"
    elif now - updated <= stale_after_s:
        state = "running"
    else:
        state = "failed"
    last_step = None
    logged, _ = read_metrics(folder / METRICS_FILE)
    if logged and isinstance(logged[-1].get("step"), int):
        last_step = logged[-1]["step"]
    rel = folder.relative_to(runs_dir).as_posix()
    return RunInfo(id="" if rel == "." else rel, path=folder, stage=run_stage(folder, is_demo), state=state,
                   updated=updated, steps=last_step, is_demo=is_demo)


def run_stage(folder: Path, is_demo: bool) -> str:
    """The stage that wrote a run: "demo", else the summary's or the saved model's note, else
    (a run still training) the loss its metrics log, else "unknown"."""
    if is_demo:
        return "demo"
    for source in (folder / SUMMARY_FILE, folder / TRAINING_INFO):
        stage = (read_json(source) or {}).get("stage")
        if isinstance(stage, str):
            return stage
    first, _ = read_metrics(folder / METRICS_FILE)
    for record in first[:5]:
        for key, stage in STAGE_BY_LOSS.items():
            if key in record:
                return stage
    return "unknown"


def resolve_run(runs_dir: Path, run_id: str) -> Path | None:
    """The folder of ``run_id`` if it is a run inside ``runs_dir``; None for anything else (a path
    that climbs out with "..", a link to elsewhere, a folder that is not a run)."""
    root = Path(runs_dir).resolve()
    folder = (root / run_id).resolve() if run_id else root
    if folder != root and root not in folder.parents:
        return None
    parts = folder.relative_to(root).parts
    if len(parts) > MAX_DEPTH or any(p in SKIP_DIRS or p.startswith(".") for p in parts):
        return None  # the same folders find_runs lists, no others
    if not folder.is_dir() or not is_run_dir(folder):
        return None
    return folder


def demo_table_rows(results: dict) -> list[dict]:
    """The demo's policy table (demo_results.json "table") as rows for the page."""
    rows = []
    for name, row in (results.get("table") or {}).items():
        rows.append({"policy": name, "gold": row.get("gold"), "gold_stderr": row.get("gold_stderr"),
                     "gain": row.get("gold_gain_over_sft"), "gain_stderr": row.get("gold_gain_stderr"),
                     "score": row.get("score"), "kl": row.get("kl"), "length": row.get("length")})
    return rows


def compare_prompts(samples_file: Path) -> tuple[list[str], dict[str, dict[str, list[dict]]]]:
    """From the demo's ``demo_samples.jsonl`` (one line per sampled response: {policy, prompt,
    response, score, gold}): the held-out prompts in file order, and per prompt, per policy, its
    responses with their reward-model and gold scores."""
    prompts: list[str] = []
    by_prompt: dict[str, dict[str, list[dict]]] = {}
    for line in samples_file.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
            continue
        prompt = record["prompt"]
        if prompt not in by_prompt:
            prompts.append(prompt)
            by_prompt[prompt] = {}
        by_prompt[prompt].setdefault(str(record.get("policy")), []).append(
            {"response": str(record.get("response", "")), "score": finite_or_none(record.get("score")),
             "gold": finite_or_none(record.get("gold"))})
    return prompts, by_prompt
